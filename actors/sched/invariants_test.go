package sched

import (
	"errors"
	"math"
	"testing"
	"time"
)

// checkInvariants verifies the queue's internal bookkeeping: counts agree
// with the lists, the heap holds exactly the tenants with work waiting and
// is ordered, every waiting tag is at or past V, and a tenant's waiting
// tags are contiguous (what Remove's and SetTenant's re-tagging rely on).
func checkInvariants(t *testing.T, q *Queue) {
	t.Helper()
	global := 0
	var prev *Request
	for r := q.oldest; r != nil; r = r.gnext {
		if r.gprev != prev || r.state != stateQueued {
			t.Fatalf("global list broken at seq %d", r.seq)
		}
		if prev != nil && prev.seq >= r.seq {
			t.Fatalf("global list out of arrival order")
		}
		prev = r
		global++
	}
	if prev != q.newest || global != q.waiting {
		t.Fatalf("global list holds %d, waiting %d", global, q.waiting)
	}
	queued, running, inHeap := 0, 0, 0
	for name, tn := range q.tenants {
		n := 0
		var last *Request
		for r := tn.head; r != nil; r = r.next {
			if r.t != tn || r.state != stateQueued {
				t.Fatalf("tenant %s: foreign or non-queued request in its FIFO", name)
			}
			if r.start < q.vtime-1e-9 {
				t.Fatalf("tenant %s: waiting start %v behind V %v", name, r.start, q.vtime)
			}
			if last != nil && math.Abs(r.start-last.finish) > 1e-6*max(1, r.start) {
				t.Fatalf("tenant %s: tags not contiguous: %v after finish %v", name, r.start, last.finish)
			}
			last = r
			n++
		}
		if last != tn.tail || n != tn.queued {
			t.Fatalf("tenant %s: FIFO holds %d, queued %d", name, n, tn.queued)
		}
		if (tn.head != nil) != (tn.heapIdx >= 0) {
			t.Fatalf("tenant %s: head %v but heap index %d", name, tn.head != nil, tn.heapIdx)
		}
		if tn.heapIdx >= 0 {
			inHeap++
			e := q.heap[tn.heapIdx]
			if e.t != tn || e.start != tn.head.start || e.seq != tn.head.seq {
				t.Fatalf("tenant %s: stale heap entry", name)
			}
		}
		if tn.cfg.MaxInflight > 0 && tn.queued+tn.running > tn.cfg.MaxInflight && !tn.configured {
			t.Fatalf("tenant %s: %d inflight over its limit", name, tn.queued+tn.running)
		}
		queued += tn.queued
		running += tn.running
	}
	if queued != q.waiting || running != q.running || inHeap != len(q.heap) {
		t.Fatalf("sums: queued %d/%d running %d/%d heap %d/%d", queued, q.waiting, running, q.running, inHeap, len(q.heap))
	}
	for i := 1; i < len(q.heap); i++ {
		if q.heap[i].less(&q.heap[(i-1)/2]) {
			t.Fatalf("heap order broken at %d", i)
		}
	}
	if q.waiting > q.cfg.MaxQueued {
		t.Fatalf("%d waiting over MaxQueued %d", q.waiting, q.cfg.MaxQueued)
	}
}

// FuzzQueueOps runs a random script of every operation and checks, after
// each, that the queue's invariants hold, that nothing panics, that Pop
// serves start tags in order within a busy period, and that every refusal is
// one of the package's sentinels.
func FuzzQueueOps(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte("push push push pop done remove weight rate tick flood"))
	f.Add(make([]byte, 64))
	f.Fuzz(runScript)
}

// runScript interprets script as operations; see FuzzQueueOps.
func runScript(t *testing.T, script []byte) {
	clock := newFakeClock()
	q := mustNew(t, Config{MaxQueued: 40, MaxQueuedPerTenant: 12, DefaultTenant: TenantConfig{MaxInflight: 15}}, clock.now)
	names := []string{"a", "b", "c", "d", "e"}
	var running []*Request
	lastStart := -1.0
	next := func(i *int) byte {
		if *i >= len(script) {
			return 0
		}
		b := script[*i]
		*i++
		return b
	}
	for i := 0; i < len(script); {
		op, arg := next(&i), next(&i)
		switch op % 8 {
		case 0, 1, 2: // push
			r := &Request{Tenant: names[arg%5], Cost: int(arg%7) + int(op/8)%3*100, Rows: 1 + int(arg/64)}
			wasEmpty := q.Len() == 0
			err := q.Push(r)
			switch {
			case err == nil:
				if wasEmpty {
					lastStart = -1
				}
			case r.Cost == 0 && errors.Is(err, ErrBadRequest):
			case errors.Is(err, ErrQueueFull), errors.Is(err, ErrTenantLimit), errors.Is(err, ErrRateLimited):
			default:
				t.Fatalf("push: unexpected error %v", err)
			}
		case 3: // pop
			for _, r := range q.Pop(int(arg%6), int(arg/6%40)) {
				if r.start < lastStart {
					t.Fatalf("served start %v after %v", r.start, lastStart)
				}
				lastStart = r.start
				running = append(running, r)
			}
		case 4: // done
			if len(running) > 0 {
				k := int(arg) % len(running)
				q.Done(running[k])
				q.Done(running[k]) // a second Done must be harmless
				running = append(running[:k], running[k+1:]...)
			}
		case 5: // remove
			k := 0
			q.Remove(func(r *Request) bool { k++; return (k+int(arg))%3 == 0 })
		case 6: // reconfigure
			tc := TenantConfig{Weight: float64(arg%4) + 0.5, MaxInflight: int(arg / 32), RatePerSec: float64(arg % 3 * 5)}
			if err := q.SetTenant(names[arg%5], tc); err != nil {
				t.Fatal(err)
			}
		case 7: // time passes; a tenant may be forgotten
			clock.advance(time.Duration(arg) * 10 * time.Millisecond)
			q.ForgetTenant(names[arg%5])
		}
		checkInvariants(t, q)
	}
	for _, r := range running {
		q.Done(r)
	}
	for q.Len() > 0 {
		for _, r := range q.Pop(3, 0) {
			q.Done(r)
		}
	}
	checkInvariants(t, q)
	if q.Running() != 0 || q.Len() != 0 {
		t.Fatalf("left %d running, %d waiting", q.Running(), q.Len())
	}
}
