package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/storage"
)

// KindVPLM is the cluster kind of vPLM actors; a vPLM's identity is its id.
const KindVPLM = "vplm"

// VPLMConfig configures vPLM actors.
type VPLMConfig struct {
	// PassivateAfter stops an actor that received nothing for this long;
	// the next request activates it again (from the catalog).
	PassivateAfter time.Duration
	// MaxTexts bounds the texts of one request.
	MaxTexts int
	// MaxTextBytes bounds one text (longer ones get text_too_long).
	MaxTextBytes int
	// RequestTimeout bounds a request's time at the device actor.
	RequestTimeout time.Duration
}

// DefaultVPLMConfig returns the defaults.
func DefaultVPLMConfig() VPLMConfig {
	return VPLMConfig{PassivateAfter: 10 * time.Minute, MaxTexts: 64, MaxTextBytes: 64 << 10, RequestTimeout: 30 * time.Second}
}

// Validate checks the configuration.
func (c VPLMConfig) Validate() error {
	switch {
	case c.PassivateAfter < time.Millisecond:
		return fmt.Errorf("%w: passivate after %v: want at least 1ms", ErrBadConfig, c.PassivateAfter)
	case c.MaxTexts < 1 || c.MaxTexts > 4096:
		return fmt.Errorf("%w: max texts %d: want 1..4096", ErrBadConfig, c.MaxTexts)
	case c.MaxTextBytes < 1 || c.MaxTextBytes > model.MaxTextBytesLimit:
		return fmt.Errorf("%w: max text bytes %d: want 1..%d", ErrBadConfig, c.MaxTextBytes, model.MaxTextBytesLimit)
	case c.RequestTimeout < time.Millisecond:
		return fmt.Errorf("%w: request timeout %v: want at least 1ms", ErrBadConfig, c.RequestTimeout)
	}
	return nil
}

// Catalog is the vPLM catalog as the actors see it: reads, and changes as
// commands applied in one place (today storage.Catalog on the local Badger;
// the storage issue puts Raft in front of Apply).
type Catalog interface {
	Apply(ctx context.Context, cmd *smilepb.CatalogCommand) (*smilepb.VPLM, error)
	Get(ctx context.Context, id string) (*smilepb.VPLM, error)
	List(ctx context.Context, tenant, after string, limit int) ([]*smilepb.VPLM, error)
	// Tenant is a tenant's settings (nil when it has none stored) and
	// usage (vPLMs, params bytes) as of now.
	Tenant(ctx context.Context, name string) (*smilepb.Tenant, *smilepb.TenantUsage, error)
}

// QuotaChecker is a Catalog that can tell from its local copy whether a
// tenant has room for more vPLMs and bytes (storage.ErrQuotaExceeded).
type QuotaChecker interface {
	CheckQuota(tenant string, vplms, bytes uint64) error
}

// LocalGetter is a Catalog that can also read this node's copy without
// asking the leader (a Raft replica): serving goes on during an election.
type LocalGetter interface {
	GetLocal(ctx context.Context, id string) (*smilepb.VPLM, error)
}

// getForServing reads a vPLM's entry for its actor: this node's copy when
// the catalog has one, else (not there yet: created through another node
// a moment ago) a linearizable read.
func getForServing(c Catalog, id string) (*smilepb.VPLM, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if lg, ok := c.(LocalGetter); ok {
		e, err := lg.GetLocal(ctx, id)
		if err == nil || !errors.Is(err, storage.ErrNotFound) {
			return e, err
		}
	}
	return c.Get(ctx, id)
}

// Env is what the vPLM actors of a node share.
type Env struct {
	Catalog Catalog
	// Device returns the node's device actor for a backbone.
	Device func(backbone string) (*DeviceHandle, bool)
	Config VPLMConfig
	Log    *slog.Logger
	// Lower gives a plot-mode vPLM's PLOT table, open on this node, whose
	// states replace the backbone's layers 1..cut for its rows.
	// Service.EnableTraining sets it when it is nil; without it a plot-mode
	// vPLM answers unavailable.
	Lower func(ctx context.Context, v *smilepb.VPLM) (model.Lower, error)
}

// VPLMKind is the cluster kind for vPLM actors using env.
func VPLMKind(env *Env) *cluster.Kind {
	return cluster.NewKind(KindVPLM, actor.PropsFromProducer(func() actor.Actor { return &vplmActor{env: env} }))
}

// vplmActor is the virtual actor of one vPLM: it holds the catalog entry,
// tokenizes, asks its node's device actor for the forward pass and turns
// the outputs into the answer. It never blocks its mailbox on the device.
type vplmActor struct {
	env      *Env
	id       string
	entry    *smilepb.VPLM
	dev      *DeviceHandle
	err      error // why the entry could not be loaded
	inflight int   // requests waiting on the device
	retire   bool  // stop once inflight reaches 0 (deleted, or gone from the catalog)
	last     time.Time
	timer    *time.Timer
}

