// Package backbonefile is SMILE's own backbone format: a safetensors file
// whose metadata says which family the backbone belongs to and how it is
// shaped, and whose tensors are the family's weights plus the raw bytes of
// the tokenizer's vocabulary file, so one content-addressed file is all a
// node needs to serve a backbone.
//
// Metadata keys:
//
//	smile.format  "1"
//	smile.family  the family name ("bert", "use-lite")
//	smile.info    model.Info as JSON (its Family equals smile.family)
//	smile.config  the family's own configuration, JSON
//	smile.source  provenance: where the weights came from
//
// The tensor "tokenizer.vocab" (U8, one dimension) holds the vocabulary file.
// Every other tensor belongs to the family, which checks names and shapes.
package backbonefile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"

	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/safetensors"
)

// Metadata keys and the reserved vocabulary tensor.
const (
	KeyFormat   = "smile.format"
	KeyFamily   = "smile.family"
	KeyInfo     = "smile.info"
	KeyConfig   = "smile.config"
	KeySource   = "smile.source"
	VocabTensor = "tokenizer.vocab"

	// FormatVersion is the only format this package reads and writes.
	FormatVersion = "1"
)

// File is an opened backbone file.
type File struct {
	Family string
	Info   model.Info
	Config json.RawMessage
	Source string

	st *safetensors.File
}

// Name is the path or label the file was opened or parsed with.
func (f *File) Name() string { return f.st.Name() }

// Vocab returns the raw vocabulary file bytes (aliasing the file: read-only,
// valid until Close).
func (f *File) Vocab() []byte {
	t, err := f.st.Tensor(VocabTensor)
	if err != nil { // checked at parse time; only after Close
		return nil
	}
	return t.Data
}

// Float32 returns weight tensor name as a fresh float32 slice, checking its
// shape when one is given (see safetensors.File.Float32).
func (f *File) Float32(name string, shape ...int) ([]float32, error) {
	return f.st.Float32(name, shape...)
}

// CheckFloat32 reports, without decoding or allocating, what Float32(name,
// shape...) would fail with: a missing tensor, a shape other than shape (when
// one is given), or a dtype that is not a float type. A family checks every tensor this way
// before allocating for the geometry its config declares, so the file's own
// size bounds what a Load can allocate.
func (f *File) CheckFloat32(name string, shape ...int) error {
	if name == VocabTensor {
		return fmt.Errorf("%w: backbonefile %s: tensor %q is the vocabulary, not a weight", model.ErrBadModelFile, f.Name(), name)
	}
	t, err := f.st.Tensor(name)
	if err != nil {
		return err
	}
	if len(shape) > 0 && !slices.Equal(t.Shape, shape) {
		return fmt.Errorf("%w: backbonefile %s: tensor %q: shape %v, want %v", model.ErrBadModelFile, f.Name(), name, t.Shape, shape)
	}
	switch t.DType {
	case safetensors.F32, safetensors.F16, safetensors.BF16, safetensors.F64:
		return nil
	}
	return fmt.Errorf("%w: backbonefile %s: tensor %q: dtype %s is not a float type", model.ErrBadModelFile, f.Name(), name, t.DType)
}

// Has reports whether the file holds weight tensor name.
func (f *File) Has(name string) bool { return name != VocabTensor && f.st.Has(name) }

// Names lists the weight tensors (the vocabulary excluded), sorted.
func (f *File) Names() []string {
	return slices.DeleteFunc(f.st.Names(), func(n string) bool { return n == VocabTensor })
}

// Close releases the file's mapping; see safetensors.File.Close.
func (f *File) Close() error { return f.st.Close() }

