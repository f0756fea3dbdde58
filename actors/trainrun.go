package actors

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/plot"
	"github.com/smile-vplm/smile/model/train"
	"github.com/smile-vplm/smile/storage"
)

// Running a job: its goroutine, from the slot it waits for to the commit
// of its result (see trainer.go for the states it goes through).

// start runs a stored job in a new goroutine (t.mu is held). data is the
// prepared examples when the caller has them.
func (t *trainer) start(rec *smilepb.TrainJob, ckpt []byte, data *jobData) {
	ctx, cancel := context.WithCancelCause(context.Background())
	j := &runningJob{id: rec.Id, key: jobKey(rec), cancel: cancel, done: make(chan struct{}), rec: proto.CloneOf(rec),
		changed: make(chan struct{}), persisted: t.s.now()}
	t.jobs[j.id] = j
	t.active[j.key] = j.id
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer cancel(nil)
		t.run(ctx, j, ckpt, data)
	}()
}

func (t *trainer) run(ctx context.Context, j *runningJob, ckpt []byte, data *jobData) {
	err := t.executeSafe(ctx, j, ckpt, data)
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errShutdown) && err != nil:
		// Stays active in storage; ResumeJobs continues it.
		t.log.Info("job stopped with the node", "job", j.id)
	case err == nil:
	case errors.Is(cause, errJobCanceled):
		t.finish(j, func(r *smilepb.TrainJob) {
			r.State, r.Stage = smilepb.JobState_JOB_CANCELED, "canceled"
		})
	default:
		t.log.Warn("job failed", "job", j.id, "holds", j.key, "err", err)
		t.finish(j, func(r *smilepb.TrainJob) {
			r.State, r.Stage, r.Error = smilepb.JobState_JOB_FAILED, "failed", ToProto(err)
		})
	}
	t.mu.Lock()
	delete(t.jobs, j.id)
	if t.active[j.key] == j.id {
		delete(t.active, j.key)
	}
	t.mu.Unlock()
	// Watchers look again, now in storage (a job stopped with the node
	// has no final state to wake them with).
	j.mu.Lock()
	close(j.changed)
	j.changed = make(chan struct{})
	j.mu.Unlock()
	close(j.done)
}

// executeSafe is execute with a panic (a bug) failing the job instead of
// the process.
func (t *trainer) executeSafe(ctx context.Context, j *runningJob, ckpt []byte, data *jobData) (err error) {
	defer func() {
		if v := recover(); v != nil {
			t.log.Error("panic in a job", "job", j.id, "panic", v)
			err = fmt.Errorf("%w: job: panic: %v", ErrInternal, v)
		}
	}()
	return t.execute(ctx, j, ckpt, data)
}

// finish writes a job's final record (and drops its checkpoint).
func (t *trainer) finish(j *runningJob, fn func(r *smilepb.TrainJob)) {
	if err := t.update(j, true, fn, storage.Record{NS: storage.NSCheckpoint, Key: j.id, Delete: true}); err != nil {
		t.log.Error("storing a training job's end", "job", j.id, "err", err)
	}
}

