package train

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/model"
)

// randomSpec is a small backbone of the given layout with random weights:
// two layers, the first changing width through a residual projection when
// preLN (as use-lite's does).
func randomSpec(rng *rand.Rand, preLN bool, pool model.PoolMode, l2 bool, act gpu.Activation) *model.TrainSpec {
	vec := func(n int, scale float64, center float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(center + scale*rng.NormFloat64())
		}
		return v
	}
	const vocab, maxPos, heads, ffn = 23, 12, 2, 10
	in0, width := 8, 8
	if preLN {
		in0 = 6
	}
	s := &model.TrainSpec{
		Info: model.Info{Family: "test", Name: "test", Layers: 2, Hidden: width, Heads: heads, Intermediate: ffn,
			MaxPositions: maxPos, VocabSize: vocab, OutputDim: 7},
		Embedding: model.EmbeddingSpec{Vocab: vocab, Width: in0, Table: vec(vocab*in0, 0.5, 0), MaxPositions: maxPos,
			Positions: vec(maxPos*in0, 0.3, 0)},
		Pool: model.PoolSpec{Mode: pool, In: width, Out: 7, W: vec(width*7, 0.4, 0), B: vec(7, 0.1, 0), Act: gpu.ActTanh, L2: l2, L2Eps: 1e-12},
	}
	if !preLN {
		s.Embedding.LNGamma, s.Embedding.LNBeta, s.Embedding.LNEps = vec(in0, 0.1, 1), vec(in0, 0.1, 0), 1e-6
	}
	in := in0
	for range 2 {
		ln1 := in
		if !preLN {
			ln1 = width
		}
		b := model.BlockSpec{PreLN: preLN, In: in, Attention: width, Out: width, Heads: heads, FFN: ffn,
			QueryScale: float32(1 / math.Sqrt(float64(width/heads))), Act: act, LNEps: 1e-6,
			LN1G: vec(ln1, 0.1, 1), LN1B: vec(ln1, 0.1, 0),
			QKVW: vec(in*3*width, 0.4, 0), QKVB: vec(3*width, 0.1, 0),
			OutW: vec(width*width, 0.4, 0), OutB: vec(width, 0.1, 0),
			LN2G: vec(width, 0.1, 1), LN2B: vec(width, 0.1, 0),
			F1W: vec(width*ffn, 0.4, 0), F1B: vec(ffn, 0.1, 0), F2W: vec(ffn*width, 0.4, 0), F2B: vec(width, 0.1, 0)}
		if in != width {
			b.ResW = vec(in*width, 0.4, 0)
		}
		s.Blocks = append(s.Blocks, b)
		in = width
	}
	return s
}

