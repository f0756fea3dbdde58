package actors

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/train"
	"github.com/smile-vplm/smile/storage"
)

// The trainer: training jobs of a node. A job trains one vPLM's adapter and
// head (train.MethodAdapter) on a dataset, on the node that holds the
// vPLM's backbone, in its own goroutine:
//
//	QUEUED    waiting for one of TrainerConfig.MaxJobs slots
//	CACHING   the engine's inputs (states at the cut layer) for the training
//	          and validation examples, read from the representation cache or
//	          computed into it (RepCache)
//	TRAINING  train.Fit: every step and validation batch is device Work of
//	          the vPLM's tenant, so training shares the device fairly with
//	          that tenant's and everyone else's inference
//	SUCCEEDED the best epoch's params are a new blob, then a new catalog
//	          version (current + 1), then the vPLM actor reloads
//	FAILED    with a typed error in the record; CANCELED by CancelJob
//
// Nothing reaches the catalog before SUCCEEDED: a failed, canceled or
// superseded job (ErrModelChanged: the vPLM got another version or was
// deleted meanwhile) leaves the vPLM as it was. A job's record (TrainJob)
// and its last checkpoint are in Badger (storage.NSJob, NSCheckpoint),
// written together after every epoch; a node that stops (or crashes) with
// jobs running continues them from their last checkpoint at its next start
// (ResumeJobs). At most one job per vPLM is active (ErrJobConflict).
//
// Data: a named dataset trains on its pulled train split and validates on
// its validation split. Uploaded examples are stored as a blob (the job's
// dataset is "upload:<sha256 hex of the blob>") and split with
// datasets.Split (seed datasets.SplitSeed, stratified per label, each
// example keyed by its index in the upload): its train and test parts
// train, its validation part (about 10%) validates; an upload too small to
// give any validation example validates on its training examples. Texts
// are tokenized exactly as serving tokenizes them (tokenizeForServing), so
// the model trains on the ids it will see.
//
// A plot-mode vPLM (VPLM.mode "plot") trains in the mode it serves in:
// its engine inputs are computed from its PLOT table's states at the cut
// (train.ComputeInputsLower) and cached under a key that names the table,
// so caches of the two modes never mix; full fine-tuning of a plot vPLM is
// a bad request (its lower layers never run).
//
// The same job system builds PLOT tables (plot.go): a job of kind "table"
// goes through the same records, slots, progress, cancel and resume.
//
// Files: trainer.go (the service's methods, records), trainrun.go (a job's
// run), traindata.go (its examples), repcache.go (the representation
// cache), dataset.go (train.Dataset over it), work.go (device work),
// plot.go (PLOT tables: building, opening, serving).
//
// Locks: trainer.mu is taken before a runningJob's mu, never the other way;
// trainer.tableMu is taken before trainer.mu where both are held;
// RepCache.mu, RepSet.mu, plotTables.mu and a plot.Table's lock are leaves.

// TrainerConfig configures a node's trainer.
type TrainerConfig struct {
	// DataDir holds pulled datasets (<DataDir>/datasets/<name>); a dataset
	// missing there is pulled on first use. "" allows uploaded examples only.
	DataDir string
	// MaxJobs bounds the jobs that run at once; the others wait, QUEUED.
	MaxJobs int
	// Cache sizes the representation caches.
	Cache RepCacheConfig
	// PersistEvery bounds how often a running job's step progress is
	// written to storage (state changes and checkpoints always are).
	PersistEvery time.Duration
	// WatchEvery bounds how often WatchJob delivers a changing record.
	WatchEvery time.Duration
	// AfterCheckpoint, if set, runs on a job's goroutine after each of its
	// checkpoints is stored, with the job's context (tests stop a node at a
	// known point with it).
	AfterCheckpoint func(ctx context.Context, jobID string, epoch int)
	// Pull fetches a catalog dataset into dataDir; nil: datasets.Pull (npm).
	Pull func(ctx context.Context, dataDir, name string) error
	// Plot configures PLOT tables: their builds and the opened tables'
	// memory.
	Plot PlotConfig
}

// DefaultTrainerConfig: two jobs at once, progress persisted every 2 s and
// watched at up to 10 updates a second.
func DefaultTrainerConfig() TrainerConfig {
	return TrainerConfig{MaxJobs: 2, Cache: DefaultRepCacheConfig(), PersistEvery: 2 * time.Second, WatchEvery: 100 * time.Millisecond,
		Plot: DefaultPlotConfig()}
}

