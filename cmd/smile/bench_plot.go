package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/bert"
	"github.com/smile-vplm/smile/model/plot"
	"github.com/smile-vplm/smile/model/train"
	"github.com/smile-vplm/smile/storage"
)

// plotLine is one line of `smile bench plot`.
type plotLine struct {
	Bench       string      `json:"bench"`
	Backbone    string      `json:"backbone"`
	Task        string      `json:"task"`
	Cut         int         `json:"cut"`
	Layers      int         `json:"layers"`
	Entries     int         `json:"entries"`
	Unigrams    int         `json:"unigrams"`
	Bigrams     int         `json:"bigrams"`
	Trigrams    int         `json:"trigrams"`
	TableBytes  int64       `json:"table_bytes"` // stored entry values
	DiskBytes   int64       `json:"disk_bytes"`  // the Badger directory after the build
	MemoryBytes int64       `json:"memory_bytes"`
	BudgetBytes int64       `json:"budget_bytes"`
	BuildS      float64     `json:"build_s"`
	WarmS       float64     `json:"warm_s"`
	HitRate     float64     `json:"hit_rate"`
	Levels      plot.Levels `json:"levels"`
	Texts       int         `json:"texts"`
	MeanTokens  float64     `json:"mean_tokens"`
	Batch       int         `json:"batch"`
	Rounds      int         `json:"rounds"`
	SeqFull     float64     `json:"seq_per_s_full"`
	SeqPlot     float64     `json:"seq_per_s_plot"`
	Speedup     float64     `json:"speedup"`
	LookupShare float64     `json:"lookup_share"` // of a plot batch's time, spent in table lookups
	Corpus      []string    `json:"corpus"`       // datasets whose training splits the table was built from
	Order       string      `json:"order"`
	Quick       bool        `json:"quick,omitempty"`
}

// domainTable is a PLOT table built for a benchmark in its own Badger
// store: the backbone's vocabulary plus a corpus's most frequent bigrams
// and trigrams within a budget, the same list a `smile table build` job
// makes.
type domainTable struct {
	table            *plot.Table
	grams            []plot.Gram
	uni, bi, tri     int
	entryBytes, disk int64
	budget           int64
	buildS, warmS    float64
	counts           *plot.Counter // the corpus's n-gram counts
	store            *storage.Store
	dir              string
}

func (d *domainTable) close() {
	d.store.Close()
	os.RemoveAll(d.dir)
}

// buildDomainTable counts corpus's n-grams, builds the table (timed: the
// counting, the lower layers on every missing n-gram, the Badger writes)
// and warms its memory cache.
func buildDomainTable(ctx context.Context, bb model.Backbone, cut int, corpus [][]int32, budget int64, byFrequency bool) (*domainTable, error) {
	spec, err := bb.(model.Trainable).TrainSpec()
	if err != nil {
		return nil, err
	}
	merger, err := plot.NewMerger(spec, cut)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "smile-bench-plot-")
	if err != nil {
		return nil, err
	}
	opts := storage.DefaultOptions(dir)
	opts.SyncWrites = false // a throwaway store
	opts.Logger = slog.New(slog.DiscardHandler)
	st, err := storage.Open(opts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d := &domainTable{store: st, dir: dir, budget: budget}
	start := time.Now()
	c := plot.NewCounter()
	for _, ids := range corpus {
		c.AddText(bb, ids)
	}
	w := merger.Width()
	ranked := c.Ranked()
	if byFrequency {
		ranked = c.ByFrequency()
	}
	d.grams, _ = plot.Extend(plot.Vocabulary(bb.Info().VocabSize), ranked, w, budget)
	d.counts = c
	kv, err := st.PlotEntries(bb.Info().Name, cut)
	if err != nil {
		d.close()
		return nil, err
	}
	entries := plot.Entries{KV: kv}
	if _, err := plot.Build(ctx, bb, cut, d.grams, entries, 0, nil, nil); err != nil {
		d.close()
		return nil, err
	}
	d.buildS = time.Since(start).Seconds()
	for _, g := range d.grams {
		switch g.N {
		case 1:
			d.uni++
		case 2:
			d.bi++
		default:
			d.tri++
		}
	}
	if _, d.entryBytes, err = kv.Usage(); err != nil {
		d.close()
		return nil, err
	}
	id, err := plot.TableID(bb.Info().Name, cut, d.grams)
	if err != nil {
		d.close()
		return nil, err
	}
	d.table = plot.NewTable(id, merger, d.grams, entries, d.entryBytes, func(g plot.Gram, err error) {
		slog.Warn("plot table entry", "ngram", g.String(), "err", err)
	})
	start = time.Now()
	d.table.Warm(d.grams)
	d.warmS = time.Since(start).Seconds()
	if err := st.Sync(); err != nil {
		d.close()
		return nil, err
	}
	d.disk = dirBytes(dir)
	return d, nil
}

