package bert

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/backbonefile"
	"github.com/smile-vplm/smile/model/safetensors"
)

func smallConfig() Config {
	c := TinyConfig()
	c.Layers, c.Hidden, c.Heads, c.Intermediate, c.MaxPositions, c.VocabSize = 2, 8, 2, 12, 16, 40
	return c
}

func writeDir(t *testing.T, cfg Config) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small-bert")
	if err := WriteHFDir(dir, cfg, 7); err != nil {
		t.Fatal(err)
	}
	return dir
}

func convert(t *testing.T, dir string) *backbonefile.File {
	t.Helper()
	var buf bytes.Buffer
	if err := ConvertHF(dir, &buf); err != nil {
		t.Fatal(err)
	}
	f, err := backbonefile.Parse("converted", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// rewriteWeights rewrites dir's model.safetensors through edit.
func rewriteWeights(t *testing.T, dir string, edit func([]safetensors.Tensor) []safetensors.Tensor) {
	t.Helper()
	path := filepath.Join(dir, HFWeightsFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, n := range f.Names() {
		tn, _ := f.Tensor(n)
		ts = append(ts, tn)
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, edit(ts), f.Metadata()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestConvertHF(t *testing.T) {
	cfg := smallConfig()
	dir := writeDir(t, cfg)
	f := convert(t, dir)
	if f.Family != Family || f.Info != cfg.info("small-bert") {
		t.Errorf("info %+v", f.Info)
	}
	if c, err := ParseConfig(f.Config); err != nil || c != cfg {
		t.Errorf("stored config %s: %+v, %v", f.Config, c, err)
	}
	if !bytes.Equal(f.Vocab(), RandomVocab(cfg.VocabSize)) {
		t.Error("vocab differs")
	}
	if !strings.Contains(f.Source, "sha256:") || !strings.Contains(f.Source, "small-bert") {
		t.Errorf("source %q", f.Source)
	}
	// Fused QKV holds the transposed query, key and value weights side by side.
	hf := map[string][]float32{}
	for _, s := range hfSpecs(cfg) {
		hf[s.name] = s.generate(7)
	}
	H := cfg.Hidden
	qkv, err := f.Float32(layerTensor(1, "qkv.weight"), H, 3*H)
	if err != nil {
		t.Fatal(err)
	}
	for k, part := range []string{"query", "key", "value"} {
		w := hf["encoder.layer.1.attention.self."+part+".weight"]
		for o := range H {
			for i := range H {
				if qkv[i*3*H+k*H+o] != w[o*H+i] {
					t.Fatalf("%s[%d,%d] misplaced", part, o, i)
				}
			}
		}
	}
	ffn, _ := f.Float32(layerTensor(0, "ffn_in.weight"), H, cfg.Intermediate)
	w := hf["encoder.layer.0.intermediate.dense.weight"]
	if ffn[3*cfg.Intermediate+5] != w[5*H+3] {
		t.Error("ffn_in not transposed")
	}
	// Every tensor of the layout is there with its shape, and nothing else.
	if got, want := len(f.Names()), len(specs(cfg)); got != want {
		t.Errorf("%d tensors, want %d", got, want)
	}
	for _, s := range specs(cfg) {
		if _, err := f.Float32(s.name, s.shape...); err != nil {
			t.Error(err)
		}
	}

	// Same input, same bytes: the content address is stable.
	var a, b bytes.Buffer
	if err := ConvertHF(dir, &a); err != nil {
		t.Fatal(err)
	}
	if err := ConvertHF(dir, &b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("ConvertHF is not deterministic")
	}
}

func TestConvertHFVariants(t *testing.T) {
	cfg := smallConfig()
	ref := convert(t, writeDir(t, cfg))

	// BertFor* checkpoints: "bert." prefix, gamma/beta LayerNorm names, F16
	// weights, extra tensors (heads, position_ids) that are ignored.
	dir := writeDir(t, cfg)
	rewriteWeights(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
		for i := range ts {
			n := "bert." + ts[i].Name
			n = strings.Replace(n, "LayerNorm.weight", "LayerNorm.gamma", 1)
			ts[i].Name = strings.Replace(n, "LayerNorm.bias", "LayerNorm.beta", 1)
		}
		return append(ts, safetensors.FromFloat32("cls.predictions.bias", []int{cfg.VocabSize}, make([]float32, cfg.VocabSize)),
			safetensors.Tensor{Name: "bert.embeddings.position_ids", DType: safetensors.I64, Shape: []int{1, 1}, Data: make([]byte, 8)})
	})
	if err := os.WriteFile(filepath.Join(dir, HFTokenizerConfigFile), []byte(`{"do_lower_case": false}`), 0o644); err != nil {
		t.Fatal(err)
	}
	f := convert(t, dir)
	for _, n := range ref.Names() {
		a, _ := ref.Float32(n)
		b, err := f.Float32(n)
		if err != nil || !slices.Equal(a, b) {
			t.Errorf("%s differs with prefixed names: %v", n, err)
		}
	}
	if c, _ := ParseConfig(f.Config); c.DoLowerCase {
		t.Error("do_lower_case from tokenizer_config.json ignored")
	}
}

func TestConvertHFBroken(t *testing.T) {
	cfg := smallConfig()
	cases := []struct {
		name  string
		edit  func(t *testing.T, dir string)
		wants []string
	}{
		{"missing config", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, HFConfigFile)) },
			[]string{HFConfigFile, "missing"}},
		{"bad config", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, HFConfigFile), []byte(`{"hidden_size": 8`), 0o644)
		}, []string{HFConfigFile, "bert config"}},
		{"config field", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, HFConfigFile), []byte(`{"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":3,"intermediate_size":4,"max_position_embeddings":16,"vocab_size":40}`), 0o644)
		}, []string{HFConfigFile, "num_attention_heads"}},
		{"missing vocab", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, HFVocabFile)) },
			[]string{HFVocabFile, "missing"}},
		{"vocab without CLS", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, HFVocabFile), []byte("[PAD]\n[UNK]\n"), 0o644)
		}, []string{HFVocabFile, "[CLS]"}},
		{"vocab too big", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, HFVocabFile), RandomVocab(cfg.VocabSize+1), 0o644)
		}, []string{HFVocabFile, "vocab_size"}},
		{"bad tokenizer config", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, HFTokenizerConfigFile), []byte(`{`), 0o644)
		}, []string{HFTokenizerConfigFile}},
		{"missing weights", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, HFWeightsFile)) },
			[]string{HFWeightsFile, "missing"}},
		{"truncated weights", func(t *testing.T, dir string) {
			p := filepath.Join(dir, HFWeightsFile)
			data, _ := os.ReadFile(p)
			os.WriteFile(p, data[:len(data)-10], 0o644)
		}, []string{HFWeightsFile, "data_offsets"}},
		{"missing tensor", func(t *testing.T, dir string) {
			rewriteWeights(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i := range ts {
					if ts[i].Name == "encoder.layer.1.output.dense.bias" {
						return append(ts[:i], ts[i+1:]...)
					}
				}
				return ts
			})
		}, []string{HFWeightsFile, "encoder.layer.1.output.dense.bias", "missing"}},
		{"wrong shape", func(t *testing.T, dir string) {
			rewriteWeights(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i := range ts {
					if ts[i].Name == "encoder.layer.0.intermediate.dense.weight" {
						ts[i].Shape = []int{cfg.Hidden, cfg.Intermediate} // as if stored transposed
					}
				}
				return ts
			})
		}, []string{HFWeightsFile, "encoder.layer.0.intermediate.dense.weight", "[8 12]", "[12 8]"}},
		{"integer weights", func(t *testing.T, dir string) {
			rewriteWeights(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i := range ts {
					if ts[i].Name == "pooler.dense.bias" {
						ts[i].DType = safetensors.I32
					}
				}
				return ts
			})
		}, []string{"pooler.dense.bias", "dtype"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeDir(t, cfg)
			c.edit(t, dir)
			var buf bytes.Buffer
			err := ConvertHF(dir, &buf)
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Fatalf("err = %v, want ErrBadModelFile", err)
			}
			for _, w := range c.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes on failure", buf.Len())
			}
		})
	}
}

