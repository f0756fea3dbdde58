package bert

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/backbonefile"
	"github.com/smile-vplm/smile/model/safetensors"
)

// smallFileTensors returns the SMILE-layout tensors of a random smallConfig
// model.
func smallFileTensors(t *testing.T) []safetensors.Tensor {
	t.Helper()
	f := convert(t, writeDir(t, smallConfig()))
	var ts []safetensors.Tensor
	for _, n := range f.Names() {
		tn, err := f.Float32(n)
		if err != nil {
			t.Fatal(err)
		}
		var shape []int
		for _, s := range specs(smallConfig()) {
			if s.name == n {
				shape = s.shape
			}
		}
		ts = append(ts, safetensors.FromFloat32(n, shape, tn))
	}
	return ts
}

// backboneBytes writes a backbone file whose info and config declare cfg,
// whatever the tensors hold.
func backboneBytes(t testing.TB, cfg Config, ts []safetensors.Tensor) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := backbonefile.Write(&buf, Family, cfg.info("x"), cfg, "test", RandomVocab(40), ts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestLoadHugeGeometry: a small file that declares a huge geometry is
// rejected before anything is sized by that geometry (it used to die with
// "fatal error: out of memory").
func TestLoadHugeGeometry(t *testing.T) {
	ts := smallFileTensors(t)
	small := smallConfig()
	set := func(edit func(*Config)) Config {
		c := small
		edit(&c)
		return c
	}
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"layers 1<<36", set(func(c *Config) { c.Layers = 1 << 36 }), "num_hidden_layers"},
		{"layers over the bound", set(func(c *Config) { c.Layers = MaxLayers + 1 }), "num_hidden_layers"},
		{"hidden 1<<40", set(func(c *Config) { c.Hidden, c.Heads = 1<<40, 1 }), "hidden_size"},
		{"intermediate 1<<40", set(func(c *Config) { c.Intermediate = 1 << 40 }), "intermediate_size"},
		{"vocab 1<<40", set(func(c *Config) { c.VocabSize = 1 << 40 }), "vocab_size"},
		{"positions 1<<40", set(func(c *Config) { c.MaxPositions = 1 << 40 }), "max_position_embeddings"},
		{"type vocab 1<<40", set(func(c *Config) { c.TypeVocabSize = 1 << 40 }), "type_vocab_size"},
		{"heads over hidden", set(func(c *Config) { c.Hidden, c.Heads = 8, 16 }), "num_attention_heads"},
		// Within the bounds, but the file holds a much smaller model: the
		// tensor check fails before any device allocation.
		{"max layers, two in the file", set(func(c *Config) { c.Layers = MaxLayers }), "layer.2.qkv.weight"},
		{"max vocab, 40 rows in the file", set(func(c *Config) { c.VocabSize = MaxVocabSize }), "embeddings.word"},
		{"max geometry", Config{
			VocabSize: MaxVocabSize, Hidden: MaxHidden, Layers: MaxLayers, Heads: 16, Intermediate: MaxIntermediate,
			MaxPositions: MaxMaxPositions, TypeVocabSize: MaxTypeVocabSize, LayerNormEps: 1e-12, HiddenAct: "gelu",
		}, "embeddings.word"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := backbonefile.Parse("huge.smile", backboneBytes(t, c.cfg, ts))
			if err != nil {
				t.Fatal(err)
			}
			dev := &countingDevice{Device: newDevice(t)}
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			m, err := Load(dev, f)
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load = %v, %v; want ErrBadModelFile naming %q", m, err, c.want)
			}
			if dev.allocs != 0 {
				t.Errorf("rejected file made %d device allocations", dev.allocs)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
				t.Errorf("rejected file made %d MB of host allocations", n>>20)
			}
		})
	}
}

