package main

// `smile bench serve`: serving throughput, memory, latency and cold starts
// of many vPLMs on one device, through the real serving path, against the
// way separate models are hosted today.
//
// Choices, and why:
//
//   - The real path. An in-process node (cluster.Start) on an on-disk Badger
//     store in a temp dir; every request is node.Service().Classify with one
//     imdb text (benchdata.IMDB), so it goes client -> vPLM actor (tokenizes)
//     -> device actor (fair queue, mixed batches, host and device tiers of
//     params) -> answer. Nothing is short-circuited.
//   - vPLMs: the backbone's default adapter (bottleneck, r=64, on
//     model.DefaultAdapterLayers) and a 2-label classify head, made with
//     model.RandomParams (every tensor non-zero, a distinct seed per vPLM:
//     identity adapters would be unrealistically cheap if anything skipped
//     them), stored with PutBlob and created with one Catalog.ApplyBatch per
//     chunk, each entry filled as actors.Service.Create fills it. The store
//     runs without SyncWrites: it is thrown away, and fsync only slows the
//     bulk create; every read of the serving path is the same. The largest N
//     is created once; smaller N use its first N vPLMs.
//   - Steady state per N: the N vPLMs' params are made resident with the
//     device actor's Prefetch, and their actors are activated (a GetVPLM to
//     each through the cluster, which answers from the catalog without a
//     forward pass). A server with N vPLMs in a uniform mix sees each of them
//     every N/throughput seconds (about 40 s at N=10,000), far inside the
//     10-minute passivation time, so active actors are the steady state;
//     activation itself is what serve-cold measures. Then a short warm-up,
//     then a closed loop of C = 2 x MaxBatchRows clients sending R requests
//     in all, each to a uniformly random vPLM among N (the same R for every
//     N; the stream is seeded by N). seq_per_s = R / elapsed; seq_per_cpu_s
//     is R per CPU-second of the process, steadier on a shared machine.
//   - serve-naive: the same stream (same seed), the same C, one device. A
//     private model per tenant is a full copy of the backbone loaded with
//     zoo.LoadFile from the backbone file on disk (the real cost of swapping
//     a model in; the page cache keeps the file hot, which favours naive)
//     plus the tenant's head read from its blob. As many fit as the memory
//     budget of the SMILE run at that N allows (backbone file bytes + N x
//     params blob bytes), at least one. One worker takes the oldest request,
//     swaps its tenant's model in if absent (evicting the least recently
//     used and Close()ing it), runs all queued requests of that tenant as
//     one batch (tokenize, model.EmbedIDs, head) and answers them. Naive is
//     slow, so it runs for min(R requests, a time limit) and reports the
//     requests answered within the limit over the time; it starts with no
//     model loaded (at N >= 100 nearly every batch is a swap either way).
//   - serve-memory: RSS (VmRSS of /proc/self/status) after
//     debug.FreeOSMemory (a GC that also returns freed heap pages), with the
//     node started and only the backbone loaded, then again after the
//     largest N is resident and has served. bytes_per_vplm is the
//     difference over N: it includes the host tier (fp16, off the Go heap)
//     and the device tier (float32 uploads; host memory on the CPU device,
//     DeviceCacheBytes at most), actors and catalog caches.
//   - serve-latency: open-loop Poisson arrivals (exponential gaps, fixed
//     seed), each request its own goroutine, at 0.5 and 0.9 of the seq_per_s
//     measured at N=1000 (the largest N <= 1000 when smaller runs), over a
//     fixed time, to the first min(N, 1000) vPLMs; p50/p90/p99 of end-to-end
//     latency (Classify call to answer).
//   - serve-cold: vPLMs created with the others but never prefetched nor
//     requested (params only in Badger, actor not active), asked one at a
//     time at idle: the first request's latency (activation, catalog read,
//     params read and check from Badger, upload, forward). warm_p50_ms is
//     the p50 of 50 sequential requests to warm vPLMs, measured just before.
//   - bert-base: model/bert geometry with generated weights (bert.NewRandom,
//     or a backbone file written from the same generator when naive needs a
//     file to load). Its vocabulary is generated too (bert.RandomVocab: a
//     hundred common words and letters, the rest [unusedN]), so imdb words
//     tokenize mostly to letter pieces and [UNK]; speed depends on the token
//     count, not on the values. A bottleneck r=64 adapter on bert-base's
//     default upper 6 layers is about 1.2 MB of fp16 per vPLM (12 GB for
//     10,000), so bert-base vPLMs adapt one layer ([12]), reported as
//     "adapter_layers". --quick shortens its texts to their first 8 words
//     ("max_words") and runs fewer N and requests.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pc "github.com/asynkron/protoactor-go/cluster"
	"github.com/spf13/pflag"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/internal/benchdata"
	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/bert"
	"github.com/smile-vplm/smile/storage"
)

// serveFlags are `bench serve`'s device settings (0: the node default), so
// the defaults can be compared by rerunning the command.
type serveFlags struct {
	maxBatchRows int
	maxWait      time.Duration
	hostCacheMB  int64
	devCacheMB   int64
	requests     int
	ns           []int
}

func addServeFlags(f *pflag.FlagSet, s *serveFlags) {
	f.IntVar(&s.maxBatchRows, "max-batch-rows", 0, "serve: device actor's sequences per pass (0: node default)")
	f.DurationVar(&s.maxWait, "max-wait", -1, "serve: device actor's max wait for a batch to fill (-1: node default)")
	f.Int64Var(&s.hostCacheMB, "host-cache-mb", 0, "serve: host tier MiB (0: node default, raised to hold the largest N)")
	f.Int64Var(&s.devCacheMB, "device-cache-mb", 0, "serve: device tier MiB (0: node default)")
	f.IntVar(&s.requests, "requests", 0, "serve: requests per N (0: the profile's)")
	f.IntSliceVar(&s.ns, "vplms", nil, "serve: vPLM counts to measure (default 1,100,1000,10000)")
}