func TestTinyTokenizer(t *testing.T) {
	wp, err := newTokenizer(RandomVocab(TinyConfig().VocabSize), TinyConfig())
	if err != nil {
		t.Fatal(err)
	}
	ids, err := wp.Encode("Hello world, the movie was really good!")
	if err != nil {
		t.Fatal(err)
	}
	var toks []string
	for _, id := range ids {
		s, _ := wp.Token(id)
		toks = append(toks, s)
	}
	if got := strings.Join(toks, " "); got != "hello world , the movie was really good !" {
		t.Errorf("tokens %q", got)
	}
	if sp := wp.SpecialIDs(); sp.CLS != 2 || sp.SEP != 3 {
		t.Errorf("special ids %+v", sp)
	}
	if _, err := newTokenizer([]byte("[PAD]\n"), TinyConfig()); !errors.Is(err, model.ErrBadModelFile) {
		t.Errorf("vocab without specials: %v", err)
	}
}

// TestConvertHFTokenizerConfig: strip_accents and tokenize_chinese_chars from
// tokenizer_config.json are stored in the config and shape the tokenizer of
// the loaded model.
func TestConvertHFTokenizerConfig(t *testing.T) {
	cfg := smallConfig()
	const a, unk = 12, 1 // ids of "a" and [UNK] in RandomVocab
	cases := []struct {
		tc      string
		lower   bool
		accents StripAccents
		chinese bool
		ids     []int32 // of "á 猫猫"
	}{
		{`{"do_lower_case": true}`, true, AccentsFollowLowerCase, true, []int32{a, unk, unk}},
		{`{"do_lower_case": true, "strip_accents": null, "tokenize_chinese_chars": true}`, true, AccentsFollowLowerCase, true, []int32{a, unk, unk}},
		{`{"do_lower_case": true, "strip_accents": false}`, true, AccentsKeep, true, []int32{unk, unk, unk}},
		{`{"do_lower_case": false, "strip_accents": true}`, false, AccentsStrip, true, []int32{a, unk, unk}},
		{`{"do_lower_case": false}`, false, AccentsFollowLowerCase, true, []int32{unk, unk, unk}},
		{`{"tokenize_chinese_chars": false}`, true, AccentsFollowLowerCase, false, []int32{a, unk}},
	}
	for _, c := range cases {
		t.Run(c.tc, func(t *testing.T) {
			dir := writeDir(t, cfg)
			if err := os.WriteFile(filepath.Join(dir, HFTokenizerConfigFile), []byte(c.tc), 0o644); err != nil {
				t.Fatal(err)
			}
			f := convert(t, dir)
			got, err := ParseConfig(f.Config)
			if err != nil {
				t.Fatal(err)
			}
			if got.DoLowerCase != c.lower || got.StripAccents != c.accents || got.TokenizeChineseChars != c.chinese {
				t.Errorf("stored config %s", f.Config)
			}
			m, err := Load(newDevice(t), f)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ids, err := m.Tokenizer().Encode("á 猫猫")
			if err != nil || !slices.Equal(ids, c.ids) {
				t.Errorf("Encode = %v, %v; want %v", ids, err, c.ids)
			}
		})
	}
	for _, bad := range []string{`{"strip_accents": "yes"}`, `{"tokenize_chinese_chars": null}`, `{"do_lower_case": 1}`} {
		dir := writeDir(t, cfg)
		if err := os.WriteFile(filepath.Join(dir, HFTokenizerConfigFile), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := ConvertHF(dir, &bytes.Buffer{}); !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), HFTokenizerConfigFile) {
			t.Errorf("%s: %v, want ErrBadModelFile naming %s", bad, err, HFTokenizerConfigFile)
		}
	}
}