// Validate checks the configuration.
func (c TrainerConfig) Validate() error {
	switch {
	case c.MaxJobs < 1 || c.MaxJobs > 1024:
		return fmt.Errorf("%w: max training jobs %d: want 1..1024", ErrBadConfig, c.MaxJobs)
	case c.PersistEvery < 0 || c.WatchEvery < 0:
		return fmt.Errorf("%w: persist every %v, watch every %v: want >= 0", ErrBadConfig, c.PersistEvery, c.WatchEvery)
	}
	if err := c.Plot.Validate(); err != nil {
		return err
	}
	return c.Cache.Validate()
}

// TrainStore is what the trainer keeps in storage (storage.Store).
type TrainStore interface {
	RepStore
	PlotStore
	PutBlob(data []byte) (string, error)
	GetBlob(digest string) ([]byte, error)
}

// TrainRequest starts a training job.
type TrainRequest struct {
	Model string
	// Dataset names a catalog dataset (the node's pulled copy, pulled on
	// first use), or "" to train on Examples.
	Dataset string
	// Examples are uploaded examples (Dataset == ""), stored with the job.
	Examples []datasets.Example
	// Config: nil or zero fields take train.Defaults of the method.
	Config *smilepb.TrainConfig
	// Full runs full fine-tuning of a private backbone copy instead, for
	// comparison: the job reports its validation accuracy and commits
	// nothing (a full copy is never served as a vPLM). A plot-mode vPLM
	// cannot: its lower layers never run.
	Full bool
}

// jobMethod is what a job trains.
func jobMethod(full bool) train.Method {
	if full {
		return train.MethodFull
	}
	return train.MethodAdapter
}

// Causes of a job's context ending.
var (
	errJobCanceled = errors.New("actors: training job canceled")
	errShutdown    = errors.New("actors: node shutting down")
)

// uploadPrefix marks a job dataset of uploaded examples: "upload:<hex>",
// the sha256 of the examples' blob (a JSON array of datasets.Example).
const uploadPrefix = "upload:"

// resultMarker prefixes a checkpoint that is a finished run's params blob
// digest: a job stopped while committing commits that blob when resumed.
const resultMarker = "SMILE-RESULT:"

type trainer struct {
	s     *Service
	store TrainStore
	cfg   TrainerConfig
	cache *RepCache
	log   *slog.Logger
	slots chan struct{}

	mu     sync.Mutex
	jobs   map[string]*runningJob // active in this process, by id
	active map[string]string      // jobKey (vPLM id, or "table:" + table id) -> its active job's id
	specs  map[string]*specEntry  // backbone -> its shared TrainSpec
	blas   map[string]*cpu.Device // backbone -> private GEMM device, when its own is not a train.BLAS
	closed bool
	wg     sync.WaitGroup

	pullMu sync.Mutex // one dataset pull at a time

	// PLOT tables (plot.go).
	tableMu sync.Mutex // serialises changes of table manifests
	tables  *plotTables
}

// runningJob is a job whose goroutine runs in this process.
type runningJob struct {
	id, key string // key: what the job holds (jobKey)
	cancel  context.CancelCauseFunc
	done    chan struct{}

	mu        sync.Mutex
	rec       *smilepb.TrainJob
	changed   chan struct{} // closed and replaced on every change
	persisted time.Time
}

// specEntry is a backbone's TrainSpec, computed once per node.
type specEntry struct {
	ready       chan struct{}
	spec        *model.TrainSpec
	fingerprint string
	err         error
}

// EnableTraining starts the node's trainer over store (jobs, checkpoints,
// caches, uploaded examples, PLOT tables) and serves plot-mode vPLMs from
// its tables. Call it once, before serving; then ResumeJobs.
func (s *Service) EnableTraining(store TrainStore, cfg TrainerConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cache, err := NewRepCache(store, cfg.Cache)
	if err != nil {
		return err
	}
	log := s.env.Log
	if log == nil {
		log = slog.Default()
	}
	s.tr = &trainer{
		s: s, store: store, cfg: cfg, cache: cache, log: log.With("part", "trainer"),
		slots: make(chan struct{}, cfg.MaxJobs), jobs: map[string]*runningJob{}, active: map[string]string{},
		specs: map[string]*specEntry{}, blas: map[string]*cpu.Device{},
	}
	s.tr.tables = newPlotTables(s.tr)
	// Plot-mode vPLMs find their tables through the env; it is set here,
	// before the node serves (no vPLM actor runs yet).
	if s.env.Lower == nil {
		s.env.Lower = s.tr.lowerFor
	}
	return nil
}

