package sched

import (
	"fmt"
	"math"
	"time"
)

// Request is one unit of work waiting for the device. The caller fills the
// exported fields; the scheduler keeps its bookkeeping in the rest. A
// Request may be pushed again once Done or Remove has released it.
type Request struct {
	// Tenant names whose virtual processor pays for the request.
	Tenant string
	// Cost is the work the request costs the device, in tokens (rows of
	// compute); >= 1. Fairness is measured in cost, not in request count.
	Cost int
	// Rows is the number of sequences the request puts in a batch; >= 1.
	Rows int
	// Value is the caller's payload, untouched by the scheduler.
	Value any

	t             *tenant
	start, finish float64   // virtual start and finish tags
	enqueued      time.Time // when Push admitted it
	seq           uint64    // arrival order; breaks ties between equal tags
	state         reqState
	next          *Request // the tenant's FIFO
	gprev, gnext  *Request // every waiting request, in arrival order
}

// Enqueued returns when Push admitted the request (zero before that).
func (r *Request) Enqueued() time.Time { return r.enqueued }

type reqState uint8

const (
	stateIdle reqState = iota
	stateQueued
	stateRunning
)

// tenant is one virtual processor: its configuration, its finish tag, its
// FIFO of waiting requests and its token bucket.
type tenant struct {
	name       string
	cfg        TenantConfig // with defaults filled
	configured bool         // named by SetTenant, not defaulted

	finish float64 // finish tag of its last admitted request
	epoch  uint64  // finish is stale unless epoch == Queue.epoch

	head, tail *Request
	queued     int
	running    int
	heapIdx    int // index in Queue.heap, -1 when nothing waits

	tokens float64   // token bucket level at last
	last   time.Time // when tokens was last brought up to date

	served, servedCost, removed int64
	rejected                    Rejections
	dirty                       bool // scratch mark for Remove
}

// Queue is the device's fair queue: requests of many tenants wait here and
// leave in batches in weighted-fair order. A Queue is NOT safe for
// concurrent use: one goroutine (the device actor's message loop) owns it.
type Queue struct {
	cfg     Config
	now     func() time.Time
	tenants map[string]*tenant
	heap    tenantHeap

	vtime   float64 // system virtual time: start tag of the last request served
	epoch   uint64  // bumped when the queue drains; see Push
	seq     uint64
	waiting int
	running int

	oldest, newest *Request // the global arrival list of waiting requests
	batch          []*Request
	scratch        []*tenant
	rejected       Rejections
}

// New returns an empty queue. now is the clock for rate limiting and
// enqueue times (nil means time.Now); tests inject a fake one.
func New(cfg Config, now func() time.Time) (*Queue, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Queue{
		cfg:     cfg.withDefaults(),
		now:     now,
		tenants: make(map[string]*tenant),
	}, nil
}

// SetTenant configures a tenant's virtual processor, creating it if need
// be. A weight change re-tags the tenant's waiting requests at once; a
// tighter MaxInflight or queue bound applies to the next Push (nothing
// admitted is dropped); a rate change keeps the bucket's level, capped at
// the new Burst.
func (q *Queue) SetTenant(name string, tc TenantConfig) error {
	if name == "" {
		return fmt.Errorf("%w: empty tenant name", ErrBadConfig)
	}
	if err := tc.Validate(); err != nil {
		return fmt.Errorf("tenant %q: %w", name, err)
	}
	tc = tc.withDefaults()
	t, ok := q.tenants[name]
	if !ok {
		t = q.newTenant(name, tc)
	}
	old := t.cfg
	t.cfg = tc
	t.configured = true
	if ok {
		if old.RatePerSec == 0 && tc.RatePerSec > 0 {
			t.tokens, t.last = float64(tc.Burst), q.now()
		}
		t.tokens = min(t.tokens, float64(tc.Burst))
		if old.Weight != tc.Weight && t.head != nil {
			q.retag(t)
		}
	}
	return nil
}

// ForgetTenant drops an idle tenant's state (configuration, counters, rate
// bucket) and reports whether it did; a tenant with requests queued or
// running is kept. For tenants that leave for good: the queue never forgets
// a tenant on its own.
func (q *Queue) ForgetTenant(name string) bool {
	t, ok := q.tenants[name]
	if !ok || t.queued > 0 || t.running > 0 {
		return false
	}
	delete(q.tenants, name)
	return true
}

func (q *Queue) newTenant(name string, tc TenantConfig) *tenant {
	t := &tenant{name: name, cfg: tc, heapIdx: -1, tokens: float64(tc.Burst), last: q.now()}
	q.tenants[name] = t
	return t
}