// idleCheck is the actor's own passivation timer firing. protoactor's
// ReceiveTimeout is not used: it would stop an actor whose requests are
// still at the device (their continuations are not messages that reset
// it), losing the answers.
type idleCheck struct{}

func (a *vplmActor) armIdle(ctx actor.Context, d time.Duration) {
	self, sys := ctx.Self(), ctx.ActorSystem()
	a.timer = time.AfterFunc(d, func() { sys.Root.Send(self, idleCheck{}) })
}

func (a *vplmActor) Receive(ctx actor.Context) {
	msg := ctx.Message()
	if _, ok := msg.(idleCheck); !ok {
		a.last = time.Now()
	}
	switch m := msg.(type) {
	case *actor.Started:
		a.last = time.Now()
		a.armIdle(ctx, a.env.Config.PassivateAfter)
	case *actor.Stopping:
		if a.timer != nil {
			a.timer.Stop()
		}
	case *cluster.ClusterInit:
		a.id = m.Identity.Identity
		a.load()
	case idleCheck:
		idle := time.Since(a.last)
		if a.inflight == 0 && idle >= a.env.Config.PassivateAfter {
			ctx.Stop(ctx.Self())
			return
		}
		a.armIdle(ctx, max(a.env.Config.PassivateAfter-idle, time.Millisecond))
	case *smilepb.ClassifyRequest:
		a.safeInfer(ctx, smilepb.Task_TASK_CLASSIFY, m.Texts, m.DeadlineUnixMs)
	case *smilepb.EmbedRequest:
		a.safeInfer(ctx, smilepb.Task_TASK_EMBED, m.Texts, m.DeadlineUnixMs)
	case *smilepb.GetVPLM:
		if a.err != nil {
			ctx.Respond(&smilepb.GetVPLMReply{Error: ToProto(a.err)})
			return
		}
		ctx.Respond(&smilepb.GetVPLMReply{Vplm: a.entry})
	case *smilepb.Reload:
		a.load()
		ctx.Respond(&smilepb.GetVPLMReply{Vplm: a.entry, Error: ToProto(a.err)})
		a.retireIfGone(ctx)
	}
}

// retireIfGone stops the actor when its vPLM left the catalog, but only
// once no request of it is still at the device: stopping earlier would
// drop their answers with the actor.
func (a *vplmActor) retireIfGone(ctx actor.Context) {
	if a.entry != nil {
		return
	}
	if a.inflight > 0 {
		a.retire = true
		return
	}
	ctx.Stop(ctx.Self())
}

func (a *vplmActor) load() {
	a.entry, a.dev, a.err = nil, nil, nil
	e, err := getForServing(a.env.Catalog, a.id)
	if err != nil {
		a.err = err
		return
	}
	dev, ok := a.env.Device(e.Backbone)
	if !ok {
		a.err = fmt.Errorf("%w: backbone %q is not served on this node", ErrUnavailable, e.Backbone)
		return
	}
	a.entry, a.dev = e, dev
	a.retire = false // deleted and created again meanwhile: stay
}

func (a *vplmActor) fail(ctx actor.Context, task smilepb.Task, err error) {
	pe := ToProto(err)
	if task == smilepb.Task_TASK_CLASSIFY {
		ctx.Respond(&smilepb.ClassifyReply{Error: pe})
	} else {
		ctx.Respond(&smilepb.EmbedReply{Error: pe})
	}
}

// safeInfer is infer answering a panic (a bug) with an internal error:
// protoactor would restart the actor and leave the caller unanswered.
func (a *vplmActor) safeInfer(ctx actor.Context, task smilepb.Task, texts []string, deadlineMs int64) {
	defer func() {
		if v := recover(); v != nil {
			log := a.env.Log
			if log == nil {
				log = slog.Default()
			}
			log.Error("panic in a vPLM actor", "vplm", a.id, "panic", v)
			a.fail(ctx, task, fmt.Errorf("%w: panic: %v", ErrInternal, v))
		}
	}()
	a.infer(ctx, task, texts, deadlineMs)
}

