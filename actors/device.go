package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/smile-vplm/smile/actors/sched"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/storage"
)

// DeviceConfig configures a device actor: how it batches, how much adapter
// memory each tier may hold, and its scheduler.
type DeviceConfig struct {
	// MaxBatchRows bounds the sequences of one forward pass.
	MaxBatchRows int
	// MaxBatchTokens bounds the token rows of one forward pass.
	MaxBatchTokens int
	// MaxWait is how long the oldest waiting request may hold back a batch
	// that is not full while the device is idle. Under load the device is
	// busy and batches fill while it computes, so this only trades latency
	// for batch size at low load.
	MaxWait time.Duration
	// HostCacheBytes bounds the compact (fp16) params held in host memory:
	// the resident tier, filled from storage.
	HostCacheBytes int64
	// DeviceCacheBytes bounds the params uploaded to the device (float32).
	DeviceCacheBytes int64
	// MaxPending bounds requests parked while their params load.
	MaxPending int
	// LoadWorkers bounds concurrent storage reads of params.
	LoadWorkers int
	// Sched configures the fair queue (tenants' virtual processors).
	Sched sched.Config
}

// DefaultDeviceConfig returns the defaults chosen from `smile bench serve`
// (docs/BENCHMARKS.md).
func DefaultDeviceConfig() DeviceConfig {
	return DeviceConfig{
		MaxBatchRows:     64,
		MaxBatchTokens:   4096,
		MaxWait:          2 * time.Millisecond,
		HostCacheBytes:   1536 << 20,
		DeviceCacheBytes: 256 << 20,
		MaxPending:       4096,
		LoadWorkers:      4,
		Sched:            sched.DefaultConfig(),
	}
}

// Validate checks the configuration.
func (c DeviceConfig) Validate() error {
	switch {
	case c.MaxBatchRows < 1 || c.MaxBatchRows > 4096:
		return fmt.Errorf("%w: max batch rows %d: want 1..4096", ErrBadConfig, c.MaxBatchRows)
	case c.MaxBatchTokens < 1 || c.MaxBatchTokens > model.MaxBatchTokensLimit:
		return fmt.Errorf("%w: max batch tokens %d: want 1..%d", ErrBadConfig, c.MaxBatchTokens, model.MaxBatchTokensLimit)
	case c.MaxWait < 0 || c.MaxWait > time.Second:
		return fmt.Errorf("%w: max wait %v: want 0..1s", ErrBadConfig, c.MaxWait)
	case c.HostCacheBytes < 1<<20:
		return fmt.Errorf("%w: host cache %d bytes: want at least 1 MiB", ErrBadConfig, c.HostCacheBytes)
	case c.DeviceCacheBytes < 1<<20:
		return fmt.Errorf("%w: device cache %d bytes: want at least 1 MiB", ErrBadConfig, c.DeviceCacheBytes)
	case c.MaxPending < 1:
		return fmt.Errorf("%w: max pending %d: want at least 1", ErrBadConfig, c.MaxPending)
	case c.LoadWorkers < 1 || c.LoadWorkers > 256:
		return fmt.Errorf("%w: load workers %d: want 1..256", ErrBadConfig, c.LoadWorkers)
	}
	return c.Sched.Validate()
}

// ParamsSource is where a device actor reads vPLM params blobs it does not
// hold (storage.Store implements it). It is called off the actor's loop.
type ParamsSource interface {
	GetBlob(digest string) ([]byte, error)
}

// Infer asks a device actor for one forward pass over a vPLM's texts. It is
// a local message (the device actor is always on the caller's node); the
// answer is an *InferResult sent to the sender.
type Infer struct {
	Tenant   string
	Digest   string    // params blob of the vPLM; "" runs the plain backbone
	IDs      [][]int32 // prepared token ids, one sequence per text
	Deadline time.Time // zero: none; a request still queued at its deadline fails with a timeout
	// Lower, when set, gives the texts' states after its cut (a plot-mode
	// vPLM's PLOT table): their rows skip layers 1..Cut() of the pass.
	Lower model.Lower
}

// InferResult answers Infer: one output per text (classify: probabilities
// over the labels; embed: the L2-normalised vector), or Err.
type InferResult struct {
	Outputs    [][]float32
	Err        error
	Queue      time.Duration // from arrival at the device actor to the start of its batch
	Compute    time.Duration // the batch's forward pass
	BatchRows  int           // sequences in the batch
	BatchVPLMs int           // distinct params in the batch
}

