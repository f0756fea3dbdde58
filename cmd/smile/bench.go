package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/gpu/prof"
	"github.com/smile-vplm/smile/internal/benchdata"
	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/bert"
)

type benchOpts struct {
	quick     bool
	asJSON    bool
	backbones []string
	serve     serveFlags
	cpuprof   string
	tasks     []string
	methods   []string
	seeds     int
	maxTrain  int
	corpus    []string
	tableMB   int
	order     string
	noLOO     bool
	withTest  bool
	// density
	models      int
	concurrency int
	densityDir  string
	precision   string
}

func newBenchCmd(g *globals) *cobra.Command {
	o := &benchOpts{}
	cmd := &cobra.Command{
		Use:   "bench gemm|forward|serve|train|accuracy|plot|density",
		Short: "Benchmarks of the compute path, printed as JSON lines",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if o.cpuprof != "" {
				stop, err := startCPUProfile(o.cpuprof)
				if err != nil {
					return err
				}
				defer stop()
			}
			switch args[0] {
			case "gemm":
				return benchGemm(cmd.Context(), g, o, out)
			case "forward":
				return benchForward(cmd.Context(), g, o, out)
			case "serve":
				return benchServe(cmd.Context(), g, o, out)
			case "train":
				return benchTrain(cmd.Context(), g, o, out)
			case "density":
				return benchDensity(cmd.Context(), g, o, out)
			case "cluster":
				return benchCluster(cmd.Context(), g, o, out)
			case "plot":
				if err := checkTasks(o.tasks); err != nil {
					return err
				}
				if err := checkTableFlags(o); err != nil {
					return err
				}
				return benchPlot(cmd.Context(), g, o, out)
			case "accuracy":
				if o.seeds < 1 || o.seeds > 100 {
					return usagef("--seeds %d: want 1..100", o.seeds)
				}
				if o.maxTrain < 0 {
					return usagef("--max-train %d: want 0 (all) or a positive count", o.maxTrain)
				}
				if err := checkTableFlags(o); err != nil {
					return err
				}
				if err := checkTasks(o.tasks); err != nil {
					return err
				}
				for _, m := range o.methods {
					if !slices.ContainsFunc(accMethods, func(a accMethod) bool { return a.name == m }) {
						return usagef("--method %q: want linear, adapter, adapter-int8, adapter-all, lora, lora-int8, full or plot", m)
					}
				}
				return benchAccuracy(cmd.Context(), g, o, out)
			default:
				return usagef("bench: unknown benchmark %q (want gemm, forward, serve, train, accuracy, plot or density)", args[0])
			}
		},
	}
	cmd.Flags().BoolVar(&o.quick, "quick", false, "short runs (the whole benchmark in well under 60 s)")
	cmd.Flags().BoolVar(&o.asJSON, "json", false, "JSON lines (the only output format today; accepted for scripts)")
	cmd.Flags().StringSliceVar(&o.backbones, "backbone", []string{"use-lite", "bert-base"}, "forward, serve, train, plot: backbones to measure")
	cmd.Flags().StringSliceVar(&o.tasks, "task", accTasks, "accuracy, plot: datasets to train on or build tables from (--quick: accuracy imdb and spam, plot imdb)")
	cmd.Flags().StringSliceVar(&o.methods, "method", nil, "accuracy: methods to compare (default all: linear, adapter, adapter-int8, adapter-all, lora, lora-int8, full, plot; the int8 rows reuse the adapter and lora runs, quantised)")
	cmd.Flags().IntVar(&o.seeds, "seeds", 3, "accuracy: seeds per task and method (--quick: 1)")
	cmd.Flags().IntVar(&o.maxTrain, "max-train", 0, "accuracy: train on a stratified subset of at most this many training examples (0: all; validation and test stay whole)")
	cmd.Flags().StringSliceVar(&o.corpus, "corpus", nil, "plot, accuracy: more datasets whose training splits join each task's own in its domain table (for example brown,imdb,yelp,amazon)")
	cmd.Flags().IntVar(&o.tableMB, "table-mb", plotTableBudget>>20, "plot, accuracy: budget of a domain table's bigrams and trigrams, MiB")
	cmd.Flags().StringVar(&o.order, "order", "coverage", "plot, accuracy: which n-grams a budgeted table keeps first: coverage (bigrams, then trigrams) or frequency")
	cmd.Flags().BoolVar(&o.noLOO, "no-leave-one-out", false, "accuracy: plot mode trains on the table as it is, every training n-gram found (the trainer reads it leave-one-out)")
	cmd.Flags().BoolVar(&o.withTest, "table-with-test", false, "plot, accuracy: also build each task's domain table from its test split's texts (unlabelled): full coverage, the upper bound of what a bigger corpus buys")
	cmd.Flags().IntVar(&o.models, "models", 0, "density: vPLMs to create (default 100000; --quick: 2000)")
	cmd.Flags().IntVar(&o.concurrency, "concurrency", 512, "density: creates in flight at once (clients of one node)")
	cmd.Flags().StringVar(&o.precision, "precision", "fp16", "density: how the vPLMs' params are stored: fp16 or int8")
	cmd.Flags().StringVar(&o.densityDir, "dir", "", "density: where the throwaway data directory goes (default: the system temp directory)")
	cmd.Flags().StringVar(&o.cpuprof, "cpuprofile", "", "write a CPU profile of the benchmark to this file (go tool pprof)")
	addServeFlags(cmd.Flags(), &o.serve)
	return cmd
}