// serveProfile is one backbone's run of `bench serve`.
type serveProfile struct {
	backbone string
	quick    bool
	ns       []int // vPLM counts, ascending; the last is also the memory point
	requests int   // per N
	warmup   int   // requests before each measurement
	rounds   int   // interleaved rounds the requests are split into
	// naiveNs are the N of serve-naive lines (each must be in ns); naive
	// runs at most naiveMax.
	naiveNs  []int
	naiveMax time.Duration
	// latency: duration per load (0: no serve-latency lines).
	latency time.Duration
	cold    int // cold vPLMs (0: no serve-cold line)
	warm    int // sequential warm requests for warm_p50_ms
	// layers adapted (nil: model.DefaultAdapterLayers); maxWords cuts texts
	// (0: whole texts).
	layers   []int
	maxWords int
	// seeds > 0 draws adapters from that many RandomParams seeds (each
	// vPLM still its own blob, with its own head bias; see distinctBlob):
	// --quick, where generating and encoding 10,000 adapters would take a
	// quarter of its minute. Serving cost does not depend on the values.
	seeds  int
	device actors.DeviceConfig
}

func newServeProfile(backbone string, quick bool, f serveFlags) (serveProfile, error) {
	// A round must hold several requests per client, or it measures one
	// burst (start-up and drain) rather than a steady state: --quick runs
	// 2 rounds of 384 requests (3 per client), the full run 8 of 500.
	p := serveProfile{backbone: backbone, quick: quick, device: actors.DefaultDeviceConfig(), warm: 50, rounds: 2}
	if !quick {
		p.rounds = 8
	}
	switch {
	case backbone == "use-lite" && quick:
		p.ns, p.requests, p.warmup = []int{1, 100, 1000, 10000}, 768, 128
		p.naiveNs, p.naiveMax = []int{1000}, 4*time.Second
		p.latency, p.cold = 3*time.Second, 20
		p.seeds = 256
	case backbone == "use-lite":
		p.ns, p.requests, p.warmup = []int{1, 100, 1000, 10000}, 4000, 512
		p.naiveNs, p.naiveMax = []int{100, 1000, 10000}, 30*time.Second
		p.latency, p.cold = 15*time.Second, 20
	case backbone == "bert-base" && quick:
		p.ns, p.requests, p.warmup = []int{1, 100}, 256, 64
		p.layers, p.maxWords = []int{12}, 8
		p.cold, p.warm = 5, 10
	case backbone == "bert-base":
		p.ns, p.requests, p.warmup = []int{1, 100, 1000, 10000}, 256, 64
		p.naiveNs, p.naiveMax = []int{100, 1000, 10000}, 30*time.Second
		p.layers = []int{12}
		p.latency, p.cold = 20*time.Second, 10
	default:
		return p, usagef("--backbone %q: want use-lite or bert-base", backbone)
	}
	if f.maxBatchRows > 0 {
		p.device.MaxBatchRows = f.maxBatchRows
	}
	if f.maxWait >= 0 {
		p.device.MaxWait = f.maxWait
	}
	if f.hostCacheMB > 0 {
		p.device.HostCacheBytes = f.hostCacheMB << 20
	}
	if f.devCacheMB > 0 {
		p.device.DeviceCacheBytes = f.devCacheMB << 20
	}
	if len(f.ns) > 0 {
		p.ns = slices.Sorted(slices.Values(f.ns))
		if p.ns[0] < 1 || p.ns[len(p.ns)-1] > 100000 {
			return p, usagef("--vplms %v: want counts in 1..100000", f.ns)
		}
		var keep []int
		for _, n := range p.naiveNs {
			if slices.Contains(p.ns, n) {
				keep = append(keep, n)
			}
		}
		p.naiveNs = keep
	}
	if f.requests > 0 {
		p.requests, p.warmup = f.requests, max(16, f.requests/8)
	}
	return p, p.device.Validate()
}

// serveMeta ends every line of `bench serve`.
type serveMeta struct {
	Requests      int     `json:"requests"`
	Concurrency   int     `json:"concurrency,omitempty"`
	AdapterLayers []int   `json:"adapter_layers"`
	Rank          int     `json:"rank"`
	MaxWords      int     `json:"max_words,omitempty"`
	Quick         bool    `json:"quick"`
	AdapterSeeds  int     `json:"adapter_seeds,omitempty"`
	MaxBatchRows  int     `json:"max_batch_rows"`
	MaxWaitMS     float64 `json:"max_wait_ms"`
	Date          string  `json:"date"`
	Machine       string  `json:"machine"`
	Device        string  `json:"device"`
}

type serveLine struct {
	Bench          string  `json:"bench"`
	Backbone       string  `json:"backbone"`
	VPLMs          int     `json:"vplms"`
	SeqPerS        float64 `json:"seq_per_s"`
	RatioToOne     float64 `json:"ratio_to_one"`
	SeqPerCPUS     float64 `json:"seq_per_cpu_s"`
	RatioToOneCPU  float64 `json:"ratio_to_one_cpu"` // of seq_per_cpu_s: steadier on a shared machine
	MeanBatchRows  float64 `json:"mean_batch_rows"`
	MeanBatchVPLMs float64 `json:"mean_batch_vplms"`
	DeviceMissRate float64 `json:"device_tier_miss_rate"`
	Errors         int     `json:"errors"`
	// RoundSeqPerS and RoundRatios are each interleaved round's figures.
	RoundSeqPerS []float64 `json:"round_seq_per_s"`
	RoundRatios  []float64 `json:"round_ratios,omitempty"`
	serveMeta
}

