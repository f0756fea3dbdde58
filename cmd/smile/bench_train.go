package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/bert"
	"github.com/smile-vplm/smile/model/plot"
	"github.com/smile-vplm/smile/model/train"
)

// task is a labelled dataset tokenized for one backbone.
type task struct {
	name             string
	labels           []string
	train, val, test *train.Texts
	skipped          int // examples whose text has no token
	// corpus is the whole training split's raw ids (before Prepare: a
	// long text whole), what a domain table is built from; served is the
	// test split's, for --table-with-test.
	corpus, served [][]int32
}

// loadTask reads a dataset pulled into the data dir (pulling it on first
// use) and tokenizes it exactly as serving does.
func loadTask(ctx context.Context, g *globals, bb model.Backbone, name string) (*task, error) {
	meta, err := datasets.ReadMeta(g.dataDir, name)
	if errors.Is(err, datasets.ErrNotPulled) {
		meta, err = datasets.Pull(ctx, g.dataDir, name, "", stderrProgress)
	}
	if err != nil {
		return nil, err
	}
	t := &task{name: name, labels: meta.Labels}
	index := map[string]int{}
	for i, l := range meta.Labels {
		index[l] = i
	}
	for _, split := range []string{"train", "validation", "test"} {
		exs, err := datasets.ReadSplit(g.dataDir, name, split)
		if err != nil {
			return nil, err
		}
		tx := &train.Texts{}
		for _, ex := range exs {
			ids, err := bb.Tokenizer().Encode(ex.Text)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", name, split, err)
			}
			if len(ids) == 0 {
				t.skipped++
				continue
			}
			li, ok := index[ex.Label]
			if !ok {
				return nil, fmt.Errorf("%s %s: label %q is not in the dataset's labels %v", name, split, ex.Label, meta.Labels)
			}
			tx.IDs = append(tx.IDs, bb.Prepare(ids))
			switch split {
			case "train":
				t.corpus = append(t.corpus, ids)
			case "test":
				t.served = append(t.served, ids)
			}
			tx.Labels = append(tx.Labels, li)
		}
		switch split {
		case "train":
			t.train = tx
		case "validation":
			t.val = tx
		default:
			t.test = tx
		}
	}
	return t, nil
}

// headStratified keeps n examples, the first ones of each label in the
// split's order, each label keeping its share (a stratified prefix).
func headStratified(t *train.Texts, n int) *train.Texts {
	if n >= t.Len() {
		return t
	}
	count := map[int]int{}
	for _, l := range t.Labels {
		count[l]++
	}
	quota := map[int]int{}
	for l, c := range count {
		quota[l] = max(1, c*n/t.Len())
	}
	var idx []int
	for i, l := range t.Labels {
		if quota[l] > 0 {
			quota[l]--
			idx = append(idx, i)
		}
	}
	return t.Subset(idx)
}

// accuracyLine is one line of `smile bench accuracy`.
type accuracyLine struct {
	Bench    string  `json:"bench"`
	Task     string  `json:"task"`
	Method   string  `json:"method"`
	AccMean  float64 `json:"acc_mean"`
	AccStd   float64 `json:"acc_std"`
	F1Mean   float64 `json:"f1_mean"`
	Seeds    int     `json:"seeds"`
	EpochS   float64 `json:"epoch_s"`
	Epochs   float64 `json:"epochs_mean"` // epochs run (early stopping)
	Backbone string  `json:"backbone"`
	Train    int     `json:"train"`
	Test     int     `json:"test"`
	Quick    bool    `json:"quick,omitempty"`
}

// accTasks are the accuracy benchmark's datasets.
var accTasks = []string{"spam", "imdb", "yelp", "amazon"}

