package uselite_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/uselite"
)

// synthetic builds a small USE-Lite-shaped model with random weights: a
// geometry unlike the real one (FFN wider than the 3x-attention qkv rows) so code
// paths cannot lean on the real model's proportions.
func synthetic(t *testing.T) *uselite.Model {
	t.Helper()
	vocab, err := os.ReadFile("../../testdata/use-lite/vocab.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg := uselite.Config{
		Vocab: 8002, EmbedDim: 8, EmbedScale: 2, MaxLen: 16, LayerNorm: 1e-6, L2Eps: 1e-12, OutputDim: 12, TimingDims: 4,
		Layers: []uselite.LayerConfig{
			{In: 8, Attention: 4, Out: 16, Heads: 2, QueryScale: float32(1 / math.Sqrt(2)), FFN: 40, ResidualProj: true},
			{In: 16, Attention: 4, Out: 16, Heads: 1, QueryScale: 0.5, FFN: 40},
		},
	}
	r := rand.New(rand.NewPCG(3, 4))
	var ts uselite.Tensors
	add := func(name string, shape ...int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(r.NormFloat64() * 0.5)
		}
		ts = append(ts, uselite.Tensor{Name: name, Shape: shape, Data: data})
	}
	add("embeddings", cfg.Vocab, cfg.EmbedDim)
	add("timing.inv_timescales", cfg.TimingDims)
	for l, lc := range cfg.Layers {
		n := func(s string) string { return fmt.Sprintf("layer.%d.%s", l, s) }
		add(n("ln1.gamma"), lc.In)
		add(n("ln1.beta"), lc.In)
		add(n("qkv.weight"), lc.In, 3*lc.Attention)
		add(n("qkv.bias"), 3*lc.Attention)
		add(n("out.weight"), lc.Attention, lc.Out)
		add(n("out.bias"), lc.Out)
		if lc.ResidualProj {
			add(n("residual.weight"), lc.In, lc.Out)
			add(n("residual.bias"), lc.Out)
		}
		add(n("ln2.gamma"), lc.Out)
		add(n("ln2.beta"), lc.Out)
		add(n("ffn1.weight"), lc.Out, lc.FFN)
		add(n("ffn1.bias"), lc.FFN)
		add(n("ffn2.weight"), lc.FFN, lc.Out)
		add(n("ffn2.bias"), lc.Out)
	}
	add("pool.weight", 16, cfg.OutputDim)
	add("pool.bias", cfg.OutputDim)
	dev, err := cpu.New(cpu.SingleThreadConfig())
	if err != nil {
		t.Fatal(err)
	}
	m, err := uselite.Load(dev, cfg, ts, vocab)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func randomSeqs(n, maxLen int, seed uint64) [][]int32 {
	r := rand.New(rand.NewPCG(seed, 1))
	ids := make([][]int32, n)
	for i := range ids {
		ids[i] = make([]int32, 1+r.IntN(maxLen))
		for j := range ids[i] {
			ids[i][j] = int32(r.IntN(8002))
		}
	}
	return ids
}

func runAll(t *testing.T, m *uselite.Model, ids [][]int32, fused bool) []float32 {
	t.Helper()
	ctx := context.Background()
	st, err := m.Embed(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release(st)
	out := make([]float32, len(ids)*m.Info().OutputDim)
	if fused {
		err = m.RunPool(ctx, st, out)
	} else {
		if err = m.RunLayers(ctx, st, m.Info().Layers, nil); err == nil {
			err = m.Pool(ctx, st, out)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSyntheticRunPool: the fused path agrees with layers + pool for a
// geometry whose FFN is wider than its qkv, and for many one-token texts.
func TestSyntheticRunPool(t *testing.T) {
	m := synthetic(t)
	for _, ids := range [][][]int32{randomSeqs(100, 1, 5), randomSeqs(37, 16, 6)} {
		if d := maxAbs(runAll(t, m, ids, false), runAll(t, m, ids, true)); d > 1e-5 {
			t.Fatalf("RunPool differs from RunLayers+Pool by %g", d)
		}
	}
}

// TestRestore: states downloaded after k layers and restored run on to the
// same result, at every boundary; layer 0 restored runs its residual as a
// GEMM and still agrees with Embed's table path.
func TestRestore(t *testing.T) {
	m := synthetic(t)
	ctx := context.Background()
	ids := randomSeqs(9, 16, 7)
	want := runAll(t, m, ids, false)
	for k := 0; k <= m.Info().Layers; k++ {
		st, err := m.Embed(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.RunLayers(ctx, st, k, nil); err != nil {
			t.Fatal(err)
		}
		h := make([]float32, st.Tokens()*m.StateWidth(k))
		if err := m.Device().Download(h, st.H); err != nil {
			t.Fatal(err)
		}
		offsets := append([]int(nil), st.Offsets...)
		m.Release(st)
		rs, err := m.Restore(ctx, offsets, k, h)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.RunLayers(ctx, rs, m.Info().Layers, nil); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, len(ids)*m.Info().OutputDim)
		if err := m.Pool(ctx, rs, got); err != nil {
			t.Fatal(err)
		}
		m.Release(rs)
		if d := maxAbs(want, got); d > 1e-5 {
			t.Errorf("restored at layer %d: differs by %g", k, d)
		}
	}
	bad := []struct {
		offsets []int
		layer   int
		n       int
	}{
		{[]int{0, 2}, 3, 2 * 16},    // past the last layer
		{[]int{1, 2}, 1, 16},        // offsets not starting at 0
		{[]int{0, 0, 2}, 1, 2 * 16}, // an empty sequence
		{[]int{0, 17}, 1, 17 * 16},  // longer than the window
		{[]int{0, 2}, 1, 2*16 - 1},  // wrong number of floats
		{[]int{0}, 1, 0},            // no sequence
	}
	for _, b := range bad {
		if _, err := m.Restore(ctx, b.offsets, b.layer, make([]float32, b.n)); !errors.Is(err, model.ErrBadInput) {
			t.Errorf("Restore(%v, %d, %d floats) = %v, want ErrBadInput", b.offsets, b.layer, b.n, err)
		}
	}
}

// TestStateMisuse: foreign, nil or released states and a closed model give
// ErrBadInput, never a panic.
func TestStateMisuse(t *testing.T) {
	m := synthetic(t)
	ctx := context.Background()
	out := make([]float32, m.Info().OutputDim)
	if err := m.RunLayers(ctx, nil, 1, nil); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("nil state: %v", err)
	}
	if err := m.Pool(ctx, &model.State{Offsets: []int{0, 1}}, out); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("foreign state: %v", err)
	}
	st, err := m.Embed(ctx, [][]int32{{5, 6}})
	if err != nil {
		t.Fatal(err)
	}
	m.Release(st)
	m.Release(st) // twice: a no-op
	if err := m.RunPool(ctx, st, out); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("released state: %v", err)
	}
	if _, err := m.Embed(ctx, [][]int32{{1, 99999}}); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("id outside the vocabulary: %v", err)
	}
	m.Close()
	if _, err := m.Embed(ctx, [][]int32{{5}}); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("closed model: %v", err)
	}
}
