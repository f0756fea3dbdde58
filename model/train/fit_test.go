package train_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/train"
)

// imdbTexts tokenizes the first n examples of a pulled imdb split.
func imdbTexts(t *testing.T, bb model.Backbone, split string, n int) *train.Texts {
	t.Helper()
	dir := testenv.DataDir()
	if _, err := datasets.ReadMeta(dir, "imdb"); errors.Is(err, datasets.ErrNotPulled) {
		if _, err := datasets.Pull(context.Background(), dir, "imdb", "", nil); err != nil {
			t.Fatalf("the imdb dataset is needed: %v", err)
		}
	}
	exs, err := datasets.ReadSplit(dir, "imdb", split)
	if err != nil {
		t.Fatal(err)
	}
	tx := &train.Texts{}
	for _, ex := range exs[:min(n, len(exs))] {
		ids, err := bb.Tokenizer().Encode(ex.Text)
		if err != nil || len(ids) == 0 {
			continue
		}
		tx.IDs = append(tx.IDs, bb.Prepare(ids))
		l := 0
		if ex.Label == "1" {
			l = 1
		}
		tx.Labels = append(tx.Labels, l)
	}
	return tx
}

// precomputed caches two sets for e's input, as the trainer would.
func precomputed(t *testing.T, bb model.Backbone, e *train.Engine, a, b *train.Texts) (train.Dataset, train.Dataset) {
	t.Helper()
	kind, layer := e.Input()
	var sets [2]train.Dataset
	for i, tx := range []*train.Texts{a, b} {
		m, err := train.Precompute(context.Background(), bb, kind, layer, tx, nil)
		if err != nil {
			t.Fatal(err)
		}
		sets[i] = m
	}
	return sets[0], sets[1]
}

// TestPrecomputeMatchesBackbone: the in-memory fp16 cache gives back what
// the backbone computes, within fp16 rounding, for every input kind.
func TestPrecomputeMatchesBackbone(t *testing.T) {
	ctx := context.Background()
	bb := backbones(t)["use-lite"]
	texts := imdbTexts(t, bb, "validation", 70)
	for _, c := range []struct {
		kind  train.InputKind
		layer int
	}{{train.InputStates, 1}, {train.InputAttended, 2}, {train.InputPooled, 2}, {train.InputIDs, 0}} {
		mem, err := train.Precompute(ctx, bb, c.kind, c.layer, texts, nil)
		if err != nil {
			t.Fatal(err)
		}
		idx := []int{3, 0, 69, 11}
		got, labels, err := mem.Load(ctx, idx)
		if err != nil {
			t.Fatal(err)
		}
		sub := texts.Subset(idx)
		want, err := train.ComputeInputs(ctx, bb, c.kind, c.layer, sub.IDs)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(labels, sub.Labels) || !slices.Equal(got.Offsets, want.Offsets) || len(got.IDs) != len(want.IDs) {
			t.Fatalf("kind %d: labels/offsets/ids differ", c.kind)
		}
		for _, pair := range [][2][]float32{{got.H, want.H}, {got.Z, want.Z}} {
			if len(pair[0]) != len(pair[1]) {
				t.Fatalf("kind %d: %d values, want %d", c.kind, len(pair[0]), len(pair[1]))
			}
			for i := range pair[0] {
				if d := math.Abs(float64(pair[0][i] - pair[1][i])); d > 1e-3*math.Max(1, math.Abs(float64(pair[1][i]))) {
					t.Fatalf("kind %d: value %d: %g, backbone %g", c.kind, i, pair[0][i], pair[1][i])
				}
			}
		}
	}
}