// dirBytes is the disk space the files under dir take (allocated blocks:
// Badger preallocates its memtable and value-log files sparsely).
func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if fi, err := e.Info(); err == nil {
				n += allocated(fi)
			}
		}
		return nil
	})
	return n
}

// tableTask is t as a domain table reads it: a smoke run (quick) builds
// its table from the first 200 training texts.
func (t *task) tableTask(quick bool) *task {
	if !quick {
		return t
	}
	return &task{name: t.name, corpus: t.corpus[:min(len(t.corpus), 200)], served: t.served}
}

// domainCorpus is a task's domain corpus: its training split's texts and
// those of the extra datasets' training splits (tokenized by tok), never a
// validation or test split, unless --table-with-test adds the task's test
// texts (unlabelled): a tenant scoring a known set of texts, and the upper
// bound of what coverage buys. It returns the corpus's names too.
func domainCorpus(ctx context.Context, g *globals, tok model.Backbone, t *task, o *benchOpts) ([][]int32, []string, error) {
	corpus, names := t.corpus, []string{t.name}
	if o.withTest {
		corpus = append(slices.Clip(corpus), t.served...)
		names = append(names, t.name+"/test")
	}
	for _, name := range o.corpus {
		if name == t.name {
			continue
		}
		x, err := loadTask(ctx, g, tok, name)
		if err != nil {
			return nil, nil, err
		}
		corpus = append(slices.Clip(corpus), x.corpus...)
		names = append(names, name)
	}
	return corpus, names, nil
}

// plotTableBudget bounds a domain table's n-grams beyond the vocabulary
// (the server's default too).
const plotTableBudget = 512 << 20

// benchPlot measures lower-layer skipping for use-lite (cut 1 of 2) on
// each task and BERT-base geometry (generated weights, cut 6 of 12) on
// imdb: the domain table (vocabulary + the task's training split) built
// into Badger, the hit rate on the test split, and serving throughput of
// the test split through the Runner in full and plot mode (a default vPLM:
// bottleneck r=64 on the upper half), interleaved round by round.
// BERT-base reads use-lite's SentencePiece ids (valid in its 30,522-id
// vocabulary) with [CLS]/[SEP] added, so its n-grams are those of real
// text.
func benchPlot(ctx context.Context, g *globals, o *benchOpts, w io.Writer) error {
	ul, err := g.backbone(ctx, zoo.DefaultModel)
	if err != nil {
		return err
	}
	defer ul.Close()
	tasks := o.tasks
	if o.quick && len(tasks) == len(accTasks) {
		tasks = []string{"imdb"}
	}
	for _, name := range o.backbones {
		switch name {
		case "use-lite":
			for _, task := range tasks {
				t, err := loadTask(ctx, g, ul, task)
				if err != nil {
					return err
				}
				if err := benchPlotOne(ctx, g, ul, ul, "use-lite", t, 1, o, w); err != nil {
					return err
				}
			}
		case "bert-base":
			if o.quick {
				continue // ~1 min of table build for 30,522 unigrams; the path is use-lite's
			}
			dev, err := g.device()
			if err != nil {
				return err
			}
			bb, err := bert.NewRandom(dev, bert.BaseConfig(), 1)
			if err != nil {
				return err
			}
			t, err := loadTask(ctx, g, ul, "imdb")
			if err != nil {
				bb.Close()
				return err
			}
			for _, tx := range []*train.Texts{t.train, t.val, t.test} {
				for i, ids := range tx.IDs {
					tx.IDs[i] = bb.Prepare(ids)
				}
			}
			err = benchPlotOne(ctx, g, ul, bb, "bert-base", t, 6, o, w)
			bb.Close()
			if err != nil {
				return err
			}
		default:
			return usagef("--backbone %q: want use-lite or bert-base", name)
		}
	}
	return nil
}

