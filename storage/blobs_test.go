package storage

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestBlobsPutVerify(t *testing.T) {
	b, err := OpenBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d, err := b.Put(strings.NewReader("hello"), "")
	if err != nil {
		t.Fatal(err)
	}
	const want = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	if d != want {
		t.Fatalf("digest %s, want %s", d, want)
	}
	if !b.Has(d) {
		t.Fatal("blob not found after Put")
	}
	if err := b.Verify(d); err != nil {
		t.Fatal(err)
	}
	// Same content again: same digest, still one file.
	if d2, err := b.Put(strings.NewReader("hello"), d); err != nil || d2 != d {
		t.Fatalf("second put: %s %v", d2, err)
	}
	if _, err := b.Put(strings.NewReader("other"), d); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	if err := os.WriteFile(b.Path(d), []byte("hellO"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.Verify(d); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt blob: %v", err)
	}
	missing := Digest("sha256:" + strings.Repeat("0", 64))
	if err := b.Verify(missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing blob: %v", err)
	}
	tmps, _ := os.ReadDir(b.dir)
	for _, e := range tmps {
		if strings.HasPrefix(e.Name(), ".put-") {
			t.Fatalf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestParseDigest(t *testing.T) {
	for _, s := range []string{"", "sha256:", "md5:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("g", 64),
		"sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("a", 63)} {
		if _, err := ParseDigest(s); !errors.Is(err, ErrBadDigest) {
			t.Errorf("ParseDigest(%q) = %v, want ErrBadDigest", s, err)
		}
	}
	if _, err := ParseDigest("sha256:" + strings.Repeat("a", 64)); err != nil {
		t.Fatal(err)
	}
}

func TestRefs(t *testing.T) {
	r, err := OpenRefs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := Digest("sha256:" + strings.Repeat("ab", 32))
	if _, err := r.Get("use-lite"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get before set: %v", err)
	}
	if err := r.Set("use-lite", d); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Get("use-lite"); err != nil || got != d {
		t.Fatalf("get: %s %v", got, err)
	}
	for _, bad := range []string{"", "../x", "Upper", "a/b", strings.Repeat("a", 65)} {
		if err := r.Set(bad, d); !errors.Is(err, ErrBadDigest) {
			t.Errorf("Set(%q) = %v", bad, err)
		}
	}
	if err := os.WriteFile(r.dir+"/broken", []byte("nonsense"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("broken"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("broken ref: %v", err)
	}
	names, err := r.List()
	if err != nil || len(names) != 2 {
		t.Fatalf("list: %v %v", names, err)
	}
}
