package backbonefile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/safetensors"
)

var testInfo = model.Info{Family: "bert", Name: "t", Layers: 1, Hidden: 2, Heads: 1, Intermediate: 4, MaxPositions: 8, VocabSize: 3, OutputDim: 2}

func sample(t testing.TB) []byte {
	var buf bytes.Buffer
	err := Write(&buf, "bert", testInfo, map[string]int{"hidden_size": 2}, "unit test", []byte("[PAD]\n[UNK]\nhi\n"),
		[]safetensors.Tensor{safetensors.FromFloat32("w", []int{2, 2}, []float32{1, 2, 3, 4})})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	data := sample(t)
	path := filepath.Join(t.TempDir(), "b.smile")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, open := range []func() (*File, error){
		func() (*File, error) { return Parse("mem", data) },
		func() (*File, error) { return Open(path) },
	} {
		f, err := open()
		if err != nil {
			t.Fatal(err)
		}
		if f.Family != "bert" || f.Info != testInfo || string(f.Config) != `{"hidden_size":2}` || f.Source != "unit test" {
			t.Errorf("got %+v", f)
		}
		if string(f.Vocab()) != "[PAD]\n[UNK]\nhi\n" {
			t.Errorf("Vocab = %q", f.Vocab())
		}
		if w, err := f.Float32("w", 2, 2); err != nil || !slices.Equal(w, []float32{1, 2, 3, 4}) {
			t.Errorf("Float32 = %v, %v", w, err)
		}
		if !slices.Equal(f.Names(), []string{"w"}) || f.Has(VocabTensor) || !f.Has("w") {
			t.Errorf("Names = %v", f.Names())
		}
		if _, err := f.Float32("w", 4); !errors.Is(err, model.ErrBadModelFile) {
			t.Errorf("wrong shape: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// withMeta rewrites the sample with one metadata key changed (or removed
// when v is nil) and optionally without the vocabulary.
func withMeta(t *testing.T, key string, v *string, vocab safetensors.Tensor) []byte {
	f, err := safetensors.Parse("s", sample(t))
	if err != nil {
		t.Fatal(err)
	}
	meta := f.Metadata()
	if v == nil {
		delete(meta, key)
	} else {
		meta[key] = *v
	}
	w, _ := f.Tensor("w")
	ts := []safetensors.Tensor{w}
	if vocab.Name != "" {
		ts = append(ts, vocab)
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, ts, meta); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseBroken(t *testing.T) {
	s := func(v string) *string { return &v }
	vocab := safetensors.FromBytes(VocabTensor, []byte("a\n"))
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", sample(t)[:100], "safetensors"},
		{"no format", withMeta(t, KeyFormat, nil, vocab), KeyFormat},
		{"format 2", withMeta(t, KeyFormat, s("2"), vocab), KeyFormat},
		{"no family", withMeta(t, KeyFamily, nil, vocab), KeyFamily},
		{"empty family", withMeta(t, KeyFamily, s(""), vocab), KeyFamily},
		{"family mismatch", withMeta(t, KeyFamily, s("use-lite"), vocab), "differs"},
		{"no info", withMeta(t, KeyInfo, nil, vocab), KeyInfo},
		{"bad info JSON", withMeta(t, KeyInfo, s(`{"family":`), vocab), KeyInfo},
		{"info unknown field", withMeta(t, KeyInfo, s(`{"family":"bert","x":1}`), vocab), KeyInfo},
		{"info zero hidden", withMeta(t, KeyInfo, s(`{"family":"bert","layers":1,"hidden":0,"heads":1,"max_positions":1,"vocab_size":1,"output_dim":1}`), vocab), "hidden"},
		{"no config", withMeta(t, KeyConfig, nil, vocab), KeyConfig},
		{"bad config", withMeta(t, KeyConfig, s(`{`), vocab), KeyConfig},
		{"no source", withMeta(t, KeySource, nil, vocab), KeySource},
		{"no vocab", withMeta(t, KeySource, s("x"), safetensors.Tensor{}), VocabTensor},
		{"vocab F32", withMeta(t, KeySource, s("x"), safetensors.FromFloat32(VocabTensor, []int{1}, []float32{1})), VocabTensor},
		{"vocab empty", withMeta(t, KeySource, s("x"), safetensors.FromBytes(VocabTensor, nil)), VocabTensor},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("bad.smile", c.data)
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Fatalf("err = %v, want ErrBadModelFile", err)
			}
			if !strings.Contains(err.Error(), "bad.smile") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q should name the file and %q", err, c.want)
			}
		})
	}
}

func TestWriteRejects(t *testing.T) {
	vocab := []byte("a\n")
	other := testInfo
	other.Family = "x"
	zero := testInfo
	zero.Layers = 0
	cases := map[string]error{
		"empty family":    Write(&bytes.Buffer{}, "", testInfo, nil, "", vocab, nil),
		"family mismatch": Write(&bytes.Buffer{}, "bert", other, nil, "", vocab, nil),
		"zero layers":     Write(&bytes.Buffer{}, "bert", zero, nil, "", vocab, nil),
		"no vocab":        Write(&bytes.Buffer{}, "bert", testInfo, nil, "", nil, nil),
		"bad config":      Write(&bytes.Buffer{}, "bert", testInfo, func() {}, "", vocab, nil),
		"reserved name":   Write(&bytes.Buffer{}, "bert", testInfo, nil, "", vocab, []safetensors.Tensor{safetensors.FromBytes(VocabTensor, vocab)}),
	}
	for name, err := range cases {
		if !errors.Is(err, model.ErrBadInput) {
			t.Errorf("%s: err = %v, want ErrBadInput", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample(f))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz", data)
		if err != nil {
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Fatalf("error %v does not wrap ErrBadModelFile", err)
			}
			return
		}
		if len(file.Vocab()) == 0 || file.Info.Family != file.Family {
			t.Fatalf("accepted an inconsistent file: %+v", file)
		}
		for _, n := range file.Names() {
			_, _ = file.Float32(n)
		}
	})
}

// TestCheckFloat32 agrees with Float32 on every failure without decoding.
func TestCheckFloat32(t *testing.T) {
	var buf bytes.Buffer
	err := Write(&buf, "bert", testInfo, map[string]int{}, "unit test", []byte("[PAD]\n"), []safetensors.Tensor{
		safetensors.FromFloat32("w", []int{2, 2}, []float32{1, 2, 3, 4}),
		{Name: "half", DType: safetensors.F16, Shape: []int{3}, Data: make([]byte, 6)},
		{Name: "ints", DType: safetensors.I32, Shape: []int{2}, Data: make([]byte, 8)},
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("mem", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		shape []int
		want  string // "" for success
	}{
		{"w", []int{2, 2}, ""},
		{"half", []int{3}, ""},
		{"w", []int{4}, "shape [2 2], want [4]"},
		{"w", nil, ""}, // no shape: any shape, as in Float32
		{"ints", []int{2}, "not a float type"},
		{"missing", []int{1}, "missing"},
		{VocabTensor, []int{6}, "vocabulary"},
	}
	for _, c := range cases {
		err := f.CheckFloat32(c.name, c.shape...)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s %v: %v", c.name, c.shape, err)
			}
			if _, err := f.Float32(c.name, c.shape...); err != nil {
				t.Errorf("%s %v: CheckFloat32 passed, Float32 failed: %v", c.name, c.shape, err)
			}
			continue
		}
		if !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: %v, want ErrBadModelFile with %q", c.name, c.shape, err, c.want)
		}
	}
}