// checkTableFlags checks the domain-table flags of plot and accuracy.
func checkTableFlags(o *benchOpts) error {
	if o.tableMB < 1 || o.tableMB > 1<<20 {
		return usagef("--table-mb %d: want 1..1048576", o.tableMB)
	}
	for _, c := range o.corpus {
		if c != "brown" && !slices.Contains(accTasks, c) {
			return usagef("--corpus %q: want brown or one of %v", c, accTasks)
		}
	}
	if o.order != "coverage" && o.order != "frequency" {
		return usagef("--order %q: want coverage or frequency", o.order)
	}
	return nil
}

// checkTasks checks --task values.
func checkTasks(tasks []string) error {
	for _, t := range tasks {
		if !slices.Contains(accTasks, t) {
			return usagef("--task %q: want one of %v", t, accTasks)
		}
	}
	return nil
}

func emit(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// gemmShapes are BERT-base's: the attention projections and the two FFN GEMMs
// for a 128-token sequence.
var gemmShapes = [][3]int{{128, 768, 768}, {128, 3072, 768}, {128, 768, 3072}}

func benchGemm(ctx context.Context, g *globals, o *benchOpts, w io.Writer) error {
	minTime := 2 * time.Second
	if o.quick {
		minTime = 300 * time.Millisecond
	}
	res := map[string]map[[3]int]float64{}
	for _, backend := range cpu.Available() {
		dev, err := cpu.New(cpu.Config{Threads: g.threads, Backend: backend})
		if err != nil {
			return err
		}
		res[backend] = map[[3]int]float64{}
		for _, s := range gemmShapes {
			gf, err := gpu.BenchGemm(ctx, dev, s[0], s[1], s[2], minTime)
			if err != nil {
				return err
			}
			res[backend][s] = gf
			if err := emit(w, gemmLine{"gemm", backendLabel(backend), s[0], s[1], s[2], round(gf, 1), dev.Threads()}); err != nil {
				return err
			}
		}
	}
	if len(res) == 2 {
		for _, s := range gemmShapes {
			if err := emit(w, gemmRatio{"gemm-ratio", s[0], s[1], s[2], round(res["openblas"][s]/res["purego"][s], 2)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// gemmLine is one line of `smile bench gemm` (field order as documented).
type gemmLine struct {
	Bench   string  `json:"bench"`
	Backend string  `json:"backend"`
	M       int     `json:"m"`
	N       int     `json:"n"`
	K       int     `json:"k"`
	GFlops  float64 `json:"gflops"`
	Threads int     `json:"threads"`
}

// gemmRatio compares the two backends on one shape, measured in the same run.
type gemmRatio struct {
	Bench         string  `json:"bench"`
	M             int     `json:"m"`
	N             int     `json:"n"`
	K             int     `json:"k"`
	CPUOverPurego float64 `json:"cpu_over_purego"`
}

// backendLabel is the name the JSON uses: "cpu" is the default
// (OpenBLAS) backend, "purego" the fallback.
func backendLabel(b string) string {
	if b == "openblas" {
		return "cpu"
	}
	return b
}

func round(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(v*p+0.5)) / p
}

// forwardResult is one line of `smile bench forward`.
type forwardResult struct {
	Bench        string  `json:"bench"`
	Backbone     string  `json:"backbone"`
	Backend      string  `json:"backend"`
	Texts        string  `json:"texts,omitempty"`
	Batch        int     `json:"batch"`
	Seq          int     `json:"seq"`
	MeanTokens   float64 `json:"mean_tokens"`
	SeqPerS      float64 `json:"seq_per_s"`
	SeqPerCPUS   float64 `json:"seq_per_cpu_s"` // texts per CPU-second of the process: steadier on a shared machine
	GemmFraction float64 `json:"gemm_fraction"`
	AttnFraction float64 `json:"attention_fraction"` // share of wall time in Device.Attention
	GemmGFlops   float64 `json:"gemm_gflops"`
	TotalOverGem float64 `json:"total_over_gemm"`
	Passes       int     `json:"passes"`
	Threads      int     `json:"threads"`
	Tokenize     bool    `json:"includes_tokenize"`
}

func benchForward(ctx context.Context, g *globals, o *benchOpts, w io.Writer) error {
	base, err := g.device()
	if err != nil {
		return err
	}
	dev := prof.Wrap(base)
	for _, b := range o.backbones {
		if b != "use-lite" && b != "bert-base" {
			return usagef("--backbone %q: want use-lite or bert-base", b)
		}
	}
	if slices.Contains(o.backbones, "use-lite") {
		if err := benchUSE(ctx, g, o, base, dev, w); err != nil {
			return err
		}
	}
	if !slices.Contains(o.backbones, "bert-base") {
		return nil
	}
	// bert-base geometry with generated weights: speed does not depend on
	// the values.
	cfg := bert.BaseConfig()
	bm, err := bert.NewRandom(dev, cfg, 1)
	if err != nil {
		return err
	}
	defer bm.Close()
	bpasses := 3
	if o.quick {
		bpasses = 1
	}
	r, err := timeIDs(ctx, bm, dev, randomIDs(32, 128, cfg.VocabSize), bpasses)
	if err != nil {
		return err
	}
	r.Backbone, r.Backend, r.Threads, r.Batch, r.Seq = "bert-base", base.Name(), base.Threads(), 32, 128
	return emit(w, r)
}

func benchUSE(ctx context.Context, g *globals, o *benchOpts, base gpu.Device, dev *prof.Device, w io.Writer) error {
	// use-lite: the real model on the 1,000 imdb sentences, text to
	// embedding (tokenizer included), batches of length-sorted texts as the
	// fastest JS configuration runs them.
	z, err := g.zoo()
	if err != nil {
		return err
	}
	if _, err := z.Ensure(ctx, zoo.DefaultModel, stderrProgress); err != nil {
		return err
	}
	bb, err := z.Load(dev, zoo.DefaultModel)
	if err != nil {
		return err
	}
	texts := benchdata.IMDB()
	batches := []int{32}
	passes := 3
	if !o.quick {
		batches = []int{1, 32, 128}
		passes = 5
	}
	for _, batch := range batches {
		r, err := timeUSE(ctx, bb, dev, texts, batch, passes)
		if err != nil {
			bb.Close()
			return err
		}
		r.Backend = base.Name()
		r.Threads = base.Threads()
		if err := emit(w, r); err != nil {
			bb.Close()
			return err
		}
	}
	return bb.Close()
}

// timeUSE measures texts -> embeddings in batches of `batch` texts sorted
// by token count.
func timeUSE(ctx context.Context, bb model.Backbone, dev *prof.Device, texts []string, batch, passes int) (forwardResult, error) {
	opts := model.DefaultEmbedOptions()
	tokens := 0
	r, err := measure(dev, passes, len(texts), func() error {
		ids, err := model.Tokenize(bb, texts, opts)
		if err != nil {
			return err
		}
		slices.SortStableFunc(ids, func(a, b []int32) int { return len(a) - len(b) })
		tokens = 0
		for _, s := range ids {
			tokens += len(s)
		}
		for i := 0; i < len(ids); i += batch {
			if _, err := model.EmbedIDs(ctx, bb, ids[i:min(i+batch, len(ids))], model.MaxBatchTokensLimit); err != nil {
				return err
			}
		}
		return nil
	})
	r.Backbone, r.Texts, r.Batch, r.Seq, r.Tokenize = "use-lite", "imdb", batch, bb.Info().MaxPositions, true
	r.MeanTokens = round(float64(tokens)/float64(len(texts)), 2)
	return r, err
}

// timeIDs measures one packed forward pass over ids (no tokenizer).
func timeIDs(ctx context.Context, bb model.Backbone, dev *prof.Device, ids [][]int32, passes int) (forwardResult, error) {
	dst := make([]float32, len(ids)*bb.Info().OutputDim)
	r, err := measure(dev, passes, len(ids), func() error {
		st, err := bb.Embed(ctx, ids)
		if err != nil {
			return err
		}
		defer bb.Release(st)
		if err := bb.RunLayers(ctx, st, bb.Info().Layers, nil); err != nil {
			return err
		}
		return bb.Pool(ctx, st, dst)
	})
	tokens := 0
	for _, s := range ids {
		tokens += len(s)
	}
	r.MeanTokens = round(float64(tokens)/float64(len(ids)), 2)
	return r, err
}

// measure runs pass once to warm up, then `passes` times, and reports the
// median pass (wall time, CPU time, and the device profile of that pass):
// the median, as the JS reference reports, not the best.
func measure(dev *prof.Device, passes, seqs int, pass func() error) (forwardResult, error) {
	if err := pass(); err != nil {
		return forwardResult{}, err
	}
	type sample struct {
		wall, cpu time.Duration
		t         prof.Times
	}
	var samples []sample
	for range passes {
		runtime.GC()
		dev.Reset()
		c0, w0 := cpuTime(), time.Now()
		if err := pass(); err != nil {
			return forwardResult{}, err
		}
		samples = append(samples, sample{time.Since(w0), cpuTime() - c0, dev.T})
	}
	slices.SortFunc(samples, func(a, b sample) int { return int(a.wall - b.wall) })
	m := samples[len(samples)/2]
	slices.SortFunc(samples, func(a, b sample) int { return int(a.cpu - b.cpu) })
	cpu := samples[len(samples)/2].cpu
	n := float64(seqs)
	return forwardResult{
		Bench:        "forward",
		SeqPerS:      round(n/m.wall.Seconds(), 2),
		SeqPerCPUS:   round(n/cpu.Seconds(), 2),
		GemmFraction: round(m.t.Gemm.Seconds()/m.wall.Seconds(), 3),
		AttnFraction: round(m.t.Attention.Seconds()/m.wall.Seconds(), 3),
		GemmGFlops:   round(m.t.GemmFlops/m.t.Gemm.Seconds()/1e9, 1),
		TotalOverGem: round(m.wall.Seconds()/m.t.Gemm.Seconds(), 3),
		Passes:       passes,
	}, nil
}

// randomIDs makes n sequences of exactly seq ids (the model sees them as
// they are: callers that want [CLS]/[SEP] use Prepare).
func randomIDs(n, seq, vocab int) [][]int32 {
	r := rand.New(rand.NewPCG(1, 2))
	ids := make([][]int32, n)
	for i := range ids {
		ids[i] = make([]int32, seq)
		for j := range ids[i] {
			ids[i][j] = int32(r.IntN(vocab))
		}
	}
	return ids
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
