package sched

// tenantHeap is a binary min-heap of the tenants that have requests waiting,
// keyed by their head request's start tag (ties: earlier arrival first).
// Each entry caches its key so that sifting compares in the heap's own
// memory instead of chasing tenant and request pointers, which with
// thousands of tenants is most of Pop's cost. Written out rather than
// through container/heap so that nothing is boxed in an interface.
type tenantHeap []heapEntry

type heapEntry struct {
	start float64 // t.head.start
	seq   uint64  // t.head.seq
	t     *tenant
}

func (e *heapEntry) less(o *heapEntry) bool {
	if e.start != o.start {
		return e.start < o.start
	}
	return e.seq < o.seq
}

// push adds t, which must have a head request.
func (h *tenantHeap) push(t *tenant) {
	t.heapIdx = len(*h)
	*h = append(*h, heapEntry{start: t.head.start, seq: t.head.seq, t: t})
	h.up(t.heapIdx)
}

// remove takes out the tenant at index i.
func (h *tenantHeap) remove(i int) {
	s := *h
	last := len(s) - 1
	s[i].t.heapIdx = -1
	if i != last {
		s[i] = s[last]
		s[i].t.heapIdx = i
	}
	s[last] = heapEntry{}
	*h = s[:last]
	if i != last {
		h.sift(i)
	}
}

// fix reloads the key at index i from its tenant's head and restores the
// heap, whichever way the key moved.
func (h tenantHeap) fix(i int) {
	e := &h[i]
	e.start, e.seq = e.t.head.start, e.t.head.seq
	h.sift(i)
}

func (h tenantHeap) sift(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h tenantHeap) up(i int) {
	e := h[i]
	for i > 0 {
		p := (i - 1) / 2
		if !e.less(&h[p]) {
			break
		}
		h[i] = h[p]
		h[i].t.heapIdx = i
		i = p
	}
	h[i] = e
	e.t.heapIdx = i
}

// down sifts index i towards the leaves and reports whether it moved.
func (h tenantHeap) down(i int) bool {
	start := i
	e := h[i]
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && h[r].less(&h[c]) {
			c = r
		}
		if !h[c].less(&e) {
			break
		}
		h[i] = h[c]
		h[i].t.heapIdx = i
		i = c
	}
	h[i] = e
	e.t.heapIdx = i
	return i > start
}