// SetTenant configures a tenant's virtual processor (weight and limits).
type SetTenant struct {
	Name   string
	Config sched.TenantConfig
}

// Prefetch makes params resident in the host tier ahead of their first
// request (a server warming up, a benchmark measuring steady state). It is
// answered with an *Ack once every blob is loaded or failed.
type Prefetch struct {
	Digests []string
}

// GetDeviceStats asks for a *DeviceStats.
type GetDeviceStats struct{}

// DeviceStats is a snapshot of a device actor.
type DeviceStats struct {
	Backbone                           string
	Batches, Rows                      uint64
	HostEntries                        int
	HostBytes                          int64
	HostHits, HostMisses, HostEvicts   uint64
	DeviceEntries                      int
	DeviceBytes                        int64
	DeviceHits, DeviceMisses, DevEvict uint64
	Pending, Queued                    int
	Works                              uint64 // work items run (training, caching)
	Sched                              sched.Stats
}

// DeviceHandle is a running device actor.
type DeviceHandle struct {
	PID  *actor.PID
	done chan struct{}
	bb   model.Backbone
	d    *deviceActor
}

// Backbone is the device actor's backbone; callers may use only its
// read-only, concurrency-safe parts (Info, LayerDims, Tokenizer, Prepare).
func (h *DeviceHandle) Backbone() model.Backbone { return h.bb }

// drain asks the device actor to stop taking work: everything queued or
// waiting for params is answered unavailable, the batch in flight finishes
// and is answered, then the compute goroutine ends.
type drain struct{}

