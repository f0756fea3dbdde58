package sched

import (
	"testing"
	"time"
)

// fakeClock is the injectable clock of the tests.
type fakeClock struct{ t time.Time }

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// device simulates the device actor's loop on a fake clock: Pop a batch,
// run it for a time proportional to its cost, Done every request.
type device struct {
	q                *Queue
	clock            *fakeClock
	maxRows, maxCost int
	perToken         time.Duration // simulated compute per token
	overhead         time.Duration // simulated fixed cost per batch
	batches          int
}

// newDevice returns a device over a fresh queue with cfg.
func newDevice(t testing.TB, cfg Config, maxRows, maxCost int) *device {
	t.Helper()
	clock := newFakeClock()
	q, err := New(cfg, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	return &device{q: q, clock: clock, maxRows: maxRows, maxCost: maxCost,
		perToken: time.Microsecond, overhead: 100 * time.Microsecond}
}

// runBatch pops one batch and advances the clock over its run time. It
// calls dispatched for each request (at the batch's start) and returns the
// batch's start and end times; it returns ok false when nothing waits.
func (d *device) runBatch(dispatched func(r *Request, at time.Time)) (start, end time.Time, ok bool) {
	b := d.q.Pop(d.maxRows, d.maxCost)
	if len(b) == 0 {
		return start, end, false
	}
	d.batches++
	start = d.clock.now()
	cost := 0
	for _, r := range b {
		cost += r.Cost
		if dispatched != nil {
			dispatched(r, start)
		}
	}
	d.clock.advance(d.overhead + time.Duration(cost)*d.perToken)
	for _, r := range b {
		d.q.Done(r)
	}
	return start, d.clock.now(), true
}

// topUp pushes requests of tenant until it has n waiting.
func (d *device) topUp(t testing.TB, tenant string, n, cost int) {
	t.Helper()
	ts, _ := d.q.Tenant(tenant)
	for i := ts.Queued; i < n; i++ {
		if err := d.q.Push(&Request{Tenant: tenant, Cost: cost, Rows: 1}); err != nil {
			t.Fatalf("topUp %s: %v", tenant, err)
		}
	}
}
