package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Digest names a blob by the sha256 of its content: "sha256:<64 hex>".
type Digest string

// ParseDigest checks a digest's form.
func ParseDigest(s string) (Digest, error) {
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hexPart) != 64 {
		return "", fmt.Errorf("%w: %q is not sha256:<64 hex digits>", ErrBadDigest, s)
	}
	if _, err := hex.DecodeString(hexPart); err != nil || strings.ToLower(hexPart) != hexPart {
		return "", fmt.Errorf("%w: %q is not sha256:<64 lowercase hex digits>", ErrBadDigest, s)
	}
	return Digest(s), nil
}

// Hex is the digest without its algorithm prefix.
func (d Digest) Hex() string { return strings.TrimPrefix(string(d), "sha256:") }

// Short is the first 12 hex digits, for display.
func (d Digest) Short() string { return d.Hex()[:min(12, len(d.Hex()))] }

// Blobs is a content-addressed store of immutable blobs in a directory:
// <dir>/sha256/<hex>. Writes go to a temporary file that is synced and
// renamed into place, so a crash never leaves a partial blob under its name.
type Blobs struct {
	dir string
}

// OpenBlobs opens (creating if needed) the blob store rooted at dir.
func OpenBlobs(dir string) (*Blobs, error) {
	if err := os.MkdirAll(filepath.Join(dir, "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return &Blobs{dir: dir}, nil
}

// Path is where the blob with digest d lives (it may not exist).
func (b *Blobs) Path(d Digest) string { return filepath.Join(b.dir, "sha256", d.Hex()) }

// Has reports whether the blob is stored.
func (b *Blobs) Has(d Digest) bool {
	_, err := os.Stat(b.Path(d))
	return err == nil
}

// Put stores r's bytes and returns their digest. If want is not empty the
// content must hash to it (ErrDigestMismatch otherwise, and nothing is kept).
func (b *Blobs) Put(r io.Reader, want Digest) (Digest, error) {
	tmp, err := os.CreateTemp(b.dir, ".put-*")
	if err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), r); err != nil {
		tmp.Close()
		return "", fmt.Errorf("storage: writing blob: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", fmt.Errorf("storage: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("storage: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	d := Digest("sha256:" + hex.EncodeToString(h.Sum(nil)))
	if want != "" && d != want {
		return "", fmt.Errorf("%w: content hashes to %s, want %s", ErrDigestMismatch, d, want)
	}
	if err := os.Rename(tmp.Name(), b.Path(d)); err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	return d, syncDir(filepath.Join(b.dir, "sha256"))
}

// Verify rehashes a stored blob (ErrNotFound, ErrCorrupt).
func (b *Blobs) Verify(d Digest) error {
	f, err := os.Open(b.Path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: blob %s", ErrNotFound, d)
	}
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("storage: reading blob %s: %w", d, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex() {
		return fmt.Errorf("%w: %s hashes to sha256:%s", ErrCorrupt, d, got)
	}
	return nil
}

var refName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Refs maps names (like "use-lite") to blob digests, one small file per
// name under <dir>, replaced atomically.
type Refs struct {
	dir string
}

// OpenRefs opens (creating if needed) the reference directory.
func OpenRefs(dir string) (*Refs, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return &Refs{dir: dir}, nil
}

// CheckName validates a reference name.
func CheckName(name string) error {
	if !refName.MatchString(name) {
		return fmt.Errorf("%w: name %q must match %s", ErrBadDigest, name, refName)
	}
	return nil
}

// Get returns the digest a name points to (ErrNotFound).
func (r *Refs) Get(name string) (Digest, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(r.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	d, err := ParseDigest(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("%w: reference %q: %w", ErrCorrupt, name, err)
	}
	return d, nil
}

// Set points name at d.
func (r *Refs) Set(name string, d Digest) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if _, err := ParseDigest(string(d)); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(r.dir, ".ref-*")
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(string(d) + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("storage: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("storage: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(r.dir, name)); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return syncDir(r.dir)
}

// List returns all reference names.
func (r *Refs) List() ([]string, error) {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && refName.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("storage: sync %s: %w", dir, err)
	}
	return nil
}