// Push admits r or says why not. The checks run in this order and the first
// that fails decides the error; a refused request changes nothing but the
// rejection counters:
//
//	ErrBadRequest   r is nil, already queued or running, has no tenant, or Cost or Rows < 1
//	ErrTenantLimit  the tenant's queued+running reached MaxInflight
//	ErrRateLimited  the tenant's token bucket is empty
//	ErrQueueFull    the tenant's waiting requests reached MaxQueuedPerTenant,
//	                or all waiting requests reached MaxQueued
//
// An admitted request takes virtual start tag S = max(V, F) where V is the
// system virtual time and F the tenant's last finish tag, and moves the
// tenant's finish tag to S + Cost/Weight.
func (q *Queue) Push(r *Request) error {
	if r == nil {
		q.rejected.BadRequest++
		return fmt.Errorf("%w: nil request", ErrBadRequest)
	}
	if r.state != stateIdle {
		q.rejected.BadRequest++
		return fmt.Errorf("%w: tenant %q: request already queued or running", ErrBadRequest, r.Tenant)
	}
	if r.Tenant == "" {
		q.rejected.BadRequest++
		return fmt.Errorf("%w: empty tenant name", ErrBadRequest)
	}
	t, ok := q.tenants[r.Tenant]
	if r.Cost < 1 || r.Rows < 1 {
		q.rejected.BadRequest++
		if ok {
			t.rejected.BadRequest++
		}
		return fmt.Errorf("%w: tenant %q: cost %d and rows %d must both be >= 1", ErrBadRequest, r.Tenant, r.Cost, r.Rows)
	}
	if !ok {
		t = q.newTenant(r.Tenant, q.cfg.DefaultTenant)
	}
	if m := t.cfg.MaxInflight; m > 0 && t.queued+t.running >= m {
		q.rejected.TenantLimit++
		t.rejected.TenantLimit++
		return fmt.Errorf("%w: tenant %q has %d requests queued or running (limit %d)", ErrTenantLimit, t.name, t.queued+t.running, m)
	}
	now := q.now()
	var tokens float64
	if t.cfg.RatePerSec > 0 {
		tokens = t.bucket(now)
		if tokens < 1 {
			q.rejected.RateLimited++
			t.rejected.RateLimited++
			wait := time.Duration((1 - tokens) / t.cfg.RatePerSec * float64(time.Second))
			return fmt.Errorf("%w: tenant %q exceeds %g requests/s (next admission in %v)", ErrRateLimited, t.name, t.cfg.RatePerSec, wait)
		}
	}
	if t.queued >= q.cfg.MaxQueuedPerTenant {
		q.rejected.QueueFull++
		t.rejected.QueueFull++
		return fmt.Errorf("%w: tenant %q has %d requests waiting (limit %d)", ErrQueueFull, t.name, t.queued, q.cfg.MaxQueuedPerTenant)
	}
	if q.waiting >= q.cfg.MaxQueued {
		q.rejected.QueueFull++
		t.rejected.QueueFull++
		return fmt.Errorf("%w: %d requests waiting (limit %d)", ErrQueueFull, q.waiting, q.cfg.MaxQueued)
	}

	if t.cfg.RatePerSec > 0 {
		t.tokens, t.last = tokens-1, now
	}
	if q.waiting == 0 {
		// A busy period ended: SFQ sets V past every finish tag served, so
		// every tenant starts the new period level. Bumping the epoch does
		// that for all tenants in O(1) and restarts virtual time at zero,
		// which keeps the float tags small on a long-lived queue.
		q.epoch++
		q.vtime = 0
	}
	if t.epoch != q.epoch {
		t.finish, t.epoch = 0, q.epoch
	}
	// max(V, F): a tenant that was idle has F behind V and starts at V, so
	// idleness banks no credit.
	r.start = max(q.vtime, t.finish)
	r.finish = r.start + float64(r.Cost)/t.cfg.Weight
	t.finish = r.finish
	r.t = t
	r.enqueued = now
	q.seq++
	r.seq = q.seq
	r.state = stateQueued

	r.next = nil
	if t.tail == nil {
		t.head, t.tail = r, r
		q.heap.push(t)
	} else {
		t.tail.next = r
		t.tail = r
	}
	r.gprev, r.gnext = q.newest, nil
	if q.newest == nil {
		q.oldest = r
	} else {
		q.newest.gnext = r
	}
	q.newest = r
	t.queued++
	q.waiting++
	return nil
}

// bucket returns the tenant's token level at now without storing it.
func (t *tenant) bucket(now time.Time) float64 {
	elapsed := now.Sub(t.last).Seconds()
	if elapsed < 0 { // a clock that stepped back refills nothing
		elapsed = 0
	}
	return math.Min(float64(t.cfg.Burst), t.tokens+elapsed*t.cfg.RatePerSec)
}