// execute runs the job to its commit; an error fails (or, by its context's
// cause, cancels or suspends) it.
func (t *trainer) execute(ctx context.Context, j *runningJob, ckpt []byte, data *jobData) error {
	select {
	case t.slots <- struct{}{}:
		defer func() { <-t.slots }()
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	rec := j.snapshot()
	switch rec.Kind {
	case "":
	case JobKindTable:
		return t.buildTable(ctx, j)
	default:
		return fmt.Errorf("%w: job %s is of kind %q, unknown to this node", ErrInternal, rec.Id, rec.Kind)
	}
	entry, err := t.s.env.Catalog.Get(ctx, rec.Model)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("%w: %s was deleted", ErrModelChanged, rec.Model)
		}
		return err
	}
	if entry.Version != rec.BaseVersion && !strings.HasPrefix(string(ckpt), resultMarker) {
		return fmt.Errorf("%w: %s is at version %d, the job started from %d", ErrModelChanged, rec.Model, entry.Version, rec.BaseVersion)
	}
	dev, ok := t.s.devices[entry.Backbone]
	if !ok {
		return fmt.Errorf("%w: backbone %q is not served on this node", ErrUnavailable, entry.Backbone)
	}
	bb := dev.Backbone()
	if d, ok := strings.CutPrefix(string(ckpt), resultMarker); ok {
		return t.commit(ctx, j, dev, d)
	}
	if data == nil {
		if err := t.update(j, false, func(r *smilepb.TrainJob) { r.Stage = "loading examples" }); err != nil {
			return err
		}
		if data, err = t.loadData(ctx, rec.Dataset); err != nil {
			return err
		}
		if err := data.prepare(bb, entry); err != nil {
			return err
		}
	}
	blob, err := t.store.GetBlob(entry.ParamsDigest)
	if err != nil {
		return fmt.Errorf("%w: params of %s: %w", ErrUnavailable, entry.Id, err)
	}
	params, err := model.DecodeParams(blob)
	if err != nil {
		return fmt.Errorf("%w: params of %s: %w", ErrInternal, entry.Id, err)
	}
	exec := patient(dev.Exec(t.s.cl.ActorSystem, rec.Tenant))
	se, err := t.spec(ctx, entry.Backbone, exec)
	if err != nil {
		return err
	}
	var lower *plot.Table
	if plotMode(entry) {
		if rec.Full {
			return fmt.Errorf("%w: %s runs in plot mode: full fine-tuning is not possible", ErrBadRequest, entry.Id)
		}
		if lower, err = t.openVPLMTable(ctx, entry); err != nil {
			return err
		}
	}
	blas, err := t.blasFor(entry.Backbone, bb)
	if err != nil {
		return err
	}
	method := jobMethod(rec.Full)
	cfg, err := trainConfig(rec.Config, method)
	if err != nil {
		return err
	}
	eng, err := train.New(se.spec, params, method, cfg, blas)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	trainSet, valSet, err := t.inputs(ctx, j, eng, se, bb, lower, data, exec)
	if err != nil {
		return err
	}
	if err := t.update(j, true, func(r *smilepb.TrainJob) {
		r.State, r.Stage = smilepb.JobState_JOB_TRAINING, "training"
	}); err != nil {
		return err
	}
	opts := train.FitOptions{
		Exec: func(ctx context.Context, tokens int, work func() error) error {
			return exec(ctx, tokens, func(model.Backbone) error { return work() })
		},
		Progress: func(p train.Progress) {
			_ = t.update(j, p.EpochDone, func(r *smilepb.TrainJob) {
				r.Epoch, r.Epochs, r.Step, r.Steps = uint32(p.Epoch), uint32(p.Epochs), uint64(p.Step), uint64(p.Steps)
				r.Loss, r.ValAccuracy, r.BestValAccuracy = p.Loss, p.ValAccuracy, p.BestValAccuracy
				r.ExamplesPerS, r.EtaMs, r.EarlyStopped = p.ExamplesPerSec, p.ETA.Milliseconds(), p.EarlyStopped
				r.Stage = fmt.Sprintf("training epoch %d/%d", p.Epoch, p.Epochs)
			})
		},
		Checkpoint: func(epoch int, ck []byte) error {
			if err := t.update(j, true, func(r *smilepb.TrainJob) {
				r.Epoch = uint32(epoch)
			}, storage.Record{NS: storage.NSCheckpoint, Key: j.id, Value: ck}); err != nil {
				return err
			}
			if t.cfg.AfterCheckpoint != nil {
				t.cfg.AfterCheckpoint(ctx, j.id, epoch)
			}
			return context.Cause(ctx)
		},
		Resume: ckpt,
	}
	if rec.Full {
		// A private copy of every weight with its optimizer moments is far
		// bigger than a stored value may be (BERT-base: 1.8 GB); a
		// comparison run that stops starts again.
		opts.Checkpoint, opts.Resume = nil, nil
	}
	res, err := train.Fit(ctx, eng, trainSet, valSet, opts)
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if errors.Is(err, model.ErrBadInput) && ckpt != nil {
			return fmt.Errorf("%w: resuming from the checkpoint: %w", ErrInternal, err)
		}
		return err
	}
	if rec.Full {
		// A comparison run: its private backbone copy is dropped, nothing
		// is committed; the record keeps its validation accuracy.
		t.finish(j, func(r *smilepb.TrainJob) {
			r.State, r.Stage = smilepb.JobState_JOB_SUCCEEDED, fmt.Sprintf("full fine-tuning done (best epoch %d); nothing committed", res.BestEpoch)
			r.BestValAccuracy, r.EarlyStopped, r.Version = res.BestValAccuracy, res.EarlyStopped, r.BaseVersion
		})
		return nil
	}
	if res.Best == nil {
		return fmt.Errorf("%w: the run gave no params", ErrInternal)
	}
	// The result must be servable before anything points at it.
	// A new version keeps the vPLM's precision ("" reads as fp16).
	prec := model.PrecisionFP16
	if entry.GetPrecision() != "" {
		if prec, err = model.ParsePrecision(entry.GetPrecision()); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInternal, entry.Id, err)
		}
	}
	out, err := res.Best.EncodeAs(prec)
	var back *model.Params
	if err == nil {
		back, err = model.DecodeParams(out)
	}
	if err == nil {
		err = back.Check(bb)
	}
	if err != nil {
		return fmt.Errorf("%w: the trained params cannot be served (diverged?): %w", ErrInternal, err)
	}
	digest, err := t.store.PutBlob(out)
	if err != nil {
		return fmt.Errorf("%w: storing the trained params: %w", ErrUnavailable, err)
	}
	if err := t.update(j, true, func(r *smilepb.TrainJob) {
		r.Stage = fmt.Sprintf("committing version %d (best epoch %d)", r.BaseVersion+1, res.BestEpoch)
		r.BestValAccuracy, r.EarlyStopped = res.BestValAccuracy, res.EarlyStopped
	}, storage.Record{NS: storage.NSCheckpoint, Key: j.id, Value: []byte(resultMarker + digest)}); err != nil {
		return err
	}
	return t.commit(ctx, j, dev, digest)
}

