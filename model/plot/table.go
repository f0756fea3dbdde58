package plot

import (
	"errors"
	"fmt"
	"sync"

	"github.com/smile-vplm/smile/model"
)

// Source reads stored entries (storage's Badger store implements it). An
// absent entry is ok false; a read failure is an error.
type Source interface {
	Entry(g Gram) (b []byte, ok bool, err error)
}

// Stats is a table's lookup record since it was opened.
type Stats struct {
	Levels
	Sequences   int64
	MemoryHits  int64 // entries found in memory
	SourceReads int64 // entries read from the source
	Corrupt     int64 // entries that failed their checks (then treated as absent)
	ReadErrors  int64 // source reads that failed (the lookup's call failed)
	MemoryBytes int64 // entry bytes held in memory now
	Entries     int   // n-grams in the table
}

// Table is a PLOT table opened for lookups: the set of n-grams it holds,
// a bounded in-memory cache of their entries (the hot ones, CLOCK
// eviction) in front of a Source, and a Merger. It implements model.Lower
// and is safe for concurrent use (one lock per sequence).
type Table struct {
	id     string
	merger *Merger
	src    Source

	mu     sync.Mutex
	member map[Gram]struct{}
	bad    map[Gram]struct{} // entries found corrupt: not read again
	cache  clock
	stats  Stats
	onBad  func(g Gram, err error)
	look   Lookup
	// readErr is the first failed source read of a Lower call: the call
	// fails with it (a state built without a stored entry would be wrong).
	readErr error
}

// NewTable opens table id (its n-grams grams, entries in src) for lookups,
// keeping up to cacheBytes of entries in memory. onBad, when set, hears of
// each entry that fails its checks, once per n-gram. A source read that
// fails otherwise fails the Lower call that needed it.
func NewTable(id string, merger *Merger, grams []Gram, src Source, cacheBytes int64, onBad func(Gram, error)) *Table {
	t := &Table{id: id, merger: merger, src: src, member: make(map[Gram]struct{}, len(grams)), bad: map[Gram]struct{}{}, onBad: onBad}
	for _, g := range grams {
		t.member[g] = struct{}{}
	}
	t.cache.init(cacheBytes)
	t.stats.Entries = len(t.member)
	t.look = t.lookup
	return t
}

// ID is the table's content address.
func (t *Table) ID() string { return t.id }

// Cut is the layer boundary its states are at.
func (t *Table) Cut() int { return t.merger.cut }

// Width is the width of its states.
func (t *Table) Width() int { return t.merger.width }

// Has reports whether the table holds g.
func (t *Table) Has(g Gram) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.member[g]
	return ok
}

// Stats returns the lookup record.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.MemoryBytes = t.cache.used
	return s
}

// Lower writes ids' states at the cut (model.Lower).
func (t *Table) Lower(ids []int32, dst []float32) error {
	return t.LowerHiding(ids, dst, nil)
}

// LowerHiding is Lower with the n-grams for which hide reports true
// treated as absent (nil hides nothing): a training text's states as a
// text whose rarest n-grams the table lacks would get them (see Hide).
func (t *Table) LowerHiding(ids []int32, dst []float32, hide func(Gram) bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	look := t.look
	if hide != nil {
		look = func(g Gram) ([]byte, bool) {
			if hide(g) {
				return nil, false
			}
			return t.lookup(g)
		}
	}
	t.readErr = nil
	var lv Levels
	err := t.merger.Merge(ids, look, dst, &lv)
	if err == nil {
		err = t.readErr
	}
	t.readErr = nil
	if err != nil {
		return err
	}
	// The hit levels are serving's: lookups with n-grams hidden on
	// purpose (training's) are not counted.
	if hide == nil {
		t.stats.Levels.Add(lv)
		t.stats.Sequences++
	}
	return nil
}

// Forgive lets the table read g's entry again after it was found corrupt
// (once it has been stored anew).
func (t *Table) Forgive(g Gram) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.bad, g)
}

// Warm reads entries into memory, in grams' order, while they fit the
// cache; it returns how many it read (failures are counted in Stats).
func (t *Table) Warm(grams []Gram) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, g := range grams {
		if _, ok := t.member[g]; !ok {
			continue
		}
		if !t.cache.fits(EntryLen(int(g.N), t.merger.width) - 4) {
			break
		}
		if _, ok := t.cache.get(g); ok {
			continue
		}
		if _, ok := t.read(g); ok {
			n++
		}
	}
	return n
}