// Pop returns the next batch: requests in order of smallest virtual start
// tag across tenants (FIFO within a tenant), as many as fit in maxRows rows
// and maxCost cost (either <= 0: unbounded). The first request is taken even
// if it alone exceeds a bound, so a waiting queue always yields work; the
// batch stops at the first request that does not fit rather than skipping
// it, which keeps the order fair. The requests are marked running: call Done
// for each when it finishes. The system virtual time moves to the start
// tag of the last request taken.
//
// The returned slice is empty when nothing waits, and is reused by the next
// Pop: copy it to keep it.
func (q *Queue) Pop(maxRows, maxCost int) []*Request {
	clear(q.batch) // drop references to the last batch's requests
	b := q.batch[:0]
	rows, cost := 0, 0
	for len(q.heap) > 0 {
		t := q.heap[0].t
		r := t.head
		if len(b) > 0 && (maxRows > 0 && rows+r.Rows > maxRows || maxCost > 0 && cost+r.Cost > maxCost) {
			break
		}
		t.head = r.next
		r.next = nil
		if t.head == nil {
			t.tail = nil
			q.heap.remove(0)
		} else {
			q.heap.fix(0)
		}
		q.unlink(r)
		// Start tags leave in nondecreasing order, so max only guards
		// against float noise.
		q.vtime = max(q.vtime, r.start)
		r.state = stateRunning
		t.queued--
		t.running++
		t.served++
		t.servedCost += int64(r.Cost)
		q.waiting--
		q.running++
		b = append(b, r)
		rows += r.Rows
		cost += r.Cost
	}
	q.batch = b
	return b
}

// Done releases a running request's inflight slot. Done on a request that
// is not running (already done, never popped, nil) does nothing.
func (q *Queue) Done(r *Request) {
	if r == nil || r.state != stateRunning {
		return
	}
	r.t.running--
	q.running--
	r.t = nil
	r.state = stateIdle
}

// Remove drops every waiting request for which pred returns true (pred sees
// them in arrival order and must not call the Queue), releases their slots
// and returns them. The tenants they belonged to are re-tagged as if the
// removed requests had never arrived, so cancelled work costs no share.
// Running requests are not offered to pred: finish them with Done.
func (q *Queue) Remove(pred func(*Request) bool) []*Request {
	var out []*Request
	dirty := q.scratch[:0]
	for r := q.oldest; r != nil; {
		next := r.gnext
		if pred(r) {
			t := r.t
			q.unlink(r)
			r.state = stateIdle // marks it for the FIFO rebuild below
			t.queued--
			t.removed++
			q.waiting--
			if !t.dirty {
				t.dirty = true
				dirty = append(dirty, t)
			}
			out = append(out, r)
		}
		r = next
	}
	for _, t := range dirty {
		t.dirty = false
		var head, tail *Request
		for r := t.head; r != nil; {
			next := r.next
			r.next = nil
			if r.state == stateQueued {
				if tail == nil {
					head = r
				} else {
					tail.next = r
				}
				tail = r
			} else {
				r.t = nil
			}
			r = next
		}
		s0 := t.head.start
		t.head, t.tail = head, tail
		if head == nil {
			// Nothing left: the next arrival starts at max(V, s0), as if the
			// removed requests had never come.
			t.finish = s0
			q.heap.remove(t.heapIdx)
			continue
		}
		t.head.start = s0
		q.retag(t)
	}
	clear(dirty)
	q.scratch = dirty[:0]
	return out
}

// retag recomputes the tags of t's waiting requests from its head's start
// tag. While a tenant has requests waiting its tags are contiguous (each
// start is the previous finish, since every waiting tag is at or past V),
// so this yields what the arrivals would have got under t's current weight
// and current queue.
func (q *Queue) retag(t *tenant) {
	s := t.head.start
	for r := t.head; r != nil; r = r.next {
		r.start = s
		r.finish = s + float64(r.Cost)/t.cfg.Weight
		s = r.finish
	}
	t.finish = s
	q.heap.fix(t.heapIdx)
}

// unlink takes r out of the global arrival list.
func (q *Queue) unlink(r *Request) {
	if r.gprev == nil {
		q.oldest = r.gnext
	} else {
		r.gprev.gnext = r.gnext
	}
	if r.gnext == nil {
		q.newest = r.gprev
	} else {
		r.gnext.gprev = r.gprev
	}
	r.gprev, r.gnext = nil, nil
}

// Len returns the number of waiting requests.
func (q *Queue) Len() int { return q.waiting }

// Running returns the number of requests popped and not yet Done.
func (q *Queue) Running() int { return q.running }

// Oldest returns the enqueue time of the oldest waiting request, for the
// device actor's bound on how long a batch may wait to fill; false when
// nothing waits.
func (q *Queue) Oldest() (time.Time, bool) {
	if q.oldest == nil {
		return time.Time{}, false
	}
	return q.oldest.enqueued, true
}