// commit makes the trained params blob the vPLM's next version and tells
// its actor. It is not interrupted by cancel or shutdown: the blob is
// stored and the catalog change is one command.
func (t *trainer) commit(ctx context.Context, j *runningJob, dev *DeviceHandle, digest string) error {
	ctx = context.WithoutCancel(ctx)
	rec := j.snapshot()
	id := rec.Model
	cur, err := t.s.env.Catalog.Get(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: %s was deleted", ErrModelChanged, id)
	}
	if err != nil {
		return err
	}
	version := rec.BaseVersion + 1
	already := cur.Version == version && cur.ParamsDigest == digest // committed before a stop
	if !already {
		if cur.Version != rec.BaseVersion {
			return fmt.Errorf("%w: %s is at version %d, the job started from %d", ErrModelChanged, id, cur.Version, rec.BaseVersion)
		}
		blob, err := t.store.GetBlob(digest)
		if err != nil {
			return fmt.Errorf("%w: the trained params: %w", ErrUnavailable, err)
		}
		// Loaded into the device's host tier before the switch, so the
		// first request of the new version finds it there.
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, _ = t.s.cl.ActorSystem.Root.RequestFuture(dev.PID, &Prefetch{Digests: []string{digest}}, timeoutOf(pctx)).Result()
		cancel()
		_, err = t.s.env.Catalog.Apply(ctx, &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_NewVersion{NewVersion: &smilepb.NewVersion{
			Id: id, Version: version, ParamsDigest: digest, ParamsBytes: uint64(len(blob)), UpdatedUnixMs: t.s.now().UnixMilli(),
		}}})
		if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrConflict) {
			return fmt.Errorf("%w: %w", ErrModelChanged, err)
		}
		if err != nil {
			return err
		}
	}
	// Each request reads the catalog, so the actor switches by itself;
	// the Reload makes it do so now.
	rctx, cancel := context.WithTimeout(ctx, t.s.env.Config.RequestTimeout)
	_, _ = t.s.request(rctx, id, &smilepb.Reload{Id: id})
	cancel()
	t.finish(j, func(r *smilepb.TrainJob) {
		r.State, r.Version = smilepb.JobState_JOB_SUCCEEDED, version
		r.Stage = fmt.Sprintf("committed version %d", version)
	})
	t.log.Info("training job committed", "job", j.id, "model", id, "version", version)
	return nil
}