type naiveLine struct {
	Bench          string  `json:"bench"`
	Backbone       string  `json:"backbone"`
	Tenants        int     `json:"tenants"`
	SeqPerS        float64 `json:"seq_per_s"`
	SmileOverNaive float64 `json:"smile_over_naive"`
	SmileSeqPerS   float64 `json:"smile_seq_per_s"`
	ModelsFit      int     `json:"models_fit"`
	BudgetBytes    int64   `json:"budget_bytes"`
	ModelBytes     int64   `json:"private_model_bytes"`
	Swaps          int     `json:"swaps"`
	SwapMS         float64 `json:"swap_ms_mean"`
	MeanBatch      float64 `json:"mean_batch"`
	DurationS      float64 `json:"duration_s"`
	serveMeta
}

type memoryLine struct {
	Bench        string `json:"bench"`
	Backbone     string `json:"backbone"`
	Resident     int    `json:"resident"`
	BytesPerVPLM int64  `json:"bytes_per_vplm"`
	RSSBytes     int64  `json:"rss_bytes"`
	RSSBefore    int64  `json:"rss_before_bytes"`
	AnonPerVPLM  int64  `json:"anon_bytes_per_vplm"`
	RSSAnon      int64  `json:"rss_anon_bytes"`
	RSSFile      int64  `json:"rss_file_bytes"`
	ParamsBytes  int    `json:"params_blob_bytes"`
	HostTier     int64  `json:"host_tier_bytes"`
	DeviceTier   int64  `json:"device_tier_bytes"`
	HostEntries  int    `json:"host_tier_entries"`
	serveMeta
}

type latencyLine struct {
	Bench     string  `json:"bench"`
	Backbone  string  `json:"backbone"`
	Load      float64 `json:"load"`
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
	P90MS     float64 `json:"p90_ms"`
	MeanMS    float64 `json:"mean_ms"`
	RatePerS  float64 `json:"rate_per_s"`
	MaxPerS   float64 `json:"max_seq_per_s"`
	VPLMs     int     `json:"vplms"`
	DurationS float64 `json:"duration_s"`
	Errors    int     `json:"errors"`
	serveMeta
}

type coldLine struct {
	Bench     string  `json:"bench"`
	Backbone  string  `json:"backbone"`
	ColdMS    float64 `json:"cold_ms"`
	WarmP50MS float64 `json:"warm_p50_ms"`
	ColdP90MS float64 `json:"cold_p90_ms"`
	OverWarm  float64 `json:"cold_over_warm_ms"`
	Cold      int     `json:"cold_vplms"`
	serveMeta
}

func benchServe(ctx context.Context, g *globals, o *benchOpts, w io.Writer) error {
	var profs []serveProfile
	for _, b := range o.backbones {
		p, err := newServeProfile(b, o.quick, o.serve)
		if err != nil {
			return err
		}
		profs = append(profs, p)
	}
	for _, p := range profs {
		if err := runServe(ctx, g, p, w, os.Stderr); err != nil {
			return fmt.Errorf("bench serve %s: %w", p.backbone, err)
		}
	}
	return nil
}

// serveRun is one backbone's benchmark in progress.
type serveRun struct {
	g       *globals
	p       serveProfile
	w, logw io.Writer
	dev     gpu.Device
	bb      model.Backbone
	bbPath  string // backbone file ("" when generated in memory)
	bbBytes int64
	store   *storage.Store
	node    *cluster.Node
	svc     *actors.Service
	ids     []string // the vPLMs measured
	digests []string
	coldIDs []string
	blobLen int
	texts   []string
	meta    serveMeta
	layers  []int
	active  int // ids[:active] have active actors
	seqPerS map[int]float64
	// seqPerCPUS is requests per CPU-second of the process at each N.
	seqPerCPUS map[int]float64
	tmp        string
}

func (r *serveRun) logf(format string, a ...any) {
	fmt.Fprintf(r.logw, "bench serve %s: %s\n", r.p.backbone, fmt.Sprintf(format, a...))
}