// Write writes a backbone file. config is marshalled to JSON; tensors must
// not use the reserved vocabulary name. Bad arguments wrap model.ErrBadInput.
func Write(w io.Writer, family string, info model.Info, config any, source string, vocab []byte, tensors []safetensors.Tensor) error {
	if family == "" {
		return fmt.Errorf("%w: backbonefile: write: empty family", model.ErrBadInput)
	}
	if info.Family != family {
		return fmt.Errorf("%w: backbonefile: write: info.family %q differs from family %q", model.ErrBadInput, info.Family, family)
	}
	if err := checkInfo(info); err != nil {
		return fmt.Errorf("%w: backbonefile: write: %v", model.ErrBadInput, err)
	}
	if len(vocab) == 0 {
		return fmt.Errorf("%w: backbonefile: write: empty vocabulary", model.ErrBadInput)
	}
	infoJSON, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("%w: backbonefile: write: info: %v", model.ErrBadInput, err)
	}
	cfgJSON, err := json.Marshal(config)
	if err != nil {
		return fmt.Errorf("%w: backbonefile: write: config: %v", model.ErrBadInput, err)
	}
	all := make([]safetensors.Tensor, 0, len(tensors)+1)
	for _, t := range tensors {
		if t.Name == VocabTensor {
			return fmt.Errorf("%w: backbonefile: write: tensor name %q is reserved", model.ErrBadInput, VocabTensor)
		}
		all = append(all, t)
	}
	all = append(all, safetensors.FromBytes(VocabTensor, vocab))
	meta := map[string]string{
		KeyFormat: FormatVersion,
		KeyFamily: family,
		KeyInfo:   string(infoJSON),
		KeyConfig: string(cfgJSON),
		KeySource: source,
	}
	return safetensors.Write(w, all, meta)
}

// Open maps and parses the backbone file at path.
func Open(path string) (*File, error) {
	st, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	f, err := fromSafetensors(st)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	return f, nil
}

// Parse parses a backbone file held in memory; name only labels errors.
func Parse(name string, data []byte) (*File, error) {
	st, err := safetensors.Parse(name, data)
	if err != nil {
		return nil, err
	}
	return fromSafetensors(st)
}

func fromSafetensors(st *safetensors.File) (*File, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: backbonefile %s: %s", model.ErrBadModelFile, st.Name(), fmt.Sprintf(format, args...))
	}
	meta := st.Metadata()
	get := func(key string) (string, error) {
		v, ok := meta[key]
		if !ok {
			return "", bad("metadata %s: missing", key)
		}
		return v, nil
	}
	format, err := get(KeyFormat)
	if err != nil {
		return nil, err
	}
	if format != FormatVersion {
		return nil, bad("metadata %s: %q, want %q", KeyFormat, format, FormatVersion)
	}
	f := &File{st: st}
	if f.Family, err = get(KeyFamily); err != nil {
		return nil, err
	}
	if f.Family == "" {
		return nil, bad("metadata %s: empty", KeyFamily)
	}
	infoJSON, err := get(KeyInfo)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(infoJSON)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f.Info); err != nil {
		return nil, bad("metadata %s: %v", KeyInfo, err)
	}
	if dec.More() {
		return nil, bad("metadata %s: trailing data", KeyInfo)
	}
	if f.Info.Family != f.Family {
		return nil, bad("metadata %s: family %q differs from %s %q", KeyInfo, f.Info.Family, KeyFamily, f.Family)
	}
	if err := checkInfo(f.Info); err != nil {
		return nil, bad("metadata %s: %v", KeyInfo, err)
	}
	cfg, err := get(KeyConfig)
	if err != nil {
		return nil, err
	}
	if !json.Valid([]byte(cfg)) {
		return nil, bad("metadata %s: invalid JSON", KeyConfig)
	}
	f.Config = json.RawMessage(cfg)
	if f.Source, err = get(KeySource); err != nil {
		return nil, err
	}
	v, err := st.Tensor(VocabTensor)
	if err != nil {
		return nil, err
	}
	if v.DType != safetensors.U8 || len(v.Shape) != 1 {
		return nil, bad("tensor %q: %s %v, want U8 of one dimension", VocabTensor, v.DType, v.Shape)
	}
	if len(v.Data) == 0 {
		return nil, bad("tensor %q: empty", VocabTensor)
	}
	return f, nil
}

// checkInfo rejects geometry no family can have; families check the rest.
func checkInfo(i model.Info) error {
	for _, fld := range []struct {
		name string
		v    int
	}{
		{"layers", i.Layers}, {"hidden", i.Hidden}, {"heads", i.Heads},
		{"max_positions", i.MaxPositions}, {"vocab_size", i.VocabSize}, {"output_dim", i.OutputDim},
	} {
		if fld.v <= 0 {
			return fmt.Errorf("%s: %d, want > 0", fld.name, fld.v)
		}
	}
	if i.Intermediate < 0 {
		return fmt.Errorf("intermediate: %d, want >= 0", i.Intermediate)
	}
	return nil
}
