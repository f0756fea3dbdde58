package cpu

import (
	"sync"
	"sync/atomic"
)

// task is work split into index ranges. run is called with the participant
// number w (0 is the calling goroutine, which always takes part), so tasks
// can index per-participant scratch, and a range [lo, hi).
//
// Tasks are pointers to structs kept in the Device and refilled per call:
// putting a pointer in an interface does not allocate, where a closure
// handed to another goroutine would.
type task interface {
	run(w, lo, hi int)
}

type job struct {
	t           task
	w, n, grain int
}

// pool runs tasks on the calling goroutine plus threads-1 long-lived helper
// goroutines. Helpers sleep on a channel between calls, so an idle device
// costs nothing and a call never starts a goroutine.
type pool struct {
	threads int
	jobs    []chan job
	wg      sync.WaitGroup
	next    atomic.Int64
	panicV  atomic.Pointer[any]
	closed  atomic.Bool
	once    sync.Once
}

func newPool(threads int) *pool {
	p := &pool{threads: threads}
	for w := 1; w < threads; w++ {
		ch := make(chan job, 1)
		p.jobs = append(p.jobs, ch)
		go p.helper(ch)
	}
	return p
}

func (p *pool) helper(ch chan job) {
	for j := range ch {
		p.work(j.t, j.w, j.n, j.grain)
		p.wg.Done()
	}
}

// work takes chunks of grain indices until none are left; chunks are handed
// out dynamically, so a participant that is descheduled (the cores are
// shared) or woken late simply takes fewer.
func (p *pool) work(t task, w, n, grain int) {
	defer func() {
		if r := recover(); r != nil {
			v := r // escapes only when there is a panic
			p.panicV.CompareAndSwap(nil, &v)
			p.next.Store(int64(n)) // stop the others early
		}
	}()
	for {
		lo := int(p.next.Add(int64(grain))) - grain
		if lo >= n {
			return
		}
		t.run(w, lo, min(lo+grain, n))
	}
}

// parallel runs t over [0, n) in chunks of grain indices on at most maxw
// participants (and at most the pool's threads). With one participant it
// runs t inline as a single range.
func (p *pool) parallel(t task, n, grain, maxw int) {
	if n <= 0 {
		return
	}
	grain = max(grain, 1)
	chunks := (n + grain - 1) / grain
	w := min(p.threads, chunks, maxw)
	if w <= 1 || p.closed.Load() {
		t.run(0, 0, n)
		return
	}
	p.next.Store(0)
	p.wg.Add(w - 1)
	for i := 1; i < w; i++ {
		p.jobs[i-1] <- job{t: t, w: i, n: n, grain: grain}
	}
	p.work(t, 0, n, grain)
	p.wg.Wait()
	if r := p.panicV.Swap(nil); r != nil {
		panic(*r)
	}
}

// close stops the helpers; later calls run inline. It may be called more
// than once (Close, then the cleanup of an unreachable Device).
func (p *pool) close() {
	p.once.Do(func() {
		p.closed.Store(true)
		for _, ch := range p.jobs {
			close(ch)
		}
	})
}