// loadData reads a stored job's examples.
func (t *trainer) loadData(ctx context.Context, dataset string) (*jobData, error) {
	d, ok := strings.CutPrefix(dataset, uploadPrefix)
	if !ok {
		return t.namedData(ctx, dataset)
	}
	b, err := t.store.GetBlob("sha256:" + d)
	if err != nil {
		return nil, fmt.Errorf("%w: the job's examples: %w", ErrUnavailable, err)
	}
	var ex []datasets.Example
	if err := json.Unmarshal(b, &ex); err != nil {
		return nil, fmt.Errorf("%w: the job's examples: %w", ErrInternal, err)
	}
	return uploadData(ex), nil
}

// inputs builds the engine's datasets: cached representations, or ids. A
// plot-mode vPLM's (table set) come from its table's states at the cut.
func (t *trainer) inputs(ctx context.Context, j *runningJob, eng *train.Engine, se *specEntry, bb model.Backbone, table *plot.Table, data *jobData, exec ExecFunc) (trainSet, valSet train.Dataset, err error) {
	kind, layer := eng.Input()
	var lower model.Lower
	var tableID string
	if table != nil {
		lower, tableID = table, table.ID()
	}
	if kind == train.InputIDs {
		if lower != nil {
			return nil, nil, fmt.Errorf("%w: a plot-mode vPLM cannot train from token ids", ErrBadRequest)
		}
		return &idsDataset{ids: data.trainIDs, labels: data.trainLabels}, &idsDataset{ids: data.valIDs, labels: data.valLabels}, nil
	}
	widths, err := RepWidths(bb, kind, layer)
	if err != nil {
		return nil, nil, err
	}
	total := len(data.trainIDs)
	if !data.valIsTrain {
		total += len(data.valIDs)
	}
	if err := t.update(j, true, func(r *smilepb.TrainJob) {
		r.State, r.Stage, r.CachedExamples = smilepb.JobState_JOB_CACHING, fmt.Sprintf("caching 0/%d examples", total), 0
	}); err != nil {
		return nil, nil, err
	}
	// Leave-one-out needs the table's corpus counts; the training split's
	// own are those when the table was built from the same dataset.
	looCorpus := false
	if table != nil {
		m, err := t.manifest(tableID)
		if err != nil {
			return nil, nil, err
		}
		looCorpus = m.GetCorpus() != "" && m.GetCorpus() == j.snapshot().GetDataset() && m.GetBase() == ""
	}
	base, cached := 0, 0
	build := func(ids [][]int32, labels []int, training bool) (train.Dataset, error) {
		key := RepKey{Backbone: se.fingerprint, Dataset: IDsDigest(ids), Kind: kind, Layer: layer, MaxPositions: bb.Info().MaxPositions, Table: tableID}
		low := lower
		if training && looCorpus {
			// The table was built from this training split: read it
			// leave-one-out, an n-gram no other training text holds hidden
			// from the text that does, so training sees the coverage an
			// unseen text gets when served (docs/BENCHMARKS.md measures
			// what it buys).
			counts := plot.NewCounter()
			for _, s := range ids {
				counts.Add(s)
			}
			low, key.Table = plot.LeaveOneOut{Table: table, Counts: counts}, tableID+"/leave-one-out"
		}
		set, st, err := t.cache.Build(ctx, key, low, ids, widths, exec, func(done, _ int) {
			_ = t.update(j, false, func(r *smilepb.TrainJob) { r.Stage = fmt.Sprintf("caching %d/%d examples", base+done, total) })
		})
		if err != nil {
			return nil, err
		}
		base += len(ids)
		cached += st.Cached
		t.log.Debug("representations", "job", j.id, "examples", st.Examples, "cached", st.Cached, "computed", st.Computed, "works", st.Works)
		return NewCachedDataset(set, labels)
	}
	if trainSet, err = build(data.trainIDs, data.trainLabels, true); err != nil {
		return nil, nil, err
	}
	valSet = trainSet
	if !data.valIsTrain {
		if valSet, err = build(data.valIDs, data.valLabels, false); err != nil {
			return nil, nil, err
		}
	}
	if err := t.update(j, true, func(r *smilepb.TrainJob) { r.CachedExamples = uint64(cached) }); err != nil {
		return nil, nil, err
	}
	return trainSet, valSet, nil
}