func (a *vplmActor) infer(ctx actor.Context, task smilepb.Task, texts []string, deadlineMs int64) {
	start := time.Now()
	// Every request reads the catalog entry afresh (a Badger read of a few
	// microseconds): a delete or a new version takes effect at once, even
	// if the Reload message that follows it is lost.
	a.load()
	if a.err != nil {
		a.fail(ctx, task, a.err)
		a.retireIfGone(ctx)
		return
	}
	e := a.entry
	if e.Task != task {
		a.fail(ctx, task, fmt.Errorf("%w: %s is a %s model", ErrWrongTask, e.Id, taskName(e.Task)))
		return
	}
	cfg := a.env.Config
	if len(texts) == 0 {
		a.fail(ctx, task, fmt.Errorf("%w: no texts", ErrBadRequest))
		return
	}
	if len(texts) > cfg.MaxTexts {
		a.fail(ctx, task, fmt.Errorf("%w: %d texts, the limit is %d", ErrTooManyTexts, len(texts), cfg.MaxTexts))
		return
	}
	bb := a.dev.Backbone()
	ids, err := model.Tokenize(bb, texts, model.EmbedOptions{MaxTextBytes: cfg.MaxTextBytes, MaxBatchTokens: model.MaxBatchTokensLimit})
	if err != nil {
		a.fail(ctx, task, err)
		return
	}
	tokenized := time.Now()
	deadline := start.Add(cfg.RequestTimeout)
	if deadlineMs > 0 {
		if dl := time.UnixMilli(deadlineMs); dl.Before(deadline) {
			deadline = dl
		}
	}
	if !start.Before(deadline) {
		a.fail(ctx, task, fmt.Errorf("%w: the deadline passed before the request reached its vPLM", ErrTimeout))
		return
	}
	var lower model.Lower
	if plotMode(e) {
		if lower, err = a.lower(e, deadline); err != nil {
			a.fail(ctx, task, err)
			return
		}
	}
	msg := &Infer{Tenant: e.Tenant, Digest: e.ParamsDigest, IDs: ids, Deadline: deadline, Lower: lower}
	fut := ctx.RequestFuture(a.dev.PID, msg, time.Until(deadline)+time.Second)
	version := e.Version
	labels := e.Labels
	a.inflight++
	ctx.ReenterAfter(fut, func(res any, err error) {
		a.inflight--
		a.last = time.Now()
		defer func() {
			if a.retire && a.inflight == 0 {
				ctx.Stop(ctx.Self())
			}
		}()
		if err == nil {
			if r, ok := res.(*InferResult); ok {
				err = r.Err
				if err == nil {
					a.answer(ctx, task, labels, version, r, start, tokenized)
					return
				}
			} else {
				err = fmt.Errorf("%w: device answered %T", ErrInternal, res)
			}
		} else if errors.Is(err, actor.ErrTimeout) {
			err = fmt.Errorf("%w: no answer from the device by the deadline", ErrTimeout)
		} else if errors.Is(err, actor.ErrDeadLetter) {
			err = fmt.Errorf("%w: the device actor is gone", ErrUnavailable)
		} else {
			err = fmt.Errorf("%w: device: %v", ErrUnavailable, err)
		}
		a.fail(ctx, task, err)
	})
}

// lower gives a plot-mode vPLM's table. The first request of a table on
// the node opens it (its manifest and n-gram list from storage, the
// backbone's TrainSpec once): that request's actor waits for it.
func (a *vplmActor) lower(e *smilepb.VPLM, deadline time.Time) (model.Lower, error) {
	if a.env.Lower == nil {
		return nil, fmt.Errorf("%w: %s runs in plot mode, and this node serves no PLOT tables", ErrUnavailable, e.Id)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	return a.env.Lower(ctx, e)
}

func (a *vplmActor) answer(ctx actor.Context, task smilepb.Task, labels []string, version uint64, r *InferResult, start, tokenized time.Time) {
	t := &smilepb.Timings{
		TokenizeUs: tokenized.Sub(start).Microseconds(), QueueUs: r.Queue.Microseconds(),
		ComputeUs: r.Compute.Microseconds(), TotalUs: time.Since(start).Microseconds(),
		BatchRows: uint32(r.BatchRows), BatchVplms: uint32(r.BatchVPLMs),
	}
	if task == smilepb.Task_TASK_EMBED {
		out := &smilepb.EmbedReply{Version: version, Timings: t, Embeddings: make([]*smilepb.Vector, len(r.Outputs))}
		for i, v := range r.Outputs {
			out.Embeddings[i] = &smilepb.Vector{Values: v}
		}
		ctx.Respond(out)
		return
	}
	out := &smilepb.ClassifyReply{Version: version, Timings: t, Labels: labels, Predictions: make([]*smilepb.Prediction, len(r.Outputs))}
	for i, p := range r.Outputs {
		best := 0
		for k := range p {
			if p[k] > p[best] {
				best = k
			}
		}
		label := ""
		if best < len(labels) {
			label = labels[best]
		}
		out.Predictions[i] = &smilepb.Prediction{Label: label, Index: uint32(best), Probs: p}
	}
	ctx.Respond(out)
}

func taskName(t smilepb.Task) string {
	switch t {
	case smilepb.Task_TASK_CLASSIFY:
		return "classify"
	case smilepb.Task_TASK_EMBED:
		return "embed"
	}
	return "unknown-task"
}