// TestEngineGradients checks the engine's analytic gradients, through
// whole upper layers, pooling, head and loss, against central finite
// differences of its own loss, for every layout, adapter, head and method.
func TestEngineGradients(t *testing.T) {
	dev, err := cpu.New(cpu.SingleThreadConfig())
	if err != nil {
		t.Fatal(err)
	}
	type layout struct {
		name  string
		preLN bool
		pool  model.PoolMode
		l2    bool
		act   gpu.Activation
	}
	layouts := []layout{
		{"preln-mean-l2-relu", true, model.PoolMean, true, gpu.ActReLU},
		{"postln-first-gelu", false, model.PoolFirst, false, gpu.ActGELU},
		{"postln-mean-tanhgelu", false, model.PoolMean, false, gpu.ActGELUTanh},
	}
	type method struct {
		name   string
		m      Method
		ps     model.ParamsSpec
		labels []int
	}
	methods := []method{
		{"bottleneck-top", MethodAdapter, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 3, Layers: []int{2}, Head: model.HeadClassify, Labels: []string{"a", "b", "c"}}, []int{0, 2, 1, 2}},
		{"bottleneck-both", MethodAdapter, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 3, Layers: []int{1, 2}, Head: model.HeadClassify, Labels: []string{"a", "b"}}, []int{0, 1, 1, 0}},
		{"lora-both-embed", MethodAdapter, model.ParamsSpec{Adapter: model.AdapterLoRA, Rank: 2, Alpha: 4, Layers: []int{1, 2}, Head: model.HeadEmbed, EmbedDim: 5}, []int{0, 1, 0, 1}},
		{"lora-top", MethodAdapter, model.ParamsSpec{Adapter: model.AdapterLoRA, Rank: 2, Layers: []int{2}, Head: model.HeadClassify, Labels: []string{"a", "b"}}, []int{1, 1, 0, 0}},
		{"head", MethodHead, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 2, Head: model.HeadClassify, Labels: []string{"a", "b", "c"}}, []int{2, 0, 1, 1}},
		{"full", MethodFull, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 2, Head: model.HeadClassify, Labels: []string{"a", "b"}}, []int{0, 1, 1, 0}},
	}
	lengths := []int{5, 1, 7, 3}
	for li, lay := range layouts {
		for mi, mc := range methods {
			t.Run(lay.name+"/"+mc.name, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(li), uint64(mi)))
				spec := randomSpec(rng, lay.preLN, lay.pool, lay.l2, lay.act)
				p, err := model.RandomParams(specGeometry{spec}, mc.ps, uint64(mi), 0.3)
				if err != nil {
					t.Fatal(err)
				}
				e, err := New(spec, p, mc.m, Config{}, dev)
				if err != nil {
					t.Fatal(err)
				}
				in := randomInputs(t, rng, e, spec, lengths)
				// Analytic gradients, as Step computes them before the update.
				e.ar.reset()
				ps := e.forward(in, len(lengths))
				e.lossBackward(ps, mc.labels)
				e.backward(ps)
				loss := func() float64 {
					l, err := e.Loss(in, mc.labels)
					if err != nil {
						t.Fatal(err)
					}
					return l
				}
				checked := 0
				for _, prm := range e.params {
					// Up to 6 coordinates per tensor, chosen at random.
					for range min(6, len(prm.Value)) {
						i := rng.IntN(len(prm.Value))
						old := prm.Value[i]
						const h = 1e-2
						prm.Value[i] = old + h
						lp := loss()
						prm.Value[i] = old - h
						lm := loss()
						prm.Value[i] = old
						fd := (lp - lm) / (2 * h)
						an := float64(prm.Grad[i])
						if diff := math.Abs(fd - an); diff > 2e-3+3e-2*math.Abs(fd) {
							t.Errorf("%s[%d]: analytic %.6g, finite difference %.6g", prm.Name, i, an, fd)
						}
						checked++
					}
				}
				if checked == 0 {
					t.Fatal("no parameter checked")
				}
			})
		}
	}
}

func randomInputs(t *testing.T, rng *rand.Rand, e *Engine, spec *model.TrainSpec, lengths []int) *Inputs {
	kind, layer := e.Input()
	switch kind {
	case InputIDs:
		var ids [][]int32
		for _, n := range lengths {
			s := make([]int32, n)
			for i := range s {
				s[i] = int32(rng.IntN(spec.Embedding.Vocab))
			}
			ids = append(ids, s)
		}
		return &Inputs{IDs: ids}
	case InputPooled:
		h := make([]float32, len(lengths)*spec.Info.OutputDim)
		for i := range h {
			h[i] = float32(rng.NormFloat64())
		}
		return &Inputs{H: h}
	}
	offsets := []int{0}
	for _, n := range lengths {
		offsets = append(offsets, offsets[len(offsets)-1]+n)
	}
	T := offsets[len(offsets)-1]
	random := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	if kind == InputAttended {
		return &Inputs{Offsets: offsets, H: random(T * e.stateWidth(layer-1)), Z: random(T * spec.Blocks[layer-1].Out)}
	}
	return &Inputs{Offsets: offsets, H: random(T * e.stateWidth(layer))}
}