func runServe(ctx context.Context, g *globals, p serveProfile, w, logw io.Writer) (err error) {
	r := &serveRun{g: g, p: p, w: w, logw: logw, seqPerS: map[int]float64{}, seqPerCPUS: map[int]float64{}}
	r.tmp, err = os.MkdirTemp("", "smile-bench-serve-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(r.tmp)
	if r.dev, err = g.device(); err != nil {
		return err
	}
	t0 := time.Now()
	if err := r.loadBackbone(ctx, g); err != nil {
		return err
	}
	defer r.bb.Close()
	r.logf("backbone loaded in %v", time.Since(t0).Round(time.Millisecond))
	r.layers = p.layers
	if r.layers == nil {
		r.layers = model.DefaultAdapterLayers(r.bb.Info().Layers)
	}
	maxN := p.ns[len(p.ns)-1]
	if need := int64(maxN) * r.estimateBlob() * 11 / 10; p.device.HostCacheBytes < need {
		// The host tier must hold the largest N, or serve would measure
		// Badger reads instead of serving.
		p.device.HostCacheBytes = need + 64<<20
		r.p = p
	}
	r.texts = benchdata.IMDB()
	if p.maxWords > 0 {
		for i, t := range r.texts {
			if f := strings.Fields(t); len(f) > p.maxWords {
				r.texts[i] = strings.Join(f[:p.maxWords], " ")
			}
		}
	}
	r.meta = serveMeta{
		Concurrency: 2 * p.device.MaxBatchRows, AdapterLayers: r.layers, Rank: model.DefaultRank, MaxWords: p.maxWords,
		Quick: p.quick, AdapterSeeds: p.seeds, MaxBatchRows: p.device.MaxBatchRows, MaxWaitMS: float64(p.device.MaxWait.Microseconds()) / 1000,
		Machine: machineName(), Device: r.dev.Name(),
	}
	r.store, err = storage.Open(storage.Options{Dir: filepath.Join(r.tmp, "db")})
	if err != nil {
		return err
	}
	defer r.store.Close()
	cat := storage.NewCatalog(r.store)
	cfg := cluster.DefaultNodeConfig()
	cfg.Device = r.p.device
	// Warnings only: protoactor logs every cluster step at info.
	cfg.Log = slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r.node, err = cluster.Start(ctx, cfg, r.store, cat, r.bb)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = errors.Join(err, r.node.Close(cctx))
	}()
	r.svc = r.node.Service()
	rss0 := rssAfterGC()
	t0 = time.Now()
	if err := r.create(ctx, cat, maxN, p.cold); err != nil {
		return err
	}
	r.logf("created %d vPLMs (+%d cold), %d-byte params blobs, in %v", maxN, p.cold, r.blobLen, time.Since(t0).Round(time.Millisecond))
	r.settle(ctx)
	if p.ns[0] != 1 {
		return fmt.Errorf("bench serve: the vPLM counts must start at 1 (ratio_to_one's base), got %v", p.ns)
	}
	if err := r.serveRounds(ctx); err != nil {
		return err
	}
	if err := r.memory(ctx, maxN, rss0); err != nil {
		return err
	}
	for _, n := range p.naiveNs {
		if err := r.naive(ctx, n); err != nil {
			return err
		}
	}
	if p.latency > 0 {
		for _, load := range []float64{0.5, 0.9} {
			if err := r.latency(ctx, load); err != nil {
				return err
			}
		}
	}
	if p.cold > 0 {
		return r.cold(ctx)
	}
	return nil
}

// loadBackbone loads the served backbone, from its file when naive needs
// one to load private copies from.
func (r *serveRun) loadBackbone(ctx context.Context, g *globals) error {
	switch r.p.backbone {
	case "use-lite":
		z, err := g.zoo()
		if err != nil {
			return err
		}
		d, err := z.Ensure(ctx, zoo.DefaultModel, stderrProgress)
		if err != nil {
			return err
		}
		r.bbPath = z.Path(d)
	case "bert-base":
		if len(r.p.naiveNs) == 0 {
			bb, err := bert.NewRandom(r.dev, bert.BaseConfig(), 1)
			if err != nil {
				return err
			}
			r.bb = bb
			r.bbBytes = backboneBytes(bb)
			return nil
		}
		hf := filepath.Join(r.tmp, "hf")
		if err := bert.WriteHFDir(hf, bert.BaseConfig(), 1); err != nil {
			return err
		}
		r.bbPath = filepath.Join(r.tmp, "bert-base.smile")
		f, err := os.Create(r.bbPath)
		if err != nil {
			return err
		}
		bw := bufio.NewWriterSize(f, 1<<20)
		err = bert.ConvertHF(hf, bw)
		if err == nil {
			err = bw.Flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := os.RemoveAll(hf); err != nil {
			return err
		}
	}
	fi, err := os.Stat(r.bbPath)
	if err != nil {
		return err
	}
	r.bbBytes = fi.Size()
	r.bb, err = zoo.LoadFile(r.dev, r.bbPath)
	return err
}

// backboneBytes is a generated backbone's float32 weights, as a file would
// hold them.
func backboneBytes(bb model.Backbone) int64 {
	i := bb.Info()
	per := 4*i.Hidden*i.Hidden + 2*i.Hidden*i.Intermediate
	return 4 * int64(i.Layers*per+(i.VocabSize+i.MaxPositions)*i.Hidden)
}

func (r *serveRun) spec() model.ParamsSpec {
	return model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: model.DefaultRank, Layers: r.layers,
		Head: model.HeadClassify, Labels: []string{"neg", "pos"}}
}

// estimateBlob is the params blob size (fp16) of one vPLM.
func (r *serveRun) estimateBlob() int64 {
	n := 0
	for _, l := range r.layers {
		d := r.bb.LayerDims(l)
		n += 2*d.Out*model.DefaultRank + model.DefaultRank + d.Out
	}
	n += (r.bb.Info().OutputDim + 1) * 2
	return int64(2*n + 1024)
}

