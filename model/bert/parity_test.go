package bert

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/backbonefile"
)

var update = flag.Bool("update", false, "rewrite testdata/bert/tiny (needs /usr/bin/python3 with torch)")

const (
	tinyDir  = "../../testdata/bert/tiny"
	tinySeed = 20240601
	// tolerance of the float32 forward pass against the float64 torch reference
	parityTol = 1e-4
)

// tinyLengths are the prepared lengths of the reference inputs: the shortest
// possible ([CLS] [SEP]), odd sizes and the full window.
var tinyLengths = []int{2, 9, 23, 64, 5}

type reference struct {
	Sequences []struct {
		IDs    []int32       `json:"ids"`
		Hidden [][][]float64 `json:"hidden"`
		Pooled []float64     `json:"pooled"`
		Mean   []float64     `json:"mean"`
	} `json:"sequences"`
}

// TestGenerateTiny rewrites testdata/bert/tiny with -update: a random tiny
// BERT in HF layout, the inputs, and the torch reference.
func TestGenerateTiny(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate testdata/bert/tiny")
	}
	cfg := TinyConfig()
	if err := WriteHFDir(tinyDir, cfg, tinySeed); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(tinySeed, 1))
	var seqs [][]int32
	for _, n := range tinyLengths {
		ids := []int32{2} // [CLS]
		for range n - 2 {
			ids = append(ids, int32(5+r.IntN(cfg.VocabSize-5)))
		}
		seqs = append(seqs, append(ids, 3)) // [SEP]
	}
	in, _ := json.Marshal(map[string]any{"sequences": seqs})
	if err := os.WriteFile(filepath.Join(tinyDir, "inputs.json"), append(in, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/python3", "../../scripts/bert_reference.py", tinyDir,
		filepath.Join(tinyDir, "inputs.json"), filepath.Join(tinyDir, "reference.json"))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("reference script: %v", err)
	}
}

func newDevice(t testing.TB) gpu.Device {
	t.Helper()
	dev, err := cpu.New(cpu.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

func loadTiny(t testing.TB, dev gpu.Device) (*Model, reference) {
	t.Helper()
	var buf bytes.Buffer
	if err := ConvertHF(tinyDir, &buf); err != nil {
		t.Fatal(err)
	}
	f, err := backbonefile.Parse("tiny", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(dev, f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(tinyDir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref reference
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	return m, ref
}

func download(t testing.TB, dev gpu.Device, h gpu.Mat) []float32 {
	t.Helper()
	out := make([]float32, h.Rows*h.Cols)
	if err := dev.Download(out, h); err != nil {
		t.Fatal(err)
	}
	return out
}

func maxAbs(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range got {
		d = max(d, math.Abs(float64(got[i])-want[i]))
	}
	return d
}

// TestTinyParity runs all reference sequences in one packed batch and checks
// every layer's states and both poolings against the torch reference.
func TestTinyParity(t *testing.T) {
	dev := newDevice(t)
	m, ref := loadTiny(t, dev)
	defer m.Close()
	ctx := context.Background()
	ids := make([][]int32, len(ref.Sequences))
	for s, seq := range ref.Sequences {
		ids[s] = seq.IDs
	}
	st, err := m.Embed(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	layers := [][]float32{download(t, dev, st.H)}
	err = m.RunLayers(ctx, st, m.Info().Layers, func(layer int, h gpu.Mat) {
		if layer != len(layers) {
			t.Errorf("observer saw layer %d, want %d", layer, len(layers))
		}
		layers = append(layers, download(t, dev, h))
	})
	if err != nil {
		t.Fatal(err)
	}
	H := m.Info().Hidden
	for l, h := range layers {
		worst := 0.0
		for s, seq := range ref.Sequences {
			var want []float64
			for _, row := range seq.Hidden[l] {
				want = append(want, row...)
			}
			worst = max(worst, maxAbs(h[st.Offsets[s]*H:st.Offsets[s+1]*H], want))
		}
		t.Logf("layer %d: max-abs %.2e", l, worst)
		if worst > parityTol {
			t.Errorf("layer %d: max-abs %.2e > %.0e", l, worst, parityTol)
		}
	}
	for _, pool := range []struct {
		name string
		fn   func(context.Context, *model.State, []float32) error
		want func(s int) []float64
	}{
		{"pooled", m.Pool, func(s int) []float64 { return ref.Sequences[s].Pooled }},
		{"mean", m.PoolMean, func(s int) []float64 { return ref.Sequences[s].Mean }},
	} {
		out := make([]float32, st.Seqs()*H)
		if err := pool.fn(ctx, st, out); err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for s := range ref.Sequences {
			worst = max(worst, maxAbs(out[s*H:(s+1)*H], pool.want(s)))
		}
		t.Logf("%s: max-abs %.2e", pool.name, worst)
		if worst > parityTol {
			t.Errorf("%s: max-abs %.2e > %.0e", pool.name, worst, parityTol)
		}
	}
	m.Release(st)
}

// TestAloneEqualsBatch checks the promise that a sequence's answer in a
// mixed batch equals its answer alone.
func TestAloneEqualsBatch(t *testing.T) {
	dev := newDevice(t)
	m, ref := loadTiny(t, dev)
	defer m.Close()
	ctx := context.Background()
	H := m.Info().Hidden
	run := func(ids [][]int32) (hidden, pooled []float32, offsets []int) {
		st, err := m.Embed(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Release(st)
		if err := m.RunLayers(ctx, st, m.Info().Layers, nil); err != nil {
			t.Fatal(err)
		}
		pooled = make([]float32, len(ids)*H)
		if err := m.Pool(ctx, st, pooled); err != nil {
			t.Fatal(err)
		}
		return download(t, dev, st.H), pooled, append([]int(nil), st.Offsets...)
	}
	var ids [][]int32
	for _, s := range ref.Sequences {
		ids = append(ids, s.IDs)
	}
	// Batch them twice over, in another order too, so rows land at other offsets.
	batch := append(append([][]int32{}, ids...), ids[3], ids[0], ids[2])
	bh, bp, boff := run(batch)
	const tol = 1e-5
	for s, seq := range batch {
		ah, ap, _ := run([][]int32{seq})
		d := 0.0
		for i, x := range ah {
			d = max(d, math.Abs(float64(x-bh[boff[s]*H+i])))
		}
		for i, x := range ap {
			d = max(d, math.Abs(float64(x-bp[s*H+i])))
		}
		if d > tol {
			t.Errorf("sequence %d (len %d): alone vs batch max-abs %.2e > %.0e", s, len(seq), d, tol)
		}
	}
}
