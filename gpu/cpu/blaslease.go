package cpu

import "sync"

// blasThreads guards OpenBLAS's thread count for every CPU device in the
// process (see "OpenBLAS's thread count" in the package documentation).
var blasThreads = newBLASLease(blasSetNumThreads)

// blasLease hands out OpenBLAS's thread count, which OpenBLAS keeps in one
// process-wide variable and reads at the start of every GEMM big enough to
// thread (over blasSerialMNK multiply-adds). A section that makes such
// calls, or that runs BLAS calls side by side on several goroutines and so
// relies on a count of 1, holds the lease for the count it needs from
// before its first call until after its last, so no other device changes
// the count under it.
//
// Sections that need the same count share the lease: two devices with the
// same Threads, or the single-threaded items of two attention calls, run at
// once (OpenBLAS itself still runs one threaded GEMM at a time). A section
// that needs another count waits until the holders are done; while it
// waits, newcomers wait too, so the holders drain and it gets its turn.
//
// A section must not acquire the lease again before releasing it (a waiter
// between the two would deadlock it). BLAS calls at or under blasSerialMNK
// never read the count and need no lease.
type blasLease struct {
	mu      sync.Mutex
	drained sync.Cond // broadcast when active drops to 0 with waiters
	set     func(int) // sets the library's count; only called with active == 0
	n       int       // the count last set, 0 before the first section
	active  int       // sections holding the lease, all with count n
	waiting int       // sections waiting for their turn
}

func newBLASLease(set func(int)) *blasLease {
	l := &blasLease{set: set}
	l.drained.L = &l.mu
	return l
}

// acquire waits until the count is n and the caller may rely on it.
func (l *blasLease) acquire(n int) {
	l.mu.Lock()
	if l.active > 0 && (l.n != n || l.waiting > 0) {
		l.waiting++
		for {
			l.drained.Wait()
			if l.active == 0 || l.n == n {
				break
			}
		}
		l.waiting--
	}
	if l.n != n { // active == 0 here
		l.set(n)
		l.n = n
	}
	l.active++
	l.mu.Unlock()
}

// release ends a section begun by acquire.
func (l *blasLease) release() {
	l.mu.Lock()
	l.active--
	if l.active == 0 && l.waiting > 0 {
		l.drained.Broadcast()
	}
	l.mu.Unlock()
}