// create stores maxN + cold vPLMs: params generated and put on all cores,
// catalog entries in batches.
func (r *serveRun) create(ctx context.Context, cat *storage.Catalog, maxN, cold int) error {
	total := maxN + cold
	digests := make([]string, total)
	sizes := make([]int, total)
	spec := r.spec()
	gen := func(seed int) ([]byte, error) {
		p, err := model.RandomParams(r.bb, spec, uint64(seed)+1, 0.05)
		if err != nil {
			return nil, err
		}
		return p.Encode(), nil
	}
	var pool [][]byte
	if r.p.seeds > 0 {
		pool = make([][]byte, r.p.seeds)
		err := parallelFor(ctx, len(pool), func(i int) (err error) {
			pool[i], err = gen(i)
			return err
		})
		if err != nil {
			return err
		}
	}
	err := parallelFor(ctx, total, func(i int) error {
		var blob []byte
		if pool != nil {
			blob = distinctBlob(pool[i%len(pool)], i)
		} else {
			var err error
			if blob, err = gen(i); err != nil {
				return err
			}
		}
		dg, err := r.store.PutBlob(blob)
		digests[i], sizes[i] = dg, len(blob)
		return err
	})
	if err != nil {
		return err
	}
	if pool != nil {
		// The patched blobs must still be valid params.
		if _, err := model.DecodeParams(distinctBlob(pool[0], total-1)); err != nil {
			return err
		}
	}
	r.blobLen = sizes[0]
	layers := make([]uint32, len(r.layers))
	for i, l := range r.layers {
		layers[i] = uint32(l)
	}
	now := time.Now().UnixMilli()
	name := r.bb.Info().Name
	var cmds []*smilepb.CatalogCommand
	for i := range total {
		id := fmt.Sprintf("v%05d", i)
		if i >= maxN {
			id = fmt.Sprintf("cold%03d", i-maxN)
			r.coldIDs = append(r.coldIDs, id)
		} else {
			r.ids = append(r.ids, id)
			r.digests = append(r.digests, digests[i])
		}
		v := &smilepb.VPLM{
			Id: id, Tenant: "default", Backbone: name, Task: smilepb.Task_TASK_CLASSIFY, Labels: spec.Labels,
			Adapter:      &smilepb.AdapterConfig{Kind: smilepb.AdapterKind_ADAPTER_BOTTLENECK, Rank: uint32(spec.Rank), Layers: layers},
			ParamsDigest: digests[i], ParamsBytes: uint64(sizes[i]), CreatedUnixMs: now, UpdatedUnixMs: now,
		}
		cmds = append(cmds, &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_Create{Create: &smilepb.CreateVPLM{Vplm: v}}})
	}
	for i := 0; i < len(cmds); i += 2000 {
		_, errs := cat.ApplyBatch(cmds[i:min(i+2000, len(cmds))])
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	return nil
}

// distinctBlob is base (an Encode'd classify params blob with two labels,
// whose last 4 bytes are the head bias in fp16) with the bias set to two
// halves unique to i: 0x2000|m is 2^-7 x (1 + m/1024), finite, non-zero
// and within RandomParams' magnitudes at scale 0.05.
func distinctBlob(base []byte, i int) []byte {
	b := slices.Clone(base)
	n := len(b)
	binary.LittleEndian.PutUint16(b[n-4:], 0x2000|uint16(i%1000))
	binary.LittleEndian.PutUint16(b[n-2:], 0x2000|uint16(i/1000))
	return b
}

// parallelFor runs fn(0..n-1) on all cores, stopping at the first error.
func parallelFor(ctx context.Context, n int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, runtime.NumCPU())
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					errs[w] = err
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(append(errs, ctx.Err())...)
}

// settle waits (up to 10 s) until the process is nearly idle: the bulk
// create leaves Badger flushing and compacting in the background, which
// would otherwise take CPU from the first measurement.
func (r *serveRun) settle(ctx context.Context) {
	t0 := time.Now()
	for time.Since(t0) < 10*time.Second && ctx.Err() == nil {
		c0 := cpuTime()
		time.Sleep(250 * time.Millisecond)
		if cpuTime()-c0 < 25*time.Millisecond {
			break
		}
	}
	r.logf("settled in %v", time.Since(t0).Round(time.Millisecond))
}

