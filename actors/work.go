package actors

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/smile-vplm/smile/model"
)

// Work asks a device actor to run arbitrary computation on its backbone:
// the trainer's representation batches and training steps. It is a local
// message answered with *WorkDone.
//
// Work waits in the same fair queue as inference, as a request of Tenant,
// so a tenant's training competes for the device under its virtual
// processor's weight and limits like its inference does. It always runs
// alone (never in an inference batch), on the compute goroutine that owns
// the device, so Run may use the backbone and its device freely; it must
// not keep states or device memory past its return.
//
// Its cost in the queue is device time expressed in inference tokens:
// Tokens at least, and more when this tenant's recent work took longer per
// token than the device's recent inference batches (a training step
// computes a forward and a backward pass per token, several times an
// inference token's work). Fair queuing in tokens is then fair queuing in
// device time, whatever the work.
type Work struct {
	Tenant   string
	Tokens   int       // the token rows the work computes (its declared cost); < 1 counts as 1
	Deadline time.Time // zero: none; work still queued at its deadline fails with a timeout
	Run      func(bb model.Backbone) error
}

// WorkDone answers Work: Run's error (a panic in Run is ErrInternal), or
// why it never ran (ErrTimeout, ErrOverloaded, ErrTenantOverLimit,
// ErrRateLimited, ErrUnavailable).
type WorkDone struct {
	Err     error
	Queue   time.Duration // from arrival to the start of the run
	Compute time.Duration // Run's wall time
}

// cancelWork withdraws a Work that is still queued (its caller gave up);
// it is answered with errWorkCanceled. Work already running finishes.
type cancelWork struct{ w *Work }

var errWorkCanceled = fmt.Errorf("%w: work canceled by its caller", ErrUnavailable)

// Do runs w on the device actor and returns Run's error. If ctx ends
// first, w is withdrawn if it is still queued, and Do returns at once (a
// Run already started finishes on the device, unobserved). Without a
// deadline of its own, w gets ctx's.
func (h *DeviceHandle) Do(ctx context.Context, sys *actor.ActorSystem, w *Work) error {
	_, err := h.do(ctx, sys, w, false)
	return err
}

// doWait is Do that, when ctx ends while Run is already running, waits for
// Run to return before returning: its caller may then reuse what Run
// touched (the trainer's engine) without a race.
func (h *DeviceHandle) doWait(ctx context.Context, sys *actor.ActorSystem, w *Work) (*WorkDone, error) {
	return h.do(ctx, sys, w, true)
}

func (h *DeviceHandle) do(ctx context.Context, sys *actor.ActorSystem, w *Work, wait bool) (*WorkDone, error) {
	if w == nil || w.Run == nil {
		return nil, fmt.Errorf("%w: work without Run", ErrBadRequest)
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxWorkError(ctx)
	}
	if dl, ok := ctx.Deadline(); ok && (w.Deadline.IsZero() || dl.Before(w.Deadline)) {
		cp := *w
		cp.Deadline = dl
		w = &cp
	}
	box := &inbox{ch: make(chan any, 1)}
	reply, ok := sys.ProcessRegistry.Add(box, "work"+sys.ProcessRegistry.NextId())
	if !ok {
		return nil, fmt.Errorf("%w: reply address taken", ErrInternal)
	}
	defer sys.ProcessRegistry.Remove(reply)
	sys.Root.RequestWithCustomSender(h.PID, w, reply)
	select {
	case m := <-box.ch:
		return workResult(m)
	case <-h.done:
		return h.gone(box)
	case <-ctx.Done():
	}
	sys.Root.Send(h.PID, &cancelWork{w: w})
	if !wait {
		return nil, ctxWorkError(ctx)
	}
	// Withdrawn, finished or failed: the device actor answers every Work
	// exactly once, so this wait ends (or the device stops).
	select {
	case m := <-box.ch:
		wd, err := workResult(m)
		if errors.Is(err, errWorkCanceled) {
			return nil, ctxWorkError(ctx)
		}
		return wd, err
	case <-h.done:
		return h.gone(box)
	}
}

// gone answers a caller whose device's compute goroutine ended: an answer
// sent just before still counts.
func (h *DeviceHandle) gone(box *inbox) (*WorkDone, error) {
	select {
	case m := <-box.ch:
		return workResult(m)
	case <-time.After(100 * time.Millisecond):
		return nil, fmt.Errorf("%w: the device actor stopped", ErrUnavailable)
	}
}

func ctxWorkError(ctx context.Context) error {
	err := context.Cause(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}

func workResult(m any) (*WorkDone, error) {
	switch r := m.(type) {
	case *WorkDone:
		return r, r.Err
	case *actor.DeadLetterResponse:
		return nil, fmt.Errorf("%w: the device actor is gone", ErrUnavailable)
	}
	return nil, fmt.Errorf("%w: device answered %T", ErrInternal, m)
}

// workCal converts work into inference tokens: decayed sums of tokens and
// seconds, of inference batches (the device's) and of each tenant's work.
type workCal struct {
	tokens, secs float64
}

func (c *workCal) add(tokens int, d time.Duration, decay float64) {
	c.tokens = c.tokens*decay + float64(tokens)
	c.secs = c.secs*decay + d.Seconds()
}

// maxWorkCost caps a work item's charge (a stalled run must not push its
// tenant's tags out forever).
const maxWorkCost = 1 << 24

// workCost is w's charge in the fair queue: its declared tokens, raised to
// the inference tokens the device would have computed in the time this
// tenant's work has recently taken per token.
func (d *deviceActor) workCost(w *Work) int {
	base := max(1, w.Tokens)
	c := d.workCal[w.Tenant]
	if c == nil || c.tokens <= 0 || d.inferCal.secs <= 0 || d.inferCal.tokens <= 0 {
		return base
	}
	est := float64(base) * (c.secs / c.tokens) * (d.inferCal.tokens / d.inferCal.secs)
	if math.IsNaN(est) || est <= float64(base) {
		return base
	}
	return int(min(est, maxWorkCost))
}