// accMethod is one column of the accuracy table.
type accMethod struct {
	name    string
	method  train.Method
	adapter model.AdapterKind
	all     bool // adapters on every layer (default: the vPLM default, the upper half)
	plot    bool // plot mode: layers 1..cut from the task's domain table (cut: half the layers)
	// int8: no training of its own: the runs of the method named without
	// the "-int8" suffix, each run's best params stored as an int8 blob
	// (model.PrecisionInt8) and read back before the test split.
	int8 bool
}

// accMethods are the accuracy table's columns: "adapter" and "lora" are
// what a vPLM gets by default (r=64 on the upper half of the layers);
// "adapter-all" puts the bottleneck on every layer, which for a 2-layer
// backbone such as use-lite is a different trade-off (twice the adapter
// bytes, and the cache cut at the embeddings). "plot" is "adapter" in plot
// mode: the lower half of the layers replaced by the task's domain table
// (the vocabulary and the training split's n-grams), trained as it serves.
// "adapter-int8" and "lora-int8" are the same runs as "adapter" and "lora"
// (no training of their own), tested with the params as stored in int8.
var accMethods = []accMethod{
	{"linear", train.MethodHead, model.AdapterBottleneck, false, false, false},
	{"adapter", train.MethodAdapter, model.AdapterBottleneck, false, false, false},
	{"adapter-int8", train.MethodAdapter, model.AdapterBottleneck, false, false, true},
	{"adapter-all", train.MethodAdapter, model.AdapterBottleneck, true, false, false},
	{"lora", train.MethodAdapter, model.AdapterLoRA, false, false, false},
	{"lora-int8", train.MethodAdapter, model.AdapterLoRA, false, false, true},
	{"full", train.MethodFull, model.AdapterBottleneck, false, false, false},
	{"plot", train.MethodAdapter, model.AdapterBottleneck, false, true, false},
}

// int8Twin is the name of m's int8 method, "" if it has none.
func int8Twin(m accMethod) string {
	name := m.name + "-int8"
	if slices.ContainsFunc(accMethods, func(a accMethod) bool { return a.int8 && a.name == name }) {
		return name
	}
	return ""
}

// evalInt8 tests params as an int8 blob stores them: encoded, decoded, and
// run by a fresh engine. It returns the metrics, the predictions and the
// blob's size.
func evalInt8(ctx context.Context, spec *model.TrainSpec, p *model.Params, m train.Method, cfg train.Config, blas train.BLAS,
	test train.Dataset, labels int) (train.Metrics, []int, int, error) {
	blob, err := p.EncodeAs(model.PrecisionInt8)
	if err != nil {
		return train.Metrics{}, nil, 0, err
	}
	q, err := model.DecodeParams(blob)
	if err != nil {
		return train.Metrics{}, nil, 0, err
	}
	e, err := train.New(spec, q, m, cfg, blas)
	if err != nil {
		return train.Metrics{}, nil, 0, err
	}
	pred, gold, err := train.Predictions(ctx, e, test, nil)
	if err != nil {
		return train.Metrics{}, nil, 0, err
	}
	return train.Evaluate(pred, gold, labels), pred, len(blob), nil
}