// Stop drains the actor (every request it holds gets an answer), waits
// until its compute goroutine has freed the device memory it held, stops
// the actor and releases the host tier. The backbone stays open: its owner
// closes it, and must not if Stop returns an error (compute may still run).
func (h *DeviceHandle) Stop(ctx context.Context, sys *actor.ActorSystem) error {
	if _, err := sys.Root.RequestFuture(h.PID, &drain{}, timeoutOf(ctx)).Result(); err != nil && !errors.Is(err, actor.ErrDeadLetter) {
		return fmt.Errorf("%w: draining the device actor: %w", ErrUnavailable, err)
	}
	select {
	case <-h.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	// Loads still reading storage finish, and the actor (stopped from
	// taking work) frees what they bring: every `loaded` they sent is
	// ahead of this round trip in its mailbox.
	loads := make(chan struct{})
	go func() { h.d.loads.Wait(); close(loads) }()
	select {
	case <-loads:
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, err := sys.Root.RequestFuture(h.PID, &GetDeviceStats{}, timeoutOf(ctx)).Result(); err != nil && !errors.Is(err, actor.ErrDeadLetter) {
		return fmt.Errorf("%w: device actor: %w", ErrUnavailable, err)
	}
	if err := sys.Root.StopFuture(h.PID).Wait(); err != nil && !errors.Is(err, actor.ErrTimeout) {
		return err
	}
	// The actor has stopped and compute has ended: nothing reads the
	// blobs any more.
	h.d.host.clear()
	return nil
}

// SpawnDevice starts a device actor owning bb (which nobody else may run
// from now on) on sys, named "device/<backbone name>".
func SpawnDevice(sys *actor.ActorSystem, bb model.Backbone, src ParamsSource, cfg DeviceConfig) (*DeviceHandle, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	q, err := sched.New(cfg.Sched, nil)
	if err != nil {
		return nil, err
	}
	h := &DeviceHandle{done: make(chan struct{}), bb: bb}
	d := &deviceActor{
		cfg: cfg, bb: bb, src: src, q: q, log: slog.With("actor", "device", "backbone", bb.Info().Name),
		sys: sys, loading: map[string][]*job{}, loadSem: make(chan struct{}, cfg.LoadWorkers),
		work: make(chan *batch, 1), done: h.done,
	}
	h.d = d
	// Blobs are unmapped as soon as they leave the host tier: eviction
	// only takes unpinned entries, and an entry stays pinned from a
	// request's admission until its batch is answered.
	d.host = newByteLRU[[]byte](cfg.HostCacheBytes, func(_ string, b []byte) { offHeapFree(b) })
	props := actor.PropsFromProducer(func() actor.Actor { return d })
	pid, err := sys.Root.SpawnNamed(props, "device/"+bb.Info().Name)
	if err != nil {
		return nil, fmt.Errorf("actors: spawn device actor: %w", err)
	}
	h.PID = pid
	return h, nil
}

// job is one Infer or Work waiting in the device actor.
type job struct {
	prefetch *prefetchWait // set on Prefetch's marker jobs, which only wait for a load
	msg      *Infer        // nil for work
	work     *Work         // set for work
	sender   *actor.PID
	req      sched.Request
	enq      time.Time
	tokens   int
	pinned   bool // holds a pin on its params in the host tier
	queued   bool // a work job counted in deviceActor.queuedWork
}

// batch is the unit of work handed to the compute goroutine: inference
// jobs, or one work job alone.
type batch struct {
	jobs  []*job
	work  *job
	blobs map[string][]byte // digest -> compact params, for uploads on a device-tier miss
	start time.Time
}

// batchDone is the compute goroutine's answer to a batch.
type batchDone struct {
	b        *batch
	workErr  error // the work's answer (Run's error, or a panic's)
	workRan  bool  // Run returned normally (its time calibrates the charge)
	workTime time.Duration
	outputs  [][]float32 // one per text of every job whose params uploaded, in job order
	errs     map[string]error
	err      error
	compute  time.Duration
	vplms    int
	dev      tierStats
}

type tierStats struct {
	entries                 int
	bytes                   int64
	hits, misses, evictions uint64
}

type loaded struct {
	digest string
	blob   []byte
	err    error
}

type tick struct{}

type deviceActor struct {
	cfg     DeviceConfig
	bb      model.Backbone
	src     ParamsSource
	q       *sched.Queue
	log     *slog.Logger
	sys     *actor.ActorSystem
	self    *actor.PID
	host    *byteLRU[[]byte]
	loading map[string][]*job
	pending int
	loadSem chan struct{}
	work    chan *batch
	done    chan struct{}
	started bool // the compute goroutine runs (once, even if the actor restarts)
	busy    bool
	timer   *time.Timer
	armed   bool
	stopped bool // draining or stopping: no new work
	closed  bool // work is closed

	releaseArmed atomic.Bool    // a storage page release is scheduled
	loads        sync.WaitGroup // load goroutines running

	batches, rows uint64
	dev           tierStats

	queuedWork int                 // work jobs in the fair queue
	inferCal   workCal             // recent inference batches: tokens and seconds
	workCal    map[string]*workCal // recent work per tenant
	works      uint64              // work items run
}

func (d *deviceActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		d.self = ctx.Self()
		if !d.started {
			d.started = true
			go d.compute(d.work, d.done)
		}
	case *Infer:
		d.onInfer(ctx, m)
	case *Work:
		d.onWork(ctx, m)
	case *cancelWork:
		d.onCancelWork(m)
	case *loaded:
		d.onLoaded(m)
	case *batchDone:
		d.onBatchDone(m)
	case tick:
		d.armed = false
		d.dispatch()
	case *SetTenant:
		err := d.q.SetTenant(m.Name, m.Config)
		if ctx.Sender() != nil {
			ctx.Respond(&Ack{Err: err})
		}
	case *Prefetch:
		d.onPrefetch(ctx, m)
	case *GetDeviceStats:
		ctx.Respond(d.stats())
	case *drain:
		d.beginStop()
		ctx.Respond(&Ack{})
	case *actor.Stopping:
		// Normally drained already; an actor system shutting down
		// without Stop gets the same treatment (replies of the batch in
		// flight are then lost with the actor).
		d.beginStop()
		if !d.closed {
			d.closed = true
			close(d.work)
		}
	}
}

// beginStop refuses new work and answers everything waiting; compute
// ends after the batch in flight (onBatchDone closes work).
func (d *deviceActor) beginStop() {
	if d.stopped {
		return
	}
	d.stopped = true
	if d.timer != nil {
		d.timer.Stop()
	}
	d.failAll(fmt.Errorf("%w: device actor stopping", ErrUnavailable))
	if !d.busy && !d.closed {
		d.closed = true
		close(d.work)
	}
}

// Ack answers a control message.
type Ack struct{ Err error }

func (d *deviceActor) reply(j *job, r *InferResult) {
	if j.sender != nil {
		d.sys.Root.Send(j.sender, r)
	}
}

// fail answers a job that will not run with err.
func (d *deviceActor) fail(j *job, err error) {
	if j.work != nil {
		d.unqueueWork(j)
		if j.sender != nil {
			d.sys.Root.Send(j.sender, &WorkDone{Err: err, Queue: time.Since(j.enq)})
		}
		return
	}
	d.reply(j, &InferResult{Err: err})
}

func (d *deviceActor) onWork(ctx actor.Context, m *Work) {
	j := &job{work: m, sender: ctx.Sender(), enq: time.Now()}
	if d.stopped {
		d.fail(j, fmt.Errorf("%w: device actor stopping", ErrUnavailable))
		return
	}
	if m.Run == nil {
		d.fail(j, fmt.Errorf("%w: work without Run", ErrBadRequest))
		return
	}
	// Rows = a whole batch: Pop stops before it (or takes it alone), so
	// work never shares a pass with inference.
	j.tokens = d.workCost(m)
	j.req = sched.Request{Tenant: m.Tenant, Cost: j.tokens, Rows: d.cfg.MaxBatchRows, Value: j}
	if err := d.q.Push(&j.req); err != nil {
		d.fail(j, schedError(err))
		return
	}
	j.queued = true
	d.queuedWork++
	d.dispatch()
}

// unqueueWork counts a work job out of the queue (popped or removed).
func (d *deviceActor) unqueueWork(j *job) {
	if j.queued {
		j.queued = false
		d.queuedWork--
	}
}

func (d *deviceActor) onCancelWork(m *cancelWork) {
	for _, r := range d.q.Remove(func(r *sched.Request) bool { return r.Value.(*job).work == m.w }) {
		d.fail(r.Value.(*job), errWorkCanceled)
	}
}

// unpin releases a job's hold on its params.
func (d *deviceActor) unpin(j *job) {
	if j.pinned {
		j.pinned = false
		d.host.unpin(j.msg.Digest)
	}
}

func (d *deviceActor) onInfer(ctx actor.Context, m *Infer) {
	j := &job{msg: m, sender: ctx.Sender(), enq: time.Now()}
	if d.stopped {
		d.reply(j, &InferResult{Err: fmt.Errorf("%w: device actor stopping", ErrUnavailable)})
		return
	}
	if len(m.IDs) == 0 {
		d.reply(j, &InferResult{Err: fmt.Errorf("%w: no texts", ErrBadRequest)})
		return
	}
	for _, s := range m.IDs {
		if len(s) == 0 {
			d.reply(j, &InferResult{Err: fmt.Errorf("%w: empty id sequence", ErrBadRequest)})
			return
		}
		j.tokens += len(s)
	}
	j.req = sched.Request{Tenant: m.Tenant, Cost: j.tokens, Rows: len(m.IDs), Value: j}
	if m.Digest == "" {
		d.admit(j)
		d.dispatch()
		return
	}
	if _, ok := d.host.get(m.Digest); ok {
		// Pinned from admission to answer: a queued request's params
		// are never evicted under it.
		d.host.pin(m.Digest)
		j.pinned = true
		d.admit(j)
		d.dispatch()
		return
	}
	if d.pending >= d.cfg.MaxPending {
		d.reply(j, &InferResult{Err: fmt.Errorf("%w: %d requests wait for adapters to load", ErrOverloaded, d.pending)})
		return
	}
	d.park(j)
}

// park holds a job until its params are loaded, starting the load.
func (d *deviceActor) park(j *job) {
	if j.prefetch == nil {
		d.pending++
	}
	dg := j.msg.Digest
	parked, inFlight := d.loading[dg]
	d.loading[dg] = append(parked, j)
	if !inFlight {
		d.loads.Add(1)
		go d.load(dg)
	}
}

// onPrefetch parks a marker job per missing digest; the Ack goes out when
// the last of them is loaded.
func (d *deviceActor) onPrefetch(ctx actor.Context, m *Prefetch) {
	w := &prefetchWait{sender: ctx.Sender()}
	if d.stopped {
		d.sys.Root.Send(w.sender, &Ack{Err: fmt.Errorf("%w: device actor stopping", ErrUnavailable)})
		return
	}
	for _, dg := range m.Digests {
		if _, ok := d.host.peek(dg); ok || dg == "" {
			continue
		}
		w.left++
		d.park(&job{prefetch: w, msg: &Infer{Digest: dg}})
	}
	if w.left == 0 && w.sender != nil {
		d.sys.Root.Send(w.sender, &Ack{})
	}
}

type prefetchWait struct {
	sender *actor.PID
	left   int
	err    error
}

// loaded counts one of the prefetch's loads; the last one answers.
func (w *prefetchWait) loaded(sys *actor.ActorSystem, err error) {
	w.left--
	if err != nil && w.err == nil {
		w.err = err
	}
	if w.left == 0 && w.sender != nil {
		sys.Root.Send(w.sender, &Ack{Err: w.err})
	}
}

// PageReleaser is an optional ParamsSource capability: drop the process's
// mappings of storage pages read so far (storage.Store: Badger maps its
// files, so blobs copied into the host tier would otherwise count twice in
// RSS).
type PageReleaser interface {
	ReleasePages() (int64, error)
}

// load reads one params blob and copies it off the Go heap, off the
// actor's loop, at most LoadWorkers at a time.
func (d *deviceActor) load(digest string) {
	defer d.loads.Done()
	d.loadSem <- struct{}{}
	blob, err := d.src.GetBlob(digest)
	if err == nil {
		blob, err = offHeapCopy(blob)
	}
	<-d.loadSem
	d.sys.Root.Send(d.self, &loaded{digest: digest, blob: blob, err: err})
	if rel, ok := d.src.(PageReleaser); ok && d.releaseArmed.CompareAndSwap(false, true) {
		// At most once a second, after loads.
		time.AfterFunc(time.Second, func() {
			if _, err := rel.ReleasePages(); err != nil && !errors.Is(err, storage.ErrClosed) {
				d.log.Warn("releasing storage pages", "err", err)
			}
			d.releaseArmed.Store(false)
		})
	}
}

func (d *deviceActor) onLoaded(m *loaded) {
	all := d.loading[m.digest]
	delete(d.loading, m.digest)
	jobs := all[:0]
	for _, j := range all {
		if j.prefetch != nil {
			j.prefetch.loaded(d.sys, m.err)
			continue
		}
		jobs = append(jobs, j)
	}
	d.pending -= len(jobs)
	if m.err != nil {
		d.log.Warn("params load failed", "digest", m.digest, "err", m.err)
		for _, j := range jobs {
			d.reply(j, &InferResult{Err: fmt.Errorf("%w: params %s: %v", ErrUnavailable, m.digest, m.err)})
		}
		return
	}
	if d.stopped || len(jobs) == 0 && len(all) == 0 {
		offHeapFree(m.blob) // nobody waits for it (stopping)
		return
	}
	// Inserted with one pin per waiting job, so it cannot be evicted
	// before they run.
	d.host.insert(m.digest, m.blob, int64(len(m.blob)), len(jobs))
	now := time.Now()
	for _, j := range jobs {
		j.pinned = true
		if dl := j.msg.Deadline; !dl.IsZero() && now.After(dl) {
			d.unpin(j)
			d.reply(j, &InferResult{Err: fmt.Errorf("%w: deadline passed while its params loaded", ErrTimeout)})
			continue
		}
		d.admit(j)
	}
	d.dispatch()
}

// admit pushes a job into the fair queue, answering it at once if the
// tenant or the queue is over its limits.
func (d *deviceActor) admit(j *job) {
	if err := d.q.Push(&j.req); err != nil {
		d.unpin(j)
		d.reply(j, &InferResult{Err: schedError(err)})
	}
}

func schedError(err error) error {
	switch {
	case errors.Is(err, sched.ErrQueueFull):
		return fmt.Errorf("%w: %v", ErrOverloaded, err)
	case errors.Is(err, sched.ErrTenantLimit):
		return fmt.Errorf("%w: %v", ErrTenantOverLimit, err)
	case errors.Is(err, sched.ErrRateLimited):
		return fmt.Errorf("%w: %v", ErrRateLimited, err)
	}
	return fmt.Errorf("%w: %v", ErrBadRequest, err)
}

// dispatch hands the next batch to the compute goroutine if it is idle.
func (d *deviceActor) dispatch() {
	if d.busy || d.stopped || d.q.Len() == 0 {
		return
	}
	now := time.Now()
	// Waiting to fill a batch is pointless when work (which runs alone)
	// is queued: it may be next.
	if oldest, ok := d.q.Oldest(); ok && d.q.Len() < d.cfg.MaxBatchRows && d.queuedWork == 0 {
		if wait := d.cfg.MaxWait - now.Sub(oldest); wait > 0 {
			if !d.armed {
				d.armed = true
				self, sys := d.self, d.sys
				d.timer = time.AfterFunc(wait, func() { sys.Root.Send(self, tick{}) })
			}
			return
		}
	}
	reqs := d.q.Pop(d.cfg.MaxBatchRows, d.cfg.MaxBatchTokens)
	b := &batch{start: now}
	for _, r := range reqs {
		j := r.Value.(*job)
		if j.work != nil {
			d.unqueueWork(j)
			if dl := j.work.Deadline; !dl.IsZero() && now.After(dl) {
				d.q.Done(r)
				d.fail(j, fmt.Errorf("%w: work waited %v in the device queue", ErrTimeout, now.Sub(j.enq).Round(time.Microsecond)))
				continue
			}
			// Pop takes work alone (its Rows fill a batch).
			b.work = j
			continue
		}
		if dl := j.msg.Deadline; !dl.IsZero() && now.After(dl) {
			d.q.Done(r)
			d.unpin(j)
			d.reply(j, &InferResult{Err: fmt.Errorf("%w: waited %v in the device queue", ErrTimeout, now.Sub(j.enq).Round(time.Microsecond))})
			continue
		}
		if dg := j.msg.Digest; dg != "" {
			blob, ok := d.host.peek(dg)
			if !ok || !j.pinned {
				// Cannot happen: admitted jobs hold a pin.
				d.q.Done(r)
				d.unpin(j)
				d.reply(j, &InferResult{Err: fmt.Errorf("%w: params %s not resident at dispatch", ErrInternal, dg)})
				continue
			}
			if b.blobs == nil {
				b.blobs = map[string][]byte{}
			}
			b.blobs[dg] = blob
		}
		b.jobs = append(b.jobs, j)
	}
	if len(b.jobs) == 0 && b.work == nil {
		d.dispatch()
		return
	}
	d.busy = true
	d.work <- b
}

func (d *deviceActor) onBatchDone(m *batchDone) {
	d.busy = false
	if w := m.b.work; w != nil {
		d.onWorkDone(m, w)
	}
	if len(m.b.jobs) > 0 {
		d.onInferDone(m)
	}
	if d.stopped {
		if !d.closed {
			d.closed = true
			close(d.work)
		}
		return
	}
	d.dispatch()
}

// onInferDone answers a batch's inference jobs.
func (d *deviceActor) onInferDone(m *batchDone) {
	d.batches++
	d.dev = m.dev
	rows, tokens := 0, 0
	for _, j := range m.b.jobs {
		rows += len(j.msg.IDs)
		tokens += j.tokens
	}
	d.rows += uint64(rows)
	if tokens > 0 && m.err == nil {
		d.inferCal.add(tokens, m.compute, 0.9)
	}
	k := 0
	for _, j := range m.b.jobs {
		n := len(j.msg.IDs)
		res := &InferResult{Queue: m.b.start.Sub(j.enq), Compute: m.compute, BatchRows: rows, BatchVPLMs: m.vplms}
		if perr := m.errs[j.msg.Digest]; perr != nil {
			res.Err = perr // its params never reached the forward pass
		} else if m.err != nil {
			res.Err = m.err
		} else {
			res.Outputs = m.outputs[k : k+n : k+n]
			k += n
		}
		d.unpin(j)
		d.q.Done(&j.req)
		d.reply(j, res)
	}
}

// onWorkDone answers a work job and learns its cost per token.
func (d *deviceActor) onWorkDone(m *batchDone, j *job) {
	d.works++
	w := j.work
	if m.workRan {
		c := d.workCal[w.Tenant]
		if c == nil {
			if d.workCal == nil {
				d.workCal = map[string]*workCal{}
			}
			c = &workCal{}
			d.workCal[w.Tenant] = c
		}
		c.add(max(1, w.Tokens), m.workTime, 0.8)
	}
	d.q.Done(&j.req)
	if j.sender != nil {
		d.sys.Root.Send(j.sender, &WorkDone{Err: m.workErr, Queue: m.b.start.Sub(j.enq), Compute: m.workTime})
	}
}

// failAll answers every waiting request with err (the actor is stopping).
func (d *deviceActor) failAll(err error) {
	for dg, jobs := range d.loading {
		for _, j := range jobs {
			if j.prefetch != nil {
				j.prefetch.loaded(d.sys, err)
			} else {
				d.pending--
				d.fail(j, err)
			}
		}
		delete(d.loading, dg)
	}
	for _, r := range d.q.Remove(func(*sched.Request) bool { return true }) {
		j := r.Value.(*job)
		d.unpin(j)
		d.fail(j, err)
	}
}

func (d *deviceActor) stats() *DeviceStats {
	return &DeviceStats{
		Backbone: d.bb.Info().Name, Batches: d.batches, Rows: d.rows,
		HostEntries: d.host.len(), HostBytes: d.host.used, HostHits: d.host.hits, HostMisses: d.host.misses, HostEvicts: d.host.evictions,
		DeviceEntries: d.dev.entries, DeviceBytes: d.dev.bytes, DeviceHits: d.dev.hits, DeviceMisses: d.dev.misses, DevEvict: d.dev.evictions,
		Pending: d.pending, Queued: d.q.Len(), Sched: d.q.Stats(), Works: d.works,
	}
}

// compute runs batches on the device, off the actor's message loop, so the
// mailbox keeps flowing (requests queue, params load) during a forward
// pass. It owns the backbone's device, the runner and the device tier of
// the params cache.
func (d *deviceActor) compute(work <-chan *batch, done chan<- struct{}) {
	defer close(done)
	runner := model.NewRunner(d.bb)
	tier := newByteLRU[*model.DeviceParams](d.cfg.DeviceCacheBytes, func(_ string, p *model.DeviceParams) { p.Free() })
	defer func() {
		tier.clear()
		_ = runner.Close()
	}()
	var items []model.Item
	params := map[string]*model.DeviceParams{}
	for b := range work {
		// A batch holds inference or one work item (Pop never mixes
		// them, see onWork); both would run one after the other.
		res := &batchDone{b: b}
		if len(b.jobs) > 0 {
			res = d.run(b, runner, tier, params, &items)
		}
		if b.work != nil {
			d.runWork(b.work.work, res)
		}
		d.sys.Root.Send(d.self, res)
	}
}

// runWork runs one work item into res. A panic in it (a bug) is its
// error, not the process's end.
func (d *deviceActor) runWork(w *Work, res *batchDone) {
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			d.log.Error("panic in device work", "tenant", w.Tenant, "panic", v)
			res.workErr = fmt.Errorf("%w: device work: panic: %v", ErrInternal, v)
			res.workRan = false
		}
		res.workTime = time.Since(start)
	}()
	res.workErr = w.Run(d.bb)
	res.workRan = true
}

