package bert

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/backbonefile"
	"github.com/smile-vplm/smile/model/safetensors"
)

// countingDevice counts allocations so tests can check the steady state
// allocates no device memory.
type countingDevice struct {
	gpu.Device
	allocs, frees int
}

func (d *countingDevice) Alloc(n int) (gpu.Buffer, error) {
	d.allocs++
	return d.Device.Alloc(n)
}

func (d *countingDevice) Free(b gpu.Buffer) {
	d.frees++
	d.Device.Free(b)
}

func randomIDs(r *rand.Rand, cfg Config, lengths ...int) [][]int32 {
	out := make([][]int32, len(lengths))
	for s, n := range lengths {
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = int32(5 + r.IntN(cfg.VocabSize-5))
		}
		out[s] = ids
	}
	return out
}

func forward(ctx context.Context, m *Model, ids [][]int32, dst []float32) error {
	st, err := m.Embed(ctx, ids)
	if err != nil {
		return err
	}
	defer m.Release(st)
	if err := m.RunLayers(ctx, st, m.Info().Layers, nil); err != nil {
		return err
	}
	return m.Pool(ctx, st, dst)
}

func TestSteadyStateAllocations(t *testing.T) {
	dev := &countingDevice{Device: newDevice(t)}
	cfg := TinyConfig()
	m, err := NewRandom(dev, cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	big := randomIDs(r, cfg, 64, 30, 7)
	small := randomIDs(r, cfg, 3, 12)
	dst := make([]float32, 3*cfg.Hidden)
	if err := forward(ctx, m, big, dst); err != nil {
		t.Fatal(err)
	}
	warm := dev.allocs
	var hostAllocs float64
	hostAllocs = testing.AllocsPerRun(5, func() {
		if err := forward(ctx, m, small, dst[:2*cfg.Hidden]); err != nil {
			t.Fatal(err)
		}
		if err := forward(ctx, m, big, dst); err != nil {
			t.Fatal(err)
		}
	})
	if dev.allocs != warm {
		t.Errorf("steady state made %d device allocations", dev.allocs-warm)
	}
	t.Logf("host allocations per two forward passes (device included): %.0f", hostAllocs)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if dev.allocs != dev.frees {
		t.Errorf("Close left %d of %d buffers", dev.allocs-dev.frees, dev.allocs)
	}
}

func TestLayerRanges(t *testing.T) {
	dev := newDevice(t)
	cfg := TinyConfig()
	m, err := NewRandom(dev, cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	ids := randomIDs(rand.New(rand.NewPCG(3, 4)), cfg, 5, 17)
	// All layers at once, and in two steps from a cached layer-1 state.
	a, _ := m.Embed(ctx, ids)
	if err := m.RunLayers(ctx, a, cfg.Layers, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := m.Embed(ctx, ids)
	if err := m.RunLayers(ctx, b, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.RunLayers(ctx, b, 1, nil); err != nil || b.Layer != 1 {
		t.Fatalf("empty range: %v, layer %d", err, b.Layer)
	}
	seen := []int{}
	if err := m.RunLayers(ctx, b, cfg.Layers, func(l int, _ gpu.Mat) { seen = append(seen, l) }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != cfg.Layers-1 || seen[0] != 2 {
		t.Errorf("observer saw layers %v", seen)
	}
	ha, hb := download(t, dev, a.H), download(t, dev, b.H)
	if !slices.Equal(ha, hb) {
		t.Error("two-step run differs from one-step run")
	}
	if err := m.RunLayers(ctx, b, 1, nil); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("backwards range: %v", err)
	}
	if err := m.RunLayers(ctx, b, cfg.Layers+1, nil); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("past the last layer: %v", err)
	}
	m.Release(a)
	m.Release(a) // twice is harmless
	if err := m.RunLayers(ctx, a, cfg.Layers, nil); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("released state: %v", err)
	}
	if err := m.Pool(ctx, a, make([]float32, 2*cfg.Hidden)); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("pool released state: %v", err)
	}
	c, _ := m.Embed(ctx, ids)
	if err := m.Pool(ctx, c, make([]float32, 2*cfg.Hidden)); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("pool at layer 0: %v", err)
	}
	if err := m.Pool(ctx, b, make([]float32, cfg.Hidden)); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("short dst: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.RunLayers(cctx, c, cfg.Layers, nil); !errors.Is(err, context.Canceled) || c.Layer != 0 {
		t.Errorf("cancelled: %v, layer %d", err, c.Layer)
	}
}