// lookup is the Merger's Lookup: membership, then memory, then the
// source. A corrupt entry is counted, reported and treated as absent; a
// failed read too (a request still gets an answer from the lower levels).
func (t *Table) lookup(g Gram) ([]byte, bool) {
	if _, ok := t.member[g]; !ok {
		return nil, false
	}
	if h, ok := t.cache.get(g); ok {
		t.stats.MemoryHits++
		return h, true
	}
	return t.read(g)
}

func (t *Table) read(g Gram) ([]byte, bool) {
	if _, bad := t.bad[g]; bad {
		return nil, false
	}
	t.stats.SourceReads++
	b, ok, err := t.src.Entry(g)
	if err == nil && !ok {
		err = fmt.Errorf("%w: n-gram %v is listed in table %s but has no stored entry", ErrCorrupt, g, t.id)
	}
	var h []byte
	if err == nil {
		h, err = CheckEntry(g, t.merger.width, b)
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			// Not the entry's fault (a closed store, an I/O error): the
			// call fails rather than answer from shorter n-grams.
			t.stats.ReadErrors++
			if t.readErr == nil {
				t.readErr = fmt.Errorf("plot: table %s: reading n-gram %v: %w", t.id, g, err)
			}
			return nil, false
		}
		t.stats.Corrupt++
		t.bad[g] = struct{}{}
		if t.onBad != nil {
			t.onBad(g, err)
		}
		return nil, false
	}
	return t.cache.put(g, h), true
}

// clock is a byte-bounded cache of entries' fp16 values with CLOCK
// (second chance) eviction; evicted buffers are reused.
type clock struct {
	limit, used int64
	slots       []clockSlot
	index       map[Gram]int32
	free        []int32
	hand        int
}

type clockSlot struct {
	g   Gram
	b   []byte
	ref bool
	ok  bool
}

func (c *clock) init(limit int64) {
	c.limit = max(limit, 0)
	c.index = map[Gram]int32{}
}

func (c *clock) fits(n int) bool { return c.used+int64(n) <= c.limit }

func (c *clock) get(g Gram) ([]byte, bool) {
	i, ok := c.index[g]
	if !ok {
		return nil, false
	}
	s := &c.slots[i]
	s.ref = true
	return s.b, true
}

// put stores a copy of h (unless it cannot fit at all) and returns the
// bytes to read: the cached copy, or h itself.
func (c *clock) put(g Gram, h []byte) []byte {
	n := int64(len(h))
	if n > c.limit {
		return h
	}
	var spare []byte
	for c.used+n > c.limit {
		s := &c.slots[c.hand]
		if s.ok && !s.ref {
			delete(c.index, s.g)
			c.used -= int64(len(s.b))
			s.ok = false
			c.free = append(c.free, int32(c.hand))
			if int64(len(s.b)) == n && spare == nil {
				spare = s.b
			}
			s.b = nil
		} else {
			s.ref = false
		}
		c.hand = (c.hand + 1) % len(c.slots)
	}
	if spare == nil {
		spare = make([]byte, n)
	}
	copy(spare, h)
	slot := clockSlot{g: g, b: spare, ok: true}
	var i int32
	if k := len(c.free); k > 0 {
		i = c.free[k-1]
		c.free = c.free[:k-1]
		c.slots[i] = slot
	} else {
		i = int32(len(c.slots))
		c.slots = append(c.slots, slot)
	}
	c.index[g] = i
	c.used += n
	return spare
}

var _ model.Lower = (*Table)(nil)

// LeaveOneOut is a table's lookups for the texts of its own corpus, as
// training reads them: each text sees the table as if it had been built
// without that text, so an n-gram only it contains (counts says how often
// the corpus holds each) is absent, as an unseen text's rare n-grams are
// at serving time. Training on a table's own corpus otherwise finds every
// window whole, and the upper layers learn from states cleaner than any
// they are served.
type LeaveOneOut struct {
	Table  *Table
	Counts *Counter
}

// Cut is the table's cut.
func (l LeaveOneOut) Cut() int { return l.Table.Cut() }

// Lower writes ids' states with the n-grams that occur nowhere else in the
// corpus hidden.
func (l LeaveOneOut) Lower(ids []int32, dst []float32) error {
	own := NewCounter()
	own.Add(ids)
	return l.Table.LowerHiding(ids, dst, func(g Gram) bool {
		return g.N > 1 && l.Counts.Count(g) <= own.Count(g)
	})
}

var _ model.Lower = LeaveOneOut{}
