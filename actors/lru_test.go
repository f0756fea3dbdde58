package actors

import (
	"slices"
	"testing"
)

func TestByteLRUEvictsLeastRecentlyUsedUnpinned(t *testing.T) {
	var evicted []string
	c := newByteLRU[int](100, func(k string, _ int) { evicted = append(evicted, k) })
	c.insert("a", 1, 40, 0)
	c.insert("b", 2, 40, 0)
	if _, ok := c.get("a"); !ok { // a is now the most recent
		t.Fatal("a missing")
	}
	c.insert("c", 3, 40, 0) // over budget: b is the least recently used
	if want := []string{"b"}; !slices.Equal(evicted, want) {
		t.Fatalf("evicted %v, want %v", evicted, want)
	}
	if c.used != 80 || c.len() != 2 {
		t.Fatalf("used %d bytes in %d entries, want 80 in 2", c.used, c.len())
	}
}

func TestByteLRUPinnedEntriesSurviveUntilUnpinned(t *testing.T) {
	var evicted []string
	c := newByteLRU[int](100, func(k string, _ int) { evicted = append(evicted, k) })
	c.insert("a", 1, 60, 0)
	c.pin("a")
	c.insert("b", 2, 60, 0) // over budget, but a is pinned and b is the newest
	if len(evicted) != 1 || evicted[0] != "b" {
		// b is the only unpinned entry: it goes, a stays.
		t.Fatalf("evicted %v, want [b]", evicted)
	}
	c.insert("c", 3, 30, 0)
	if c.used != 90 {
		t.Fatalf("used %d, want 90", c.used)
	}
	c.pin("c")
	c.insert("d", 4, 50, 0) // a and c pinned: d goes
	if _, ok := c.peek("a"); !ok {
		t.Fatal("pinned a was evicted")
	}
	c.insert("e", 5, 50, 1) // a new pinned entry is never its own victim
	if _, ok := c.peek("e"); !ok || c.used != 140 {
		t.Fatalf("insert pinned: e present=%v, used %d (want 140: over budget while pinned)", ok, c.used)
	}
	c.unpin("a") // a is the least recent unpinned entry: it goes
	if _, ok := c.peek("a"); ok || c.used != 80 {
		t.Fatalf("after unpin: a present=%v, used %d, want gone and 80", ok, c.used)
	}
}

func TestByteLRUReinsertKeepsResidentValue(t *testing.T) {
	var freed []int
	c := newByteLRU[int](100, func(_ string, v int) { freed = append(freed, v) })
	c.insert("a", 1, 10, 1) // resident and in use
	c.insert("a", 2, 10, 0) // the same content again: keep 1 (in use), free 2
	if v, _ := c.get("a"); v != 1 || c.used != 10 || !slices.Equal(freed, []int{2}) {
		t.Fatalf("reinsert: value %d, used %d, freed %v; want 1, 10, [2]", v, c.used, freed)
	}
	c.unpin("a")
	c.clear()
	if c.len() != 0 || c.used != 0 || !slices.Equal(freed, []int{2, 1}) {
		t.Fatalf("clear: len=%d used=%d freed=%v", c.len(), c.used, freed)
	}
	if c.hits != 1 {
		t.Fatalf("hits %d, want 1", c.hits)
	}
	if _, ok := c.get("zz"); ok || c.misses != 1 {
		t.Fatal("miss not counted")
	}
	c.insert("b", 3, 200, 1)
	c.clear() // pinned or not
	if c.len() != 0 || c.used != 0 {
		t.Fatalf("clear left %d entries, %d bytes", c.len(), c.used)
	}
}