// prepare makes ids[:n] steady: params resident, actors active.
func (r *serveRun) prepare(ctx context.Context, n int) error {
	t0 := time.Now()
	h, ok := r.node.Device(r.bb.Info().Name)
	if !ok {
		return fmt.Errorf("no device actor for %s", r.bb.Info().Name)
	}
	res, err := r.node.ActorSystem().Root.RequestFuture(h.PID, &actors.Prefetch{Digests: r.digests[:n]}, 10*time.Minute).Result()
	if err != nil {
		return fmt.Errorf("prefetch: %w", err)
	}
	if ack, ok := res.(*actors.Ack); !ok || ack.Err != nil {
		return fmt.Errorf("prefetch: %v", res)
	}
	r.logf("N=%d: params resident after %v", n, time.Since(t0).Round(time.Millisecond))
	if r.active >= n {
		return nil
	}
	cl := pc.GetCluster(r.node.ActorSystem())
	todo := r.ids[r.active:n]
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(todo) {
					return
				}
				res, err := cl.Request(todo[i], actors.KindVPLM, &smilepb.GetVPLM{Id: todo[i]}, pc.WithTimeout(30*time.Second))
				if err == nil {
					if g, ok := res.(*smilepb.GetVPLMReply); !ok || g.Error != nil {
						err = fmt.Errorf("activate %s: %v", todo[i], res)
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	r.active = n
	r.logf("N=%d: actors active after %v", n, time.Since(t0).Round(time.Millisecond))
	return ctx.Err()
}

// request is one request of a stream: a vPLM index and a text.
type request struct {
	vplm int
	text string
}

// stream is R requests to uniformly random vPLMs among n, seeded by n.
func (r *serveRun) stream(n, count int, salt uint64) []request {
	rng := rand.New(rand.NewPCG(uint64(n), 0x5e27e+salt))
	s := make([]request, count)
	for i := range s {
		s[i] = request{vplm: rng.IntN(n), text: r.texts[rng.IntN(len(r.texts))]}
	}
	return s
}

func (r *serveRun) classify(ctx context.Context, q request) error {
	_, err := r.svc.Classify(ctx, r.ids[q.vplm], []string{q.text})
	return err
}

// closedLoop runs stream through c clients calling do; it stops issuing at
// stopAt (zero: never) and returns the requests answered (by then) and the
// time taken.
func closedLoop(ctx context.Context, c int, stream []request, stopAt time.Time, do func(context.Context, request) error) (done, errs int, elapsed time.Duration) {
	var next, ok, bad atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	var last atomic.Int64
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(stream) || (!stopAt.IsZero() && time.Now().After(stopAt)) {
					return
				}
				err := do(ctx, stream[i])
				now := time.Now()
				if !stopAt.IsZero() && now.After(stopAt) {
					return
				}
				if err != nil {
					bad.Add(1)
				} else {
					ok.Add(1)
				}
				for {
					l := last.Load()
					if int64(now.Sub(start)) <= l || last.CompareAndSwap(l, int64(now.Sub(start))) {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed = time.Duration(last.Load())
	if !stopAt.IsZero() && time.Now().After(stopAt) {
		elapsed = stopAt.Sub(start)
	}
	return int(ok.Load()), int(bad.Load()), elapsed
}

func (r *serveRun) deviceStats(ctx context.Context) (*actors.DeviceStats, error) {
	st, err := r.svc.DeviceStats(ctx)
	if err != nil {
		return nil, err
	}
	return st[0], nil
}

// serveRounds measures every N in interleaved rounds: each round runs a
// share of the R requests at every N, in an order rotated by the round, so
// drift of a shared machine (other jobs starting and stopping) lands on
// every N alike instead of on whichever ran last. The largest N is made
// resident and its actors active first; smaller N use its first vPLMs.
func (r *serveRun) serveRounds(ctx context.Context) error {
	ns := r.p.ns
	t0 := time.Now()
	if err := r.prepare(ctx, ns[len(ns)-1]); err != nil {
		return err
	}
	c := r.meta.Concurrency
	for _, n := range ns {
		if _, bad, _ := closedLoop(ctx, c, r.stream(n, r.p.warmup, 1), time.Time{}, r.classify); bad > 0 {
			r.logf("warm-up at N=%d: %d errors", n, bad)
		}
	}
	r.logf("all N prepared and warmed in %v", time.Since(t0).Round(time.Millisecond))
	type total struct {
		done, bad                   int
		elapsed, cpu                time.Duration
		batches, rows, hits, misses uint64
		rounds                      []float64 // seq/s of each round
	}
	tot := make([]total, len(ns))
	rounds := r.p.rounds
	per := max(r.p.requests/rounds, 1)
	for round := range rounds {
		for k := range ns {
			i := (k + round) % len(ns)
			n := ns[i]
			s0, err := r.deviceStats(ctx)
			if err != nil {
				return err
			}
			runtime.GC()
			cpu0 := cpuTime()
			done, bad, elapsed := closedLoop(ctx, c, r.stream(n, per, uint64(2+round)), time.Time{}, r.classify)
			cpu := cpuTime() - cpu0
			s1, err := r.deviceStats(ctx)
			if err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			t := &tot[i]
			t.done, t.bad, t.elapsed, t.cpu = t.done+done, t.bad+bad, t.elapsed+elapsed, t.cpu+cpu
			t.batches += s1.Batches - s0.Batches
			t.rows += s1.Rows - s0.Rows
			t.hits += s1.DeviceHits - s0.DeviceHits
			t.misses += s1.DeviceMisses - s0.DeviceMisses
			t.rounds = append(t.rounds, round2(float64(done)/elapsed.Seconds()))
		}
		r.logf("round %d/%d done", round+1, rounds)
	}
	for i, n := range ns {
		t := tot[i]
		if t.done == 0 {
			return fmt.Errorf("N=%d: every request failed", n)
		}
		sps := float64(t.done) / t.elapsed.Seconds()
		r.seqPerS[n] = sps
		r.seqPerCPUS[n] = float64(t.done) / t.cpu.Seconds()
		line := serveLine{Bench: "serve", Backbone: r.p.backbone, VPLMs: n, SeqPerS: round(sps, 2),
			SeqPerCPUS: round(r.seqPerCPUS[n], 2), Errors: t.bad, RoundSeqPerS: t.rounds, serveMeta: r.metaFor(rounds * per)}
		if one, ok := r.seqPerS[1]; ok {
			line.RatioToOne = round(sps/one, 3)
			line.RatioToOneCPU = round(r.seqPerCPUS[n]/r.seqPerCPUS[1], 3)
			// The per-round ratios show the spread the noise leaves.
			var rs []float64
			for k := range t.rounds {
				rs = append(rs, round(t.rounds[k]/tot[0].rounds[k], 3))
			}
			line.RoundRatios = rs
		}
		if t.batches > 0 {
			line.MeanBatchRows = round(float64(t.rows)/float64(t.batches), 1)
		}
		if acc := t.hits + t.misses; acc > 0 {
			line.DeviceMissRate = round(float64(t.misses)/float64(acc), 3)
			// Each batch looks up each distinct vPLM once.
			line.MeanBatchVPLMs = round(float64(acc)/float64(t.batches), 1)
		}
		if err := emit(r.w, line); err != nil {
			return err
		}
	}
	return nil
}

func round2(v float64) float64 { return round(v, 2) }

func (r *serveRun) metaFor(requests int) serveMeta {
	m := r.meta
	m.Requests = requests
	m.Date = time.Now().UTC().Format(time.RFC3339)
	return m
}

func (r *serveRun) memory(ctx context.Context, n int, rss0 rss) error {
	st, err := r.deviceStats(ctx)
	if err != nil {
		return err
	}
	rss := rssAfterGC()
	m := r.metaFor(0)
	m.Concurrency = 0
	return emit(r.w, memoryLine{Bench: "serve-memory", Backbone: r.p.backbone, Resident: n,
		BytesPerVPLM: (rss.total - rss0.total) / int64(n), RSSBytes: rss.total, RSSBefore: rss0.total,
		AnonPerVPLM: (rss.anon - rss0.anon) / int64(n), RSSAnon: rss.anon, RSSFile: rss.file, ParamsBytes: r.blobLen,
		HostTier: st.HostBytes, DeviceTier: st.DeviceBytes, HostEntries: st.HostEntries, serveMeta: m})
}

// naiveReq is a request to the naive server.
type naiveReq struct {
	tenant int
	text   string
	taken  bool
	done   chan error
}

// naiveServer hosts a private model per tenant, as many as fit, swapping
// whole models in and out (LRU), one worker.
type naiveServer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	fifo   []*naiveReq
	queues map[int][]*naiveReq
	closed bool

	// worker state
	fit     int
	loaded  map[int]*naiveModel
	clock   int
	swaps   int
	swapDur time.Duration
	batches int
	served  int
}

type naiveModel struct {
	bb   model.Backbone
	head model.Head
	used int
}

func (s *naiveServer) submit(q *naiveReq) {
	s.mu.Lock()
	s.fifo = append(s.fifo, q)
	s.queues[q.tenant] = append(s.queues[q.tenant], q)
	s.mu.Unlock()
	s.cond.Signal()
}

// next takes the oldest request's tenant and all its queued requests.
func (s *naiveServer) next() (int, []*naiveReq, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.closed {
			return 0, nil, false
		}
		for len(s.fifo) > 0 && s.fifo[0].taken {
			s.fifo = s.fifo[1:]
		}
		if len(s.fifo) > 0 {
			t := s.fifo[0].tenant
			qs := s.queues[t]
			delete(s.queues, t)
			for _, q := range qs {
				q.taken = true
			}
			return t, qs, true
		}
		s.cond.Wait()
	}
}

func (s *naiveServer) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cond.Broadcast()
}

func (r *serveRun) naive(ctx context.Context, n int) error {
	smile, ok := r.seqPerS[n]
	if !ok {
		return fmt.Errorf("serve-naive at N=%d needs the serve run at the same N", n)
	}
	head := int64(4 * (r.bb.Info().OutputDim + 1) * 2)
	budget := r.bbBytes + int64(n)*int64(r.blobLen)
	private := r.bbBytes + head
	fit := int(max(1, budget/private))
	dev, err := r.g.device()
	if err != nil {
		return err
	}
	s := &naiveServer{queues: map[int][]*naiveReq{}, fit: fit, loaded: map[int]*naiveModel{}}
	s.cond = sync.NewCond(&s.mu)
	werr := make(chan error, 1)
	go func() { werr <- r.naiveWorker(ctx, s, dev) }()
	stream := r.stream(n, r.p.requests, 0)
	stopAt := time.Now().Add(r.p.naiveMax)
	// Clients waiting at the deadline give up (their requests count for
	// nothing), or the run would last until naive drained its queue.
	lctx, cancel := context.WithDeadline(ctx, stopAt)
	defer cancel()
	var failed atomic.Value
	done, bad, elapsed := closedLoop(lctx, r.meta.Concurrency, stream, stopAt, func(ctx context.Context, q request) error {
		nq := &naiveReq{tenant: q.vplm, text: q.text, done: make(chan error, 1)}
		s.submit(nq)
		select {
		case err := <-nq.done:
			if err != nil {
				failed.CompareAndSwap(nil, err)
			}
			return err
		case <-ctx.Done():
			return nil // past the deadline: not counted
		}
	})
	s.close()
	if err := <-werr; err != nil {
		return err
	}
	if err, _ := failed.Load().(error); err != nil || bad > 0 {
		return fmt.Errorf("naive: %d errors: %v", bad, err)
	}
	if done == 0 {
		return fmt.Errorf("naive at N=%d answered nothing in %v", n, r.p.naiveMax)
	}
	sps := float64(done) / elapsed.Seconds()
	line := naiveLine{Bench: "serve-naive", Backbone: r.p.backbone, Tenants: n, SeqPerS: round(sps, 2),
		SmileOverNaive: round(smile/sps, 1), SmileSeqPerS: round(smile, 2), ModelsFit: fit, BudgetBytes: budget,
		ModelBytes: private, Swaps: s.swaps, DurationS: round(elapsed.Seconds(), 2), serveMeta: r.metaFor(done)}
	if s.swaps > 0 {
		line.SwapMS = round(float64(s.swapDur.Microseconds())/1000/float64(s.swaps), 1)
	}
	if s.batches > 0 {
		line.MeanBatch = round(float64(s.served)/float64(s.batches), 2)
	}
	return emit(r.w, line)
}

// naiveWorker serves until the server closes, then closes what it loaded.
func (r *serveRun) naiveWorker(ctx context.Context, s *naiveServer, dev gpu.Device) (err error) {
	defer func() {
		for _, m := range s.loaded {
			err = errors.Join(err, m.bb.Close())
		}
		// Answer whatever still waits: the clients stopped at the deadline.
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, qs := range s.queues {
			for _, q := range qs {
				q.done <- errors.New("naive server closed")
			}
		}
		clear(s.queues)
	}()
	for {
		t, qs, ok := s.next()
		if !ok {
			return nil
		}
		s.clock++
		m := s.loaded[t]
		if m == nil {
			t0 := time.Now()
			if len(s.loaded) >= s.fit {
				lru, at := -1, math.MaxInt
				for k, v := range s.loaded {
					if v.used < at {
						lru, at = k, v.used
					}
				}
				if err := s.loaded[lru].bb.Close(); err != nil {
					return err
				}
				delete(s.loaded, lru)
			}
			bb, err := zoo.LoadFile(dev, r.bbPath)
			if err != nil {
				return err
			}
			blob, err := r.store.GetBlob(r.digests[t])
			if err != nil {
				bb.Close()
				return err
			}
			p, err := model.DecodeParams(blob)
			if err != nil {
				bb.Close()
				return err
			}
			m = &naiveModel{bb: bb, head: p.Head}
			s.loaded[t] = m
			s.swaps++
			s.swapDur += time.Since(t0)
		}
		m.used = s.clock
		texts := make([]string, len(qs))
		for i, q := range qs {
			texts[i] = q.text
		}
		ids, err := model.Tokenize(m.bb, texts, model.DefaultEmbedOptions())
		var pooled [][]float32
		if err == nil {
			pooled, err = model.EmbedIDs(ctx, m.bb, ids, model.MaxBatchTokensLimit)
		}
		out := make([]float32, m.head.Out)
		for i, q := range qs {
			if err == nil {
				m.head.Apply(out, pooled[i])
			}
			q.done <- err
		}
		s.batches++
		s.served += len(qs)
	}
}

// latency runs open-loop Poisson arrivals at load x the N=1000 throughput.
func (r *serveRun) latency(ctx context.Context, load float64) error {
	n := 0
	for k := range r.seqPerS {
		if k <= 1000 && k > n {
			n = k
		}
	}
	if n == 0 {
		n = r.p.ns[0]
	}
	maxTP := r.seqPerS[n]
	rate := load * maxTP
	rng := rand.New(rand.NewPCG(uint64(load*1000), 0x1a7e))
	stream := r.stream(n, int(rate*r.p.latency.Seconds()*2)+16, 7)
	var mu sync.Mutex
	var lats []time.Duration
	var bad atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	at := time.Duration(0)
	i := 0
	for ; at < r.p.latency && i < len(stream) && ctx.Err() == nil; i++ {
		if d := time.Until(start.Add(at)); d > 0 {
			time.Sleep(d)
		}
		q := stream[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			err := r.classify(ctx, q)
			d := time.Since(t0)
			if err != nil {
				bad.Add(1)
				return
			}
			mu.Lock()
			lats = append(lats, d)
			mu.Unlock()
		}()
		at += time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
	}
	wg.Wait()
	if len(lats) == 0 {
		return fmt.Errorf("latency at load %g: no answers", load)
	}
	slices.Sort(lats)
	var sum time.Duration
	for _, d := range lats {
		sum += d
	}
	m := r.metaFor(i)
	m.Concurrency = 0
	return emit(r.w, latencyLine{Bench: "serve-latency", Backbone: r.p.backbone, Load: load,
		P50MS: ms(pct(lats, 0.5)), P99MS: ms(pct(lats, 0.99)), P90MS: ms(pct(lats, 0.9)),
		MeanMS: ms(sum / time.Duration(len(lats))), RatePerS: round(rate, 1), MaxPerS: round(maxTP, 2), VPLMs: n,
		DurationS: round(r.p.latency.Seconds(), 1), Errors: int(bad.Load()), serveMeta: m})
}

// cold times first requests of never-used vPLMs against warm ones.
func (r *serveRun) cold(ctx context.Context) error {
	n := min(len(r.ids), 1000, r.active)
	warm := r.stream(n, r.p.warm, 9)
	var wl []time.Duration
	for _, q := range warm {
		t0 := time.Now()
		if err := r.classify(ctx, q); err != nil {
			return err
		}
		wl = append(wl, time.Since(t0))
	}
	var cl []time.Duration
	for k, id := range r.coldIDs {
		time.Sleep(20 * time.Millisecond)
		t0 := time.Now()
		if _, err := r.svc.Classify(ctx, id, []string{r.texts[k%len(r.texts)]}); err != nil {
			return err
		}
		cl = append(cl, time.Since(t0))
	}
	slices.Sort(wl)
	slices.Sort(cl)
	m := r.metaFor(len(warm) + len(cl))
	m.Concurrency = 1
	warmP50, coldP50 := ms(pct(wl, 0.5)), ms(pct(cl, 0.5))
	return emit(r.w, coldLine{Bench: "serve-cold", Backbone: r.p.backbone, ColdMS: coldP50, WarmP50MS: warmP50,
		ColdP90MS: ms(pct(cl, 0.9)), OverWarm: round(coldP50-warmP50, 2), Cold: len(cl), serveMeta: m})
}

// pct is the q-quantile of sorted durations (nearest rank).
func pct(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return round(float64(d.Microseconds())/1000, 2) }

// rss is the process's resident set: in all (VmRSS), anonymous memory
// (heap, off-heap params, device tier on the CPU) and file pages mapped in
// (Badger's memory-mapped tables and value log).
type rss struct{ total, anon, file int64 }

// rssAfterGC reads /proc/self/status after a collection that also returns
// freed heap pages to the OS.
func rssAfterGC() rss {
	debug.FreeOSMemory()
	var r rss
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return r
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		switch k {
		case "VmRSS":
			r.total = kb << 10
		case "RssAnon":
			r.anon = kb << 10
		case "RssFile":
			r.file = kb << 10
		}
	}
	return r
}

// machineName is "<cores> x <cpu model>".
func machineName() string {
	name := runtime.GOARCH
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				name = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d x %s", runtime.NumCPU(), name)
}

// startCPUProfile profiles the process until the returned stop.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