func benchPlotOne(ctx context.Context, g *globals, ul, bb model.Backbone, name string, t *task, cut int, o *benchOpts, w io.Writer) error {
	corpus, names, err := domainCorpus(ctx, g, ul, t.tableTask(o.quick), o)
	if err != nil {
		return err
	}
	d, err := buildDomainTable(ctx, bb, cut, corpus, int64(o.tableMB)<<20, o.order == "frequency")
	if err != nil {
		return err
	}
	defer d.close()
	fmt.Fprintf(os.Stderr, "plot %s %s: table of %d n-grams (%d unigrams, %d bigrams, %d trigrams), %.1f MB, built in %.1f s\n",
		name, t.name, len(d.grams), d.uni, d.bi, d.tri, float64(d.entryBytes)/1e6, d.buildS)
	test := t.test.IDs
	// Hit rate: one pass of the test split through the table.
	before := d.table.Stats()
	width := bb.StateWidth(cut)
	var buf []float32
	tokens := 0
	for _, ids := range test {
		buf = slices.Grow(buf[:0], len(ids)*width)[:len(ids)*width]
		if err := d.table.Lower(ids, buf); err != nil {
			return err
		}
		tokens += len(ids)
	}
	after := d.table.Stats()
	lv := after.Levels
	lv.Full -= before.Full
	lv.Partial -= before.Partial
	lv.Unigram -= before.Unigram
	lv.Zero -= before.Zero

	// Throughput: the same batches in both modes, alternating.
	runner := model.NewRunner(bb)
	defer runner.Close()
	p, err := model.NewParams(bb, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: model.DefaultRank,
		Layers: model.DefaultAdapterLayers(bb.Info().Layers), Head: model.HeadClassify, Labels: t.labels}, 1)
	if err != nil {
		return err
	}
	dp, err := runner.UploadParams(p)
	if err != nil {
		return err
	}
	defer dp.Free()
	const batch = 32
	rounds := 5
	if o.quick {
		rounds = 2
	}
	items := make([]model.Item, len(test))
	pass := func(plotMode bool) (float64, time.Duration, error) {
		for i, ids := range test {
			items[i] = model.Item{IDs: ids, Params: dp}
			if plotMode {
				items[i].Lower = d.table
			}
		}
		lookup := time.Duration(0)
		start := time.Now()
		for b := 0; b < len(items); b += batch {
			if _, err := runner.Forward(ctx, items[b:min(b+batch, len(items))]); err != nil {
				return 0, 0, err
			}
		}
		el := time.Since(start)
		if plotMode {
			// Time the lookups alone, outside the measured pass.
			ls := time.Now()
			for _, ids := range test {
				buf = slices.Grow(buf[:0], len(ids)*width)[:len(ids)*width]
				if err := d.table.Lower(ids, buf); err != nil {
					return 0, 0, err
				}
			}
			lookup = time.Since(ls)
		}
		return float64(len(items)) / el.Seconds(), lookup, nil
	}
	if _, _, err := pass(false); err != nil { // warm-up
		return err
	}
	if _, _, err := pass(true); err != nil {
		return err
	}
	var fulls, plots, shares []float64
	for range rounds {
		f, _, err := pass(false)
		if err != nil {
			return err
		}
		pl, lk, err := pass(true)
		if err != nil {
			return err
		}
		fulls, plots = append(fulls, f), append(plots, pl)
		shares = append(shares, lk.Seconds()*pl/float64(len(items)))
	}
	full, pm := median(fulls), median(plots)
	line := plotLine{Bench: "plot", Backbone: name, Task: t.name, Cut: cut, Layers: bb.Info().Layers,
		Entries: len(d.grams), Unigrams: d.uni, Bigrams: d.bi, Trigrams: d.tri,
		TableBytes: d.entryBytes, DiskBytes: d.disk, MemoryBytes: d.table.Stats().MemoryBytes, BudgetBytes: d.budget,
		BuildS: round(d.buildS, 2), WarmS: round(d.warmS, 2), HitRate: round(lv.HitRate(), 4), Levels: lv,
		Corpus: names, Order: o.order, Texts: len(test), MeanTokens: round(float64(tokens)/float64(len(test)), 1), Batch: batch, Rounds: rounds,
		SeqFull: round(full, 1), SeqPlot: round(pm, 1), Speedup: round(pm/full, 3), LookupShare: round(median(shares), 3), Quick: o.quick}
	return emit(w, line)
}