func TestEmbedRejects(t *testing.T) {
	dev := newDevice(t)
	cfg := TinyConfig()
	m, err := NewRandom(dev, cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	long := make([]int32, cfg.MaxPositions+1)
	for name, ids := range map[string][][]int32{
		"no sequences":   nil,
		"empty sequence": {{2, 3}, {}},
		"negative id":    {{2, -1, 3}},
		"id too big":     {{2, int32(cfg.VocabSize), 3}},
		"too long":       {long},
	} {
		if st, err := m.Embed(ctx, ids); !errors.Is(err, model.ErrBadInput) {
			t.Errorf("%s: %v, %v", name, st, err)
		}
	}
	// Prepare adds [CLS]/[SEP] and cuts to the window.
	p := m.Prepare(long)
	if len(p) != cfg.MaxPositions || p[0] != 2 || p[len(p)-1] != 3 {
		t.Errorf("Prepare(long) = len %d, %d..%d", len(p), p[0], p[len(p)-1])
	}
	if p := m.Prepare(nil); len(p) != 2 {
		t.Errorf("Prepare(nil) = %v", p)
	}
	if _, err := m.Embed(ctx, [][]int32{p}); err != nil {
		t.Errorf("prepared ids rejected: %v", err)
	}
}

func TestLoadRejects(t *testing.T) {
	cfg := smallConfig()
	good := convert(t, writeDir(t, cfg))
	var tensors []safetensors.Tensor
	for _, n := range good.Names() {
		v, _ := good.Float32(n)
		tensors = append(tensors, safetensors.FromFloat32(n, nil, v))
	}
	shapes := map[string][]int{}
	for _, s := range specs(cfg) {
		shapes[s.name] = s.shape
	}
	for i := range tensors {
		tensors[i].Shape = shapes[tensors[i].Name]
	}
	vocab := RandomVocab(cfg.VocabSize)
	write := func(family string, info model.Info, config any, vocab []byte, ts []safetensors.Tensor) *backbonefile.File {
		t.Helper()
		var buf bytes.Buffer
		if err := backbonefile.Write(&buf, family, info, config, "test", vocab, ts); err != nil {
			t.Fatal(err)
		}
		f, err := backbonefile.Parse("bad.smile", buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	without := func(name string) []safetensors.Tensor {
		var out []safetensors.Tensor
		for _, tn := range tensors {
			if tn.Name != name {
				out = append(out, tn)
			}
		}
		return out
	}
	reshaped := func(name string, shape ...int) []safetensors.Tensor {
		out := append([]safetensors.Tensor(nil), tensors...)
		for i := range out {
			if out[i].Name == name {
				out[i].Shape = shape
			}
		}
		return out
	}
	info := cfg.info("x")
	other := info
	other.Family = "use-lite"
	wrongInfo := info
	wrongInfo.Layers = 3
	badCfg := cfg
	badCfg.Heads = 3
	cases := []struct {
		name  string
		f     *backbonefile.File
		wants []string
	}{
		{"other family", write("use-lite", other, cfg, vocab, tensors), []string{"family"}},
		{"bad config", write(Family, info, map[string]int{"hidden_size": 8}, vocab, tensors), []string{"smile.config", "missing"}},
		{"invalid config", write(Family, info, badCfg, vocab, tensors), []string{"num_attention_heads"}},
		{"info disagrees", write(Family, wrongInfo, cfg, vocab, tensors), []string{"smile.info"}},
		{"missing tensor", write(Family, info, cfg, vocab, without(layerTensor(1, "ffn_ln.beta"))), []string{"layer.1.ffn_ln.beta", "missing"}},
		{"wrong shape", write(Family, info, cfg, vocab, reshaped(layerTensor(0, "qkv.weight"), 3*cfg.Hidden, cfg.Hidden)), []string{"layer.0.qkv.weight", "[24 8]", "[8 24]"}},
		{"vocab without SEP", write(Family, info, cfg, []byte("[PAD]\n[UNK]\n[CLS]\n[MASK]\n"), tensors), []string{"vocabulary", "[SEP]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dev := &countingDevice{Device: newDevice(t)}
			m, err := Load(dev, c.f)
			if !errors.Is(err, model.ErrBadModelFile) {
				t.Fatalf("Load = %v, %v; want ErrBadModelFile", m, err)
			}
			for _, w := range c.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if dev.allocs != dev.frees {
				t.Errorf("failed Load leaked %d buffers", dev.allocs-dev.frees)
			}
		})
	}
	if m, err := Load(newDevice(t), write(Family, info, cfg, vocab, tensors)); err != nil {
		t.Errorf("rebuilt file rejected: %v", err)
	} else {
		m.Close()
	}
}
