package train_test

import (
	"context"
	"math"
	"testing"

	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/bert"
	"github.com/smile-vplm/smile/model/train"
)

var parityTexts = []string{
	"the service was quick and the food was great",
	"terrible.",
	"I would not go back there again, not even for free; the waiter ignored us for an hour",
	"ok",
	"A long sentence that goes on and on about nothing in particular, to make the sequence lengths differ quite a bit from the others in the batch.",
}

// backbones gives the real use-lite backbone and a small random BERT.
func backbones(t *testing.T) map[string]model.Backbone {
	t.Helper()
	ul := testenv.UseLiteBackbone(t)
	cfg := bert.TinyConfig()
	cfg.Layers = 3
	bt, err := bert.NewRandom(ul.Device(), cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bt.Close() })
	return map[string]model.Backbone{"use-lite": ul, "bert": bt}
}

func prepared(t *testing.T, bb model.Backbone, texts []string) [][]int32 {
	var ids [][]int32
	for _, s := range texts {
		e, err := bb.Tokenizer().Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, bb.Prepare(e))
	}
	return ids
}

// inputsFor computes what the engine takes, directly on the backbone.
func inputsFor(t *testing.T, bb model.Backbone, e *train.Engine, ids [][]int32) *train.Inputs {
	t.Helper()
	ctx := context.Background()
	kind, layer := e.Input()
	switch kind {
	case train.InputIDs:
		return &train.Inputs{IDs: ids}
	case train.InputPooled:
		r := model.NewRunner(bb)
		defer r.Close()
		items := make([]model.Item, len(ids))
		for i := range ids {
			items[i].IDs = ids[i]
		}
		out, err := r.Forward(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		var h []float32
		for _, o := range out {
			h = append(h, o...)
		}
		return &train.Inputs{H: h}
	}
	in, err := train.ComputeInputs(ctx, bb, kind, layer, ids)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// TestEngineMatchesServing: what the trainer computes for a vPLM equals
// what the serving runner answers for the same params, for every method,
// adapter kind, head kind and both block layouts (pre-LN use-lite,
// post-LN BERT), so a trained adapter serves exactly as it was trained.
func TestEngineMatchesServing(t *testing.T) {
	ctx := context.Background()
	for name, bb := range backbones(t) {
		spec, err := bb.(model.Trainable).TrainSpec()
		if err != nil {
			t.Fatal(err)
		}
		L := bb.Info().Layers
		ids := prepared(t, bb, parityTexts)
		cases := []struct {
			name   string
			method train.Method
			ps     model.ParamsSpec
			random bool
		}{
			{"bottleneck-top", train.MethodAdapter, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 8, Head: model.HeadClassify, Labels: []string{"a", "b", "c"}}, true},
			{"bottleneck-all", train.MethodAdapter, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 4, Layers: allLayers(L), Head: model.HeadClassify, Labels: []string{"a", "b"}}, true},
			{"lora-all-embed", train.MethodAdapter, model.ParamsSpec{Adapter: model.AdapterLoRA, Rank: 4, Alpha: 8, Layers: allLayers(L), Head: model.HeadEmbed, EmbedDim: 16}, true},
			{"lora-top-embed-plain", train.MethodAdapter, model.ParamsSpec{Adapter: model.AdapterLoRA, Rank: 4, Head: model.HeadEmbed}, true},
			{"head", train.MethodHead, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 4, Head: model.HeadClassify, Labels: []string{"a", "b", "c"}}, false},
			{"full", train.MethodFull, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 4, Head: model.HeadClassify, Labels: []string{"x", "y"}}, false},
		}
		for _, c := range cases {
			t.Run(name+"/"+c.name, func(t *testing.T) {
				var p *model.Params
				if c.random {
					p, err = model.RandomParams(bb, c.ps, 3, 0.05)
				} else {
					p, err = model.NewParams(bb, c.ps, 3)
				}
				if err != nil {
					t.Fatal(err)
				}
				r := model.NewRunner(bb)
				defer r.Close()
				dp, err := r.UploadParams(p)
				if err != nil {
					t.Fatal(err)
				}
				items := make([]model.Item, len(ids))
				for i := range ids {
					items[i] = model.Item{IDs: ids[i], Params: dp}
				}
				want, err := r.Forward(ctx, items)
				if err != nil {
					t.Fatal(err)
				}
				e, err := train.New(spec, p, c.method, train.Config{}, bb.Device().(train.BLAS))
				if err != nil {
					t.Fatal(err)
				}
				got, err := e.Predict(ctx, inputsFor(t, bb, e, ids))
				if err != nil {
					t.Fatal(err)
				}
				worst := 0.0
				for i := range want {
					for k := range want[i] {
						worst = math.Max(worst, math.Abs(float64(want[i][k]-got[i][k])))
					}
				}
				t.Logf("max abs diff %.3g", worst)
				if worst > 2e-5 {
					t.Fatalf("trainer and server disagree by %g", worst)
				}
			})
		}
	}
}

func allLayers(n int) []int {
	var ls []int
	for l := 1; l <= n; l++ {
		ls = append(ls, l)
	}
	return ls
}