func (s *Service) trainer() (*trainer, error) {
	if s.tr == nil {
		return nil, fmt.Errorf("%w: training is not enabled on this node", ErrUnavailable)
	}
	return s.tr, nil
}

// Shutdown stops the trainer: running jobs stop at their next step (or
// batch of table entries) and stay QUEUED/CACHING/TRAINING in storage, for
// ResumeJobs at the next start; opened tables stop warming. It waits for
// their goroutines (or ctx).
func (s *Service) Shutdown(ctx context.Context) error {
	t := s.tr
	if t == nil {
		return nil
	}
	t.mu.Lock()
	t.closed = true
	for _, j := range t.jobs {
		j.cancel(errShutdown)
	}
	t.mu.Unlock()
	t.tables.close()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("%w: training jobs still stopping: %w", ErrTimeout, ctx.Err())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, d := range t.blas {
		d.Close()
		delete(t.blas, name)
	}
	return nil
}

// Train validates a training request, stores the job and starts it; it
// returns the QUEUED record at once.
func (s *Service) Train(ctx context.Context, req TrainRequest) (*smilepb.TrainJob, error) {
	t, err := s.trainer()
	if err != nil {
		return nil, err
	}
	entry, err := s.Get(ctx, req.Model)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) && !errors.Is(err, ErrNotFound) {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, err
	}
	dev, ok := s.devices[entry.Backbone]
	if !ok {
		return nil, fmt.Errorf("%w: backbone %q of %s is not served on this node", ErrUnavailable, entry.Backbone, entry.Id)
	}
	if req.Full && plotMode(entry) {
		return nil, fmt.Errorf("%w: %s runs in plot mode (its layers 1..cut come from table %s): full fine-tuning would train layers it never runs",
			ErrBadRequest, entry.Id, entry.Table)
	}
	cfg, err := trainConfig(req.Config, jobMethod(req.Full))
	if err != nil {
		return nil, err
	}
	// Fail fast on a busy vPLM (checked again below, under the lock that
	// makes it hold, once the examples are read and checked).
	t.mu.Lock()
	other, busy := t.active[entry.Id]
	t.mu.Unlock()
	if busy {
		return nil, fmt.Errorf("%w: %s is trained by job %s", ErrJobConflict, entry.Id, other)
	}
	rec := &smilepb.TrainJob{
		Model: entry.Id, Tenant: entry.Tenant, State: smilepb.JobState_JOB_QUEUED, Stage: "queued",
		Config: trainConfigPB(cfg), Epochs: uint32(cfg.Epochs), ValAccuracy: -1, BestValAccuracy: -1,
		BaseVersion: entry.Version, Full: req.Full,
	}
	var data *jobData
	switch {
	case req.Dataset != "" && len(req.Examples) > 0:
		return nil, fmt.Errorf("%w: both a dataset (%q) and uploaded examples: send one", ErrBadRequest, req.Dataset)
	case req.Dataset != "":
		rec.Dataset = req.Dataset
		if data, err = t.namedData(ctx, req.Dataset); err != nil {
			return nil, err
		}
	default:
		if len(req.Examples) == 0 {
			return nil, fmt.Errorf("%w: no examples: name a dataset or upload examples", ErrBadDataset)
		}
		data = uploadData(req.Examples)
	}
	if err := data.prepare(dev.Backbone(), entry); err != nil {
		return nil, err
	}
	if req.Dataset == "" {
		b, err := json.Marshal(req.Examples)
		if err != nil {
			return nil, fmt.Errorf("%w: encoding examples: %w", ErrInternal, err)
		}
		digest, err := t.store.PutBlob(b)
		if err != nil {
			return nil, fmt.Errorf("%w: storing examples: %w", ErrUnavailable, err)
		}
		rec.Dataset = uploadPrefix + strings.TrimPrefix(digest, "sha256:")
	}
	rec.TrainExamples, rec.ValidationExamples = uint64(len(data.trainIDs)), uint64(len(data.valIDs))
	now := s.now()
	rec.CreatedUnixMs, rec.UpdatedUnixMs = now.UnixMilli(), now.UnixMilli()
	rec.Id = newJobID(now)

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("%w: node shutting down", ErrUnavailable)
	}
	if other, busy := t.active[entry.Id]; busy {
		return nil, fmt.Errorf("%w: %s is trained by job %s", ErrJobConflict, entry.Id, other)
	}
	if other, err := t.storedActive(jobKey(rec)); err != nil {
		return nil, err
	} else if other != "" {
		return nil, fmt.Errorf("%w: %s has job %s left unfinished (it resumes when the node restarts, or cancel it)", ErrJobConflict, entry.Id, other)
	}
	if err := t.put(rec); err != nil {
		return nil, err
	}
	t.start(rec, nil, data)
	return proto.CloneOf(rec), nil
}

