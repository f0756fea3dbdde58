package datasets

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/smile-vplm/smile/internal/testenv"
)

// TestDataPullSentiment pulls the real sentiment package with npm into the
// shared test data directory (once; later runs convert the kept tarball) and
// checks the three datasets it holds. It fails, never skips, when npm
// cannot reach its registry and nothing is cached.
func TestDataPullSentiment(t *testing.T) {
	dir := testenv.DataDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, name := range []string{"imdb", "yelp", "amazon"} {
		m, err := Pull(ctx, dir, name, "", nil)
		if err != nil {
			t.Fatalf("pull %s (npm must reach its registry, or SMILE_TEST_DATA_DIR must hold the package): %v", name, err)
		}
		want := map[string]int{Train: 400, Validation: 50, Test: 50}
		for split, n := range want {
			c := m.Splits[split]
			if c.Total != 2*n || c.Labels["0"] != n || c.Labels["1"] != n {
				t.Errorf("%s %s: %+v, want %d per label", name, split, c, n)
			}
		}
		if m.SHA256 != sentimentHash || m.Seed != SplitSeed || len(m.Labels) != 2 {
			t.Errorf("%s meta: %+v", name, m)
		}
		ex, err := ReadSplit(dir, name, Test)
		if err != nil || len(ex) != 100 {
			t.Fatalf("%s test split: %d examples, %v", name, len(ex), err)
		}
	}
	// Pulling again from the kept tarball writes byte-identical files.
	before, err := os.ReadFile(SplitPath(dir, "imdb", Train))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Pull(ctx, dir, "imdb", "", nil); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(SplitPath(dir, "imdb", Train))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("a second pull of imdb wrote a different train.jsonl")
	}
	ms, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range ms {
		found = found || m.Name == "imdb"
	}
	if !found {
		t.Fatalf("List does not include imdb: %v", ms)
	}
}

func TestDataPullRejects(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "fake.tgz")
	if err := os.WriteFile(bad, []byte("not the package"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Pull(context.Background(), dir, "imdb", bad, nil); !errors.Is(err, ErrChecksum) {
		t.Fatalf("wrong package: %v", err)
	}
	if _, err := Pull(context.Background(), dir, "mnist", "", nil); !errors.Is(err, ErrUnknownDataset) {
		t.Fatalf("unknown name: %v", err)
	}
	if _, err := ReadMeta(dir, "imdb"); !errors.Is(err, ErrNotPulled) {
		t.Fatalf("ReadMeta of a dataset never pulled: %v", err)
	}
	if ms, err := List(dir); err != nil || len(ms) != 0 {
		t.Fatalf("List of an empty data dir: %v %v", ms, err)
	}
}