// spec returns the backbone's TrainSpec, computed once per node (on the
// device, through exec: it reads the device's weights) and shared
// read-only by every job.
func (t *trainer) spec(ctx context.Context, backbone string, exec ExecFunc) (*specEntry, error) {
	for {
		t.mu.Lock()
		e, ok := t.specs[backbone]
		if !ok {
			e = &specEntry{ready: make(chan struct{})}
			t.specs[backbone] = e
			t.mu.Unlock()
			e.err = exec(ctx, 1, func(bb model.Backbone) error {
				tr, ok := bb.(model.Trainable)
				if !ok {
					return fmt.Errorf("%w: backbone %s (%s) cannot be trained", ErrBadRequest, backbone, bb.Info().Family)
				}
				spec, err := tr.TrainSpec()
				if err != nil {
					return err
				}
				e.spec = spec
				return nil
			})
			if e.err == nil {
				e.err = e.spec.Validate()
			}
			if e.err == nil {
				e.fingerprint = fingerprint(e.spec)
			} else {
				e.spec = nil
				t.mu.Lock()
				delete(t.specs, backbone) // the next job tries again
				t.mu.Unlock()
			}
			close(e.ready)
			return e, e.err
		}
		t.mu.Unlock()
		select {
		case <-e.ready:
			if e.err == nil {
				return e, nil
			}
			// The job computing it failed (or was canceled): try again.
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// fingerprint names a backbone's weights for the representation cache.
func fingerprint(s *model.TrainSpec) string {
	h := sha256.New()
	info, _ := json.Marshal(s.Info)
	h.Write(info)
	buf := make([]byte, 0, 64<<10)
	put := func(v []float32) {
		buf = binary.LittleEndian.AppendUint64(buf[:0], uint64(len(v)))
		h.Write(buf)
		for len(v) > 0 {
			n := min(len(v), cap(buf)/4)
			buf = buf[:0]
			for _, x := range v[:n] {
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
			}
			h.Write(buf)
			v = v[n:]
		}
	}
	e := &s.Embedding
	for _, v := range [][]float32{e.Table, e.Positions, e.LNGamma, e.LNBeta} {
		put(v)
	}
	for i := range s.Blocks {
		b := &s.Blocks[i]
		for _, v := range [][]float32{b.LN1G, b.LN1B, b.QKVW, b.QKVB, b.OutW, b.OutB, b.ResW, b.LN2G, b.LN2B, b.F1W, b.F1B, b.F2W, b.F2B} {
			put(v)
		}
	}
	put(s.Pool.W)
	put(s.Pool.B)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// blasFor is the GEMM a backbone's jobs compute with: its device when that
// is a train.BLAS (the CPU device; its work runs on the device's
// goroutine), else a private CPU device.
func (t *trainer) blasFor(backbone string, bb model.Backbone) (train.BLAS, error) {
	if b, ok := bb.Device().(train.BLAS); ok {
		return b, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if d, ok := t.blas[backbone]; ok {
		return d, nil
	}
	d, err := cpu.New(cpu.DefaultConfig())
	if err != nil {
		return nil, fmt.Errorf("%w: a CPU device for training: %w", ErrUnavailable, err)
	}
	t.blas[backbone] = d
	return d, nil
}

// patient retries work that the device's scheduler refused for load (the
// queue full, the tenant over its in-flight or rate limit): a job waits
// its turn under its tenant's limits rather than fail.
func patient(exec ExecFunc) ExecFunc {
	return func(ctx context.Context, tokens int, run func(bb model.Backbone) error) error {
		backoff := 5 * time.Millisecond
		for {
			err := exec(ctx, tokens, run)
			if !errors.Is(err, ErrOverloaded) && !errors.Is(err, ErrRateLimited) && !errors.Is(err, ErrTenantOverLimit) {
				return err
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			backoff = min(2*backoff, time.Second)
		}
	}
}