// run computes one batch. A panic (a bug) fails the batch, not the process.
func (d *deviceActor) run(b *batch, runner *model.Runner, tier *byteLRU[*model.DeviceParams], params map[string]*model.DeviceParams, items *[]model.Item) (res *batchDone) {
	start := time.Now()
	res = &batchDone{b: b}
	clear(params)
	defer func() {
		for dg := range params {
			tier.unpin(dg)
		}
		if v := recover(); v != nil {
			d.log.Error("panic in a forward pass", "panic", v)
			res.err = fmt.Errorf("%w: forward pass: panic: %v", ErrInternal, v)
			res.outputs = nil
		}
		res.vplms = len(b.blobs)
		res.compute = time.Since(start)
		res.dev = tierStats{entries: tier.len(), bytes: tier.used, hits: tier.hits, misses: tier.misses, evictions: tier.evictions}
	}()
	for dg := range b.blobs {
		if p, ok := tier.get(dg); ok {
			tier.pin(dg)
			params[dg] = p
		}
	}
	for dg, blob := range b.blobs {
		if _, ok := params[dg]; ok {
			continue
		}
		p, err := runner.Upload(blob)
		if err != nil {
			if res.errs == nil {
				res.errs = map[string]error{}
			}
			res.errs[dg] = fmt.Errorf("%w: params %s: %v", ErrInternal, dg, err)
			continue
		}
		tier.insert(dg, p, int64(p.Bytes()), 1)
		params[dg] = p
	}
	*items = (*items)[:0]
	for _, j := range b.jobs {
		if res.errs[j.msg.Digest] != nil {
			continue
		}
		p := params[j.msg.Digest]
		for _, ids := range j.msg.IDs {
			*items = append(*items, model.Item{IDs: ids, Params: p, Lower: j.msg.Lower})
		}
	}
	if len(*items) > 0 {
		var err error
		res.outputs, err = runner.Forward(context.Background(), *items)
		if err != nil {
			res.err = fmt.Errorf("%w: forward pass: %v", ErrInternal, err)
		}
	}
	return res
}