// TestFitLearnsAndResumes trains a bottleneck vPLM on real imdb sentences:
// the loss falls and validation accuracy beats chance; and a run stopped
// after its first epoch and resumed from the checkpoint ends bit-identical
// to the uninterrupted run (the same seed gives the same run).
func TestFitLearnsAndResumes(t *testing.T) {
	ctx := context.Background()
	bb := backbones(t)["use-lite"]
	spec, err := bb.(model.Trainable).TrainSpec()
	if err != nil {
		t.Fatal(err)
	}
	trainTx, valTx := imdbTexts(t, bb, "train", 192), imdbTexts(t, bb, "validation", 100)
	newEngine := func() *train.Engine {
		p, err := model.NewParams(bb, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 16, Head: model.HeadClassify, Labels: []string{"0", "1"}}, 5)
		if err != nil {
			t.Fatal(err)
		}
		e, err := train.New(spec, p, train.MethodAdapter, train.Config{Epochs: 3, BatchSize: 32, Seed: 9, Patience: -1}, bb.Device().(train.BLAS))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := newEngine()
	trainSet, valSet := precomputed(t, bb, e, trainTx, valTx)
	var losses []float64
	var ckpt1 []byte
	res, err := train.Fit(ctx, e, trainSet, valSet, train.FitOptions{
		Progress: func(p train.Progress) {
			if p.EpochDone {
				losses = append(losses, p.Loss)
			}
		},
		Checkpoint: func(epoch int, ck []byte) error {
			if epoch == 1 {
				ckpt1 = ck
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(losses) != 3 || !(losses[2] < losses[0]) {
		t.Fatalf("epoch losses %v: want 3, falling", losses)
	}
	if res.BestValAccuracy < 0.7 {
		t.Fatalf("best validation accuracy %.3f after 3 epochs: want >= 0.7", res.BestValAccuracy)
	}
	t.Logf("losses %v, best validation accuracy %.3f at epoch %d", losses, res.BestValAccuracy, res.BestEpoch)

	resumed := newEngine()
	res2, err := train.Fit(ctx, resumed, trainSet, valSet, train.FitOptions{Resume: ckpt1})
	if err != nil {
		t.Fatal(err)
	}
	if res2.BestValAccuracy != res.BestValAccuracy || res2.BestEpoch != res.BestEpoch {
		t.Fatalf("resumed run: best %.4f at %d, uninterrupted %.4f at %d", res2.BestValAccuracy, res2.BestEpoch, res.BestValAccuracy, res.BestEpoch)
	}
	a, b := res.Best.Encode(), res2.Best.Encode()
	if !slices.Equal(a, b) {
		t.Fatal("a resumed run's params differ from the uninterrupted run's")
	}
	// A checkpoint of another configuration is refused with a typed error.
	other, err := model.NewParams(bb, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 8, Head: model.HeadClassify, Labels: []string{"0", "1"}}, 5)
	if err != nil {
		t.Fatal(err)
	}
	oe, err := train.New(spec, other, train.MethodAdapter, train.Config{Epochs: 3}, bb.Device().(train.BLAS))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := train.Fit(ctx, oe, trainSet, valSet, train.FitOptions{Resume: ckpt1}); !errors.Is(err, model.ErrBadInput) {
		t.Fatalf("resume with another configuration: %v, want ErrBadInput", err)
	}
	bad := slices.Clone(ckpt1)
	bad[len(bad)/2] ^= 1
	if _, err := train.Fit(ctx, newEngine(), trainSet, valSet, train.FitOptions{Resume: bad}); !errors.Is(err, model.ErrBadInput) {
		t.Fatalf("resume from a corrupted checkpoint: %v, want ErrBadInput", err)
	}
}

// TestConfigValidation: bad hyperparameters are typed errors.
func TestConfigValidation(t *testing.T) {
	bb := backbones(t)["use-lite"]
	spec, err := bb.(model.Trainable).TrainSpec()
	if err != nil {
		t.Fatal(err)
	}
	p, err := model.NewParams(bb, model.ParamsSpec{Adapter: model.AdapterLoRA, Rank: 4, Head: model.HeadClassify, Labels: []string{"a", "b"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	nan := float32(math.NaN())
	for _, c := range []train.Config{
		{Epochs: -1}, {Epochs: 5000}, {BatchSize: -3}, {LR: -1}, {LR: nan}, {HeadLR: 100},
		{WeightDecay: 1.5}, {Warmup: 2}, {ClipNorm: float32(math.Inf(1))}, {Temperature: -1},
	} {
		if _, err := train.New(spec, p, train.MethodAdapter, c, bb.Device().(train.BLAS)); !errors.Is(err, model.ErrBadInput) {
			t.Errorf("config %+v: %v, want ErrBadInput", c, err)
		}
	}
	if _, err := train.New(spec, p, train.Method(9), train.Config{}, bb.Device().(train.BLAS)); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("unknown method: %v", err)
	}
	e, err := train.New(spec, p, train.MethodAdapter, train.Config{}, bb.Device().(train.BLAS))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Step(&train.Inputs{Offsets: []int{0, 2}, H: make([]float32, 7)}, []int{0}); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("inputs of the wrong size: %v", err)
	}
	if _, err := e.Step(&train.Inputs{Offsets: []int{0, 1}, H: make([]float32, 512)}, []int{2}); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("a label outside the head: %v", err)
	}
}

// TestFitResumeAfterEarlyStop: a run resumed from the checkpoint written
// when it stopped early does not train on.
func TestFitResumeAfterEarlyStop(t *testing.T) {
	ctx := context.Background()
	bb := backbones(t)["use-lite"]
	spec, err := bb.(model.Trainable).TrainSpec()
	if err != nil {
		t.Fatal(err)
	}
	trainTx, valTx := imdbTexts(t, bb, "train", 64), imdbTexts(t, bb, "validation", 40)
	newEngine := func() *train.Engine {
		p, err := model.NewParams(bb, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 8, Head: model.HeadClassify, Labels: []string{"0", "1"}}, 5)
		if err != nil {
			t.Fatal(err)
		}
		// A learning rate this small changes nothing measurable: validation
		// accuracy never improves after epoch 1, so patience 1 stops at 3.
		e, err := train.New(spec, p, train.MethodAdapter, train.Config{Epochs: 6, BatchSize: 32, LR: 1e-9, HeadLR: 1e-9, Patience: 1, HeadWarmup: -1}, bb.Device().(train.BLAS))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := newEngine()
	trainSet, valSet := precomputed(t, bb, e, trainTx, valTx)
	var last []byte
	res, err := train.Fit(ctx, e, trainSet, valSet, train.FitOptions{Checkpoint: func(_ int, ck []byte) error { last = ck; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if !res.EarlyStopped || res.Epochs >= 6 {
		t.Fatalf("run: %d epochs, early stopped %v: want an early stop", res.Epochs, res.EarlyStopped)
	}
	steps := 0
	res2, err := train.Fit(ctx, newEngine(), trainSet, valSet, train.FitOptions{Resume: last, Progress: func(p train.Progress) {
		if !p.EpochDone {
			steps++
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if steps != 0 || res2.Epochs != res.Epochs || !res2.EarlyStopped {
		t.Fatalf("resumed after the early stop: %d more steps, %d epochs (was %d), early stopped %v", steps, res2.Epochs, res.Epochs, res2.EarlyStopped)
	}
}