// storedActive finds an active job holding key (jobKey) in storage that
// is not running here (left by a stop, not resumed). t.mu is held.
func (t *trainer) storedActive(key string) (string, error) {
	var found string
	err := t.scan(func(r *smilepb.TrainJob) {
		if jobKey(r) == key && activeState(r.State) && t.jobs[r.Id] == nil {
			found = r.Id
		}
	})
	return found, err
}

// JobKindTable is TrainJob.kind of a job that builds a PLOT table; ""
// is a training job.
const JobKindTable = "table"

// jobKey is what a job holds while active, one job at a time: its vPLM,
// or its table ("table:<id>"; ':' is never in a vPLM id).
func jobKey(r *smilepb.TrainJob) string {
	if r.Kind == JobKindTable {
		return "table:" + r.Table
	}
	return r.Model
}

func activeState(s smilepb.JobState) bool {
	return s == smilepb.JobState_JOB_QUEUED || s == smilepb.JobState_JOB_CACHING || s == smilepb.JobState_JOB_TRAINING
}

func newJobID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("job-%011x-%s", now.UnixMilli(), hex.EncodeToString(b[:]))
}

// Job returns a job's record.
func (s *Service) Job(ctx context.Context, id string) (*smilepb.TrainJob, error) {
	t, err := s.trainer()
	if err != nil {
		return nil, err
	}
	rec, _, err := t.snapshot(id)
	return rec, err
}

// Jobs lists the jobs of a vPLM or of a PLOT table (by its id), or all
// jobs (""), newest first.
func (s *Service) Jobs(ctx context.Context, modelID string) ([]*smilepb.TrainJob, error) {
	t, err := s.trainer()
	if err != nil {
		return nil, err
	}
	var out []*smilepb.TrainJob
	t.mu.Lock()
	err = t.scan(func(r *smilepb.TrainJob) {
		if modelID != "" && r.Model != modelID && r.Table != modelID {
			return
		}
		if j := t.jobs[r.Id]; j != nil {
			r = j.snapshot() // fresher than the stored progress
		}
		out = append(out, r)
	})
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *smilepb.TrainJob) int {
		if c := cmp.Compare(b.CreatedUnixMs, a.CreatedUnixMs); c != 0 {
			return c
		}
		return strings.Compare(b.Id, a.Id)
	})
	return out, nil
}

// CancelJob stops a job at its next step (a table job: after its batch of
// entries in flight) and waits for it to end (or ctx); the catalog is left
// as it was (a canceled table stays incomplete; building it again
// computes only the entries it lacks). Canceling an ended job returns it
// as is.
func (s *Service) CancelJob(ctx context.Context, id string) (*smilepb.TrainJob, error) {
	t, err := s.trainer()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	j := t.jobs[id]
	if j != nil {
		j.cancel(errJobCanceled)
		t.mu.Unlock()
		select {
		case <-j.done:
		case <-ctx.Done():
		}
		rec, _, err := t.snapshot(id)
		return rec, err
	}
	defer t.mu.Unlock()
	rec, err := t.get(id)
	if err != nil {
		return nil, err
	}
	if activeState(rec.State) {
		// Left unfinished by a stop and not resumed: end it here.
		rec.State, rec.Stage, rec.UpdatedUnixMs = smilepb.JobState_JOB_CANCELED, "canceled", s.now().UnixMilli()
		if err := t.put(rec, storage.Record{NS: storage.NSCheckpoint, Key: id, Delete: true}); err != nil {
			return nil, err
		}
	}
	return rec, nil
}