// TestConvertHFHugeGeometry: a small HF directory whose config.json declares
// a wide model fails on the missing tensors before the fused QKV matrix is
// sized by the declared width.
func TestConvertHFHugeGeometry(t *testing.T) {
	small := smallConfig()
	dir := writeDir(t, small)
	wide := small
	wide.Hidden, wide.Heads, wide.VocabSize, wide.MaxPositions, wide.TypeVocabSize = 4096, 64, 5, 2, 1
	cj, err := hfConfigJSON(wide)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, HFConfigFile), cj, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, HFVocabFile), RandomVocab(wide.VocabSize), 0o644); err != nil {
		t.Fatal(err)
	}
	// The embeddings match the declared width; the first layer is missing.
	H := wide.Hidden
	rewriteWeights(t, dir, func([]safetensors.Tensor) []safetensors.Tensor {
		return []safetensors.Tensor{
			safetensors.FromFloat32("embeddings.word_embeddings.weight", []int{wide.VocabSize, H}, make([]float32, wide.VocabSize*H)),
			safetensors.FromFloat32("embeddings.position_embeddings.weight", []int{wide.MaxPositions, H}, make([]float32, wide.MaxPositions*H)),
			safetensors.FromFloat32("embeddings.token_type_embeddings.weight", []int{1, H}, make([]float32, H)),
			safetensors.FromFloat32("embeddings.LayerNorm.weight", []int{H}, make([]float32, H)),
			safetensors.FromFloat32("embeddings.LayerNorm.bias", []int{H}, make([]float32, H)),
		}
	})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err = ConvertHF(dir, &bytes.Buffer{})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, model.ErrBadModelFile) || !strings.Contains(err.Error(), "encoder.layer.0.attention.self.query.weight") {
		t.Fatalf("ConvertHF = %v; want ErrBadModelFile naming the missing query weight", err)
	}
	// The fused QKV of this width is 3*4096*4096 floats (192 MiB).
	if n := after.TotalAlloc - before.TotalAlloc; n > 32<<20 {
		t.Errorf("rejected directory made %d MB of host allocations", n>>20)
	}
}

// FuzzLoad feeds arbitrary bytes through backbonefile.Parse and Load: no
// panic, no allocation beyond what the input's size allows, and every
// rejection wraps model.ErrBadModelFile. A model that loads must embed.
func FuzzLoad(f *testing.F) {
	// The smallest geometry keeps the seed near 2 KB, mostly header: the
	// fuzzer minimizes every new input, which from a 10 KB seed takes longer
	// than a short fuzzing run.
	seed := Config{
		VocabSize: 5, Hidden: 2, Layers: 1, Heads: 1, Intermediate: 2, MaxPositions: 4, TypeVocabSize: 1,
		LayerNormEps: 1e-12, HiddenAct: "gelu", DoLowerCase: true, TokenizeChineseChars: true,
	}
	dir := filepath.Join(f.TempDir(), "seed")
	if err := WriteHFDir(dir, seed, 1); err != nil {
		f.Fatal(err)
	}
	var good bytes.Buffer
	if err := ConvertHF(dir, &good); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	huge := smallConfig()
	huge.Layers = 1 << 36
	var buf bytes.Buffer
	if err := backbonefile.Write(&buf, Family, huge.info("x"), huge, "test", RandomVocab(40), nil); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{})
	dev, err := cpu.New(cpu.SingleThreadConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { dev.Close() })
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte) {
		bf, err := backbonefile.Parse("fuzz.smile", data)
		if err != nil {
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Fatalf("Parse error %v does not wrap ErrBadModelFile", err)
			}
			return
		}
		m, err := Load(dev, bf)
		if err != nil {
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Fatalf("Load error %v does not wrap ErrBadModelFile", err)
			}
			return
		}
		defer m.Close()
		if _, err := model.Embed(ctx, m, []string{"hello world", "a"}, model.DefaultEmbedOptions()); err != nil {
			t.Fatalf("loaded model cannot embed: %v", err)
		}
	})
}