// benchAccuracy trains every method on every task with 3 seeds and prints
// test-split accuracy and macro-F1 (mean and std over seeds).
func benchAccuracy(ctx context.Context, g *globals, o *benchOpts, w io.Writer) error {
	bb, err := g.backbone(ctx, zoo.DefaultModel)
	if err != nil {
		return err
	}
	defer bb.Close()
	spec, err := bb.(model.Trainable).TrainSpec()
	if err != nil {
		return err
	}
	blas, ok := bb.Device().(train.BLAS)
	if !ok {
		return fmt.Errorf("bench accuracy: device %s has no host GEMM", bb.Device().Name())
	}
	tasks := o.tasks
	seeds := o.seeds
	if o.quick && len(tasks) == len(accTasks) {
		tasks = []string{"imdb", "spam"}
	}
	if o.quick {
		seeds = 1
	}
	selected := func(name string) bool { return len(o.methods) == 0 || slices.Contains(o.methods, name) }
	// methods are the ones trained: the selected ones, and those whose
	// int8 twin is selected.
	var methods []accMethod
	for _, m := range accMethods {
		if !m.int8 && (selected(m.name) || int8Twin(m) != "" && selected(int8Twin(m))) {
			methods = append(methods, m)
		}
	}
	for _, name := range tasks {
		t, err := loadTask(ctx, g, bb, name)
		if err != nil {
			return err
		}
		if o.quick {
			t.train, t.val, t.test = headStratified(t.train, 128), headStratified(t.val, 48), headStratified(t.test, 100)
		}
		if o.maxTrain > 0 {
			t.train = headStratified(t.train, o.maxTrain)
		}
		// Representations are computed once per task and input layer and
		// shared by every method and seed, as the trainer's cache is.
		cache := map[[3]int][3]train.Dataset{}
		var table *domainTable
		defer func() {
			if table != nil {
				table.close()
			}
		}()
		for _, m := range methods {
			var lower model.Lower
			if m.plot {
				if table == nil {
					corpus, _, err := domainCorpus(ctx, g, bb, t.tableTask(o.quick), o)
					if err != nil {
						return err
					}
					if table, err = buildDomainTable(ctx, bb, bb.Info().Layers/2, corpus, int64(o.tableMB)<<20, o.order == "frequency"); err != nil {
						return err
					}
				}
				lower = table.table
			}
			// The training split reads the table leave-one-out (an n-gram
			// no other text of the table's corpus holds is hidden from the
			// text that does), as serving reads unseen texts; the trainer
			// does the same when a table was built from the training set.
			trainLower := lower
			if m.plot && !o.noLOO {
				trainLower = plot.LeaveOneOut{Table: table.table, Counts: table.counts}
			}
			twin := int8Twin(m)
			if twin != "" && !selected(twin) {
				twin = ""
			}
			var accs, f1s, epochS, epochs, accs8, f1s8 []float64
			for seed := 1; seed <= seeds; seed++ {
				ps := model.ParamsSpec{Adapter: m.adapter, Rank: model.DefaultRank, Head: model.HeadClassify, Labels: t.labels}
				if m.all {
					for l := 1; l <= bb.Info().Layers; l++ {
						ps.Layers = append(ps.Layers, l)
					}
				}
				p, err := model.NewParams(bb, ps, uint64(seed))
				if err != nil {
					return err
				}
				cfg := train.Config{Seed: uint64(seed)}
				if o.quick {
					cfg.Epochs = 3
				}
				e, err := train.New(spec, p, m.method, cfg, blas)
				if err != nil {
					return err
				}
				kind, layer := e.Input()
				key := [3]int{int(kind), layer, 0}
				if m.plot {
					key[2] = 1
				}
				sets, ok := cache[key]
				if !ok {
					for i, tx := range []*train.Texts{t.train, t.val, t.test} {
						l := lower
						if i == 0 {
							l = trainLower
						}
						ds, err := train.PrecomputeLower(ctx, bb, l, kind, layer, tx, nil)
						if err != nil {
							return err
						}
						sets[i] = ds
					}
					cache[key] = sets
				}
				res, err := train.Fit(ctx, e, sets[0], sets[1], train.FitOptions{})
				if err != nil {
					return fmt.Errorf("%s %s seed %d: %w", name, m.name, seed, err)
				}
				pred, gold, err := train.Predictions(ctx, e, sets[2], nil)
				if err != nil {
					return err
				}
				mt := train.Evaluate(pred, gold, len(t.labels))
				accs, f1s = append(accs, mt.Accuracy), append(f1s, mt.MacroF1)
				epochS, epochs = append(epochS, res.EpochSeconds), append(epochs, float64(res.Epochs))
				fmt.Fprintf(os.Stderr, "accuracy %s %s seed %d: test %.4f (best val %.4f at epoch %d of %d, %.2f s/epoch)\n",
					name, m.name, seed, mt.Accuracy, res.BestValAccuracy, res.BestEpoch, res.Epochs, res.EpochSeconds)
				if twin != "" {
					mt8, pred8, size, err := evalInt8(ctx, spec, res.Best, m.method, cfg, blas, sets[2], len(t.labels))
					if err != nil {
						return fmt.Errorf("%s %s seed %d: %w", name, twin, seed, err)
					}
					accs8, f1s8 = append(accs8, mt8.Accuracy), append(f1s8, mt8.MacroF1)
					same := 0
					for i := range pred {
						if pred[i] == pred8[i] {
							same++
						}
					}
					fmt.Fprintf(os.Stderr, "accuracy %s %s seed %d: test %.4f (%d of %d predictions as %s's; blob %d bytes, fp16 %d)\n",
						name, twin, seed, mt8.Accuracy, same, len(pred), m.name, size, len(res.Best.Encode()))
				}
			}
			es, _ := meanStd(epochS)
			ep, _ := meanStd(epochs)
			line := func(method string, accs, f1s []float64) error {
				mean, std := meanStd(accs)
				f1, _ := meanStd(f1s)
				return emit(w, accuracyLine{Bench: "accuracy", Task: name, Method: method, AccMean: round(mean, 4), AccStd: round(std, 4),
					F1Mean: round(f1, 4), Seeds: seeds, EpochS: round(es, 3), Epochs: ep, Backbone: bb.Info().Name,
					Train: t.train.Len(), Test: t.test.Len(), Quick: o.quick})
			}
			if selected(m.name) {
				if err := line(m.name, accs, f1s); err != nil {
					return err
				}
			}
			if twin != "" {
				if err := line(twin, accs8, f1s8); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// meanStd is the mean and the sample standard deviation (0 for one value).
func meanStd(v []float64) (mean, std float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	if len(v) < 2 {
		return mean, 0
	}
	for _, x := range v {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(v)-1))
}

// trainLine is one line of `smile bench train`.
type trainLine struct {
	Bench    string  `json:"bench"`
	Backbone string  `json:"backbone"`
	Cached   bool    `json:"cached"`
	EpochS   float64 `json:"epoch_s"`
	Speedup  float64 `json:"speedup"` // uncached epoch time over cached, same run
	Layers   []int   `json:"adapter_layers"`
	Examples int     `json:"examples"`
	Tokens   int     `json:"tokens"`
	CacheS   float64 `json:"cache_build_s,omitempty"` // one-time cost of the cache (cached line)
	Rounds   int     `json:"rounds"`
}

// benchTrain times adapter-training epochs from the representation cache
// against epochs that run the frozen lower layers every time, interleaved
// round by round (the machine is shared), for use-lite on imdb and for
// BERT-base geometry (random weights, 128-token sequences) with adapters on
// its top 4 of 12 layers.
func benchTrain(ctx context.Context, g *globals, o *benchOpts, w io.Writer) error {
	rounds := 3
	if o.quick {
		rounds = 2
	}
	for _, name := range o.backbones {
		var (
			bb     model.Backbone
			texts  *train.Texts
			layers []int
			labels = []string{"0", "1"}
			err    error
		)
		switch name {
		case "use-lite":
			if bb, err = g.backbone(ctx, zoo.DefaultModel); err != nil {
				return err
			}
			t, err := loadTask(ctx, g, bb, "imdb")
			if err != nil {
				bb.Close()
				return err
			}
			texts, labels = t.train, t.labels
			if o.quick {
				texts = headStratified(texts, 320)
			}
			layers = model.DefaultAdapterLayers(bb.Info().Layers)
		case "bert-base":
			dev, err := g.device()
			if err != nil {
				return err
			}
			if bb, err = bert.NewRandom(dev, bert.BaseConfig(), 1); err != nil {
				return err
			}
			n := 128
			if o.quick {
				n = 16
			}
			texts = randomTexts(bb.Info().VocabSize, n, 128, 2)
			layers = []int{9, 10, 11, 12}
		default:
			return usagef("--backbone %q: want use-lite or bert-base", name)
		}
		if err := benchTrainOne(ctx, bb, texts, layers, labels, rounds, w); err != nil {
			bb.Close()
			return err
		}
		bb.Close()
	}
	return nil
}

// randomTexts makes n sequences of length ids each with random labels.
func randomTexts(vocab, n, length, classes int) *train.Texts {
	rng := rand.New(rand.NewPCG(7, 7))
	t := &train.Texts{}
	for range n {
		s := make([]int32, length)
		for i := range s {
			s[i] = int32(1 + rng.IntN(vocab-1))
		}
		t.IDs = append(t.IDs, s)
		t.Labels = append(t.Labels, rng.IntN(classes))
	}
	return t
}

func benchTrainOne(ctx context.Context, bb model.Backbone, texts *train.Texts, layers []int, labels []string, rounds int, w io.Writer) error {
	spec, err := bb.(model.Trainable).TrainSpec()
	if err != nil {
		return err
	}
	blas, ok := bb.Device().(train.BLAS)
	if !ok {
		return fmt.Errorf("bench train: device %s has no host GEMM", bb.Device().Name())
	}
	p, err := model.NewParams(bb, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: model.DefaultRank, Layers: layers,
		Head: model.HeadClassify, Labels: labels}, 1)
	if err != nil {
		return err
	}
	e, err := train.New(spec, p, train.MethodAdapter, train.Config{}, blas)
	if err != nil {
		return err
	}
	kind, layer := e.Input()
	start := time.Now()
	cached, err := train.Precompute(ctx, bb, kind, layer, texts, nil)
	if err != nil {
		return err
	}
	build := time.Since(start).Seconds()
	uncached := train.Uncached(bb, kind, layer, texts)
	tokens := 0
	for _, s := range texts.IDs {
		tokens += len(s)
	}
	var tc, tu []float64
	for range rounds {
		for _, c := range []struct {
			ds  train.Dataset
			out *[]float64
		}{{cached, &tc}, {uncached, &tu}} {
			s, err := timeEpoch(ctx, e, c.ds)
			if err != nil {
				return err
			}
			*c.out = append(*c.out, s)
		}
	}
	mc, mu := median(tc), median(tu)
	info := bb.Info()
	name := info.Name
	if info.Family == bert.Family {
		name = "bert-base"
	}
	for _, l := range []trainLine{
		{Bench: "train", Backbone: name, Cached: true, EpochS: round(mc, 3), Speedup: round(mu/mc, 2), Layers: layers,
			Examples: texts.Len(), Tokens: tokens, CacheS: round(build, 3), Rounds: rounds},
		{Bench: "train", Backbone: name, Cached: false, EpochS: round(mu, 3), Speedup: 1, Layers: layers,
			Examples: texts.Len(), Tokens: tokens, Rounds: rounds},
	} {
		if err := emit(w, l); err != nil {
			return err
		}
	}
	return nil
}

// timeEpoch runs one training epoch (batches of the engine's size, fixed
// order) and returns its wall time in seconds.
func timeEpoch(ctx context.Context, e *train.Engine, ds train.Dataset) (float64, error) {
	bs := e.Config().BatchSize
	n := ds.Len()
	idx := make([]int, 0, bs)
	start := time.Now()
	for b := 0; b < n; b += bs {
		idx = idx[:0]
		for i := b; i < min(b+bs, n); i++ {
			idx = append(idx, i)
		}
		in, labels, err := ds.Load(ctx, idx)
		if err != nil {
			return 0, err
		}
		if _, err := e.Step(in, labels); err != nil {
			return 0, err
		}
	}
	return time.Since(start).Seconds(), nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