// WatchJob calls fn with the job's record at once, then whenever it
// changes (at most every TrainerConfig.WatchEvery; the final state is
// always delivered), and returns nil once the job has ended, fn's error,
// or ctx's.
func (s *Service) WatchJob(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) error {
	t, err := s.trainer()
	if err != nil {
		return err
	}
	for {
		rec, changed, err := t.snapshot(id)
		if err != nil {
			return err
		}
		delivered := time.Now()
		if err := fn(rec); err != nil {
			return err
		}
		if !activeState(rec.State) {
			return nil
		}
		var poll <-chan time.Time
		if changed == nil {
			// Not running in this process (left by a stop, until
			// ResumeJobs or CancelJob): poll storage.
			poll = time.After(time.Second)
		}
		select {
		case <-changed:
		case <-poll:
		case <-ctx.Done():
			return ctx.Err()
		}
		if wait := t.cfg.WatchEvery - time.Since(delivered); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// ResumeJobs starts the jobs a previous run of the node left QUEUED,
// CACHING or TRAINING, from their last checkpoints (a table job from the
// entries it stored). Call it once at start.
func (s *Service) ResumeJobs(ctx context.Context) error {
	t, err := s.trainer()
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("%w: node shutting down", ErrUnavailable)
	}
	var left []*smilepb.TrainJob
	if err := t.scan(func(r *smilepb.TrainJob) {
		if activeState(r.State) && t.jobs[r.Id] == nil && t.active[jobKey(r)] == "" {
			left = append(left, r)
		}
	}); err != nil {
		return err
	}
	slices.SortFunc(left, func(a, b *smilepb.TrainJob) int { return cmp.Compare(a.CreatedUnixMs, b.CreatedUnixMs) })
	for _, r := range left {
		if t.active[jobKey(r)] != "" {
			continue // two left for one vPLM or table cannot happen; run the older
		}
		ckpt, err := t.store.GetRecord(storage.NSCheckpoint, r.Id)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("%w: reading checkpoint of %s: %w", ErrUnavailable, r.Id, err)
		}
		t.log.Info("resuming job", "job", r.Id, "kind", r.Kind, "model", r.Model, "table", r.Table, "epoch", r.Epoch, "step", r.Step, "checkpoint_bytes", len(ckpt))
		t.start(r, ckpt, nil)
	}
	return nil
}

// Records.

func (t *trainer) put(rec *smilepb.TrainJob, more ...storage.Record) error {
	b, err := proto.Marshal(rec)
	if err != nil {
		return fmt.Errorf("%w: encoding job %s: %w", ErrInternal, rec.Id, err)
	}
	if err := t.store.PutRecords(append([]storage.Record{{NS: storage.NSJob, Key: rec.Id, Value: b}}, more...)...); err != nil {
		return fmt.Errorf("%w: storing job %s: %w", ErrUnavailable, rec.Id, err)
	}
	return nil
}

func (t *trainer) get(id string) (*smilepb.TrainJob, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return nil, fmt.Errorf("%w: %q", ErrJobNotFound, id)
	}
	b, err := t.store.GetRecord(storage.NSJob, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrJobNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading job %s: %w", ErrUnavailable, id, err)
	}
	rec := &smilepb.TrainJob{}
	if err := proto.Unmarshal(b, rec); err != nil {
		return nil, fmt.Errorf("%w: job %s: %w", ErrInternal, id, err)
	}
	return rec, nil
}

func (t *trainer) scan(fn func(*smilepb.TrainJob)) error {
	err := t.store.ScanRecords(storage.NSJob, "", func(_ string, v []byte) error {
		rec := &smilepb.TrainJob{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return fmt.Errorf("%w: a stored job: %w", ErrInternal, err)
		}
		fn(rec)
		return nil
	})
	if err != nil && !errors.Is(err, ErrInternal) {
		return fmt.Errorf("%w: reading jobs: %w", ErrUnavailable, err)
	}
	return err
}

// snapshot is a job's current record and, while it runs here, the channel
// closed at its next change.
func (t *trainer) snapshot(id string) (*smilepb.TrainJob, <-chan struct{}, error) {
	t.mu.Lock()
	j := t.jobs[id]
	t.mu.Unlock()
	if j != nil {
		j.mu.Lock()
		defer j.mu.Unlock()
		return proto.CloneOf(j.rec), j.changed, nil
	}
	rec, err := t.get(id)
	return rec, nil, err
}

func (j *runningJob) snapshot() *smilepb.TrainJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	return proto.CloneOf(j.rec)
}

// update changes the job's record, wakes its watchers and writes it when
// persist is set or PersistEvery has passed (with more records in the same
// transaction).
func (t *trainer) update(j *runningJob, persist bool, fn func(r *smilepb.TrainJob), more ...storage.Record) error {
	j.mu.Lock()
	fn(j.rec)
	now := t.s.now()
	j.rec.UpdatedUnixMs = now.UnixMilli()
	close(j.changed)
	j.changed = make(chan struct{})
	var rec *smilepb.TrainJob
	if persist || len(more) > 0 || now.Sub(j.persisted) >= t.cfg.PersistEvery {
		j.persisted = now
		rec = proto.CloneOf(j.rec)
	}
	j.mu.Unlock()
	if rec == nil {
		return nil
	}
	return t.put(rec, more...)
}
