package actors

import (
	"slices"
	"testing"
)

func TestByteLRUEvictsLeastRecentlyUsedUnpinned(t *testing.T) {
	var evicted []string
	c := newByteLRU[int](100, func(k string, _ int) { evicted = append(evicted, k) })
	c.put("a", 1, 40)
	c.put("b", 2, 40)
	if _, ok := c.get("a"); !ok { // a is now the most recent
		t.Fatal("a missing")
	}
	c.put("c", 3, 40) // over budget: b is the least recently used
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
	c.put("a", 1, 60)
	c.pin("a")
	c.put("b", 2, 60) // over budget, but a is pinned and b is the newest
	if len(evicted) != 1 || evicted[0] != "b" {
		// b is the only unpinned entry: it goes, a stays.
		t.Fatalf("evicted %v, want [b]", evicted)
	}
	c.put("c", 3, 30)
	if c.used != 90 {
		t.Fatalf("used %d, want 90", c.used)
	}
	c.pin("c")
	c.put("d", 4, 50) // a and c pinned: d goes
	if _, ok := c.peek("a"); !ok {
		t.Fatal("pinned a was evicted")
	}
	c.putPinned("e", 5, 50) // a new pinned entry is never its own victim
	if _, ok := c.peek("e"); !ok || c.used != 140 {
		t.Fatalf("putPinned: e present=%v, used %d (want 140: over budget while pinned)", ok, c.used)
	}
	c.unpin("a") // a is the least recent unpinned entry: it goes
	if _, ok := c.peek("a"); ok || c.used != 80 {
		t.Fatalf("after unpin: a present=%v, used %d, want gone and 80", ok, c.used)
	}
}

func TestByteLRUReplaceAndRemove(t *testing.T) {
	n := 0
	c := newByteLRU[int](100, func(string, int) { n++ })
	c.put("a", 1, 10)
	c.put("a", 2, 20)
	if v, _ := c.get("a"); v != 2 || c.used != 20 || n != 1 {
		t.Fatalf("replace: v=%d used=%d evictions=%d", v, c.used, n)
	}
	c.remove("a")
	if c.len() != 0 || c.used != 0 || n != 2 {
		t.Fatalf("remove: len=%d used=%d evictions=%d", c.len(), c.used, n)
	}
	if c.hits != 1 {
		t.Fatalf("hits %d, want 1", c.hits)
	}
	if _, ok := c.get("zz"); ok || c.misses != 1 {
		t.Fatal("miss not counted")
	}
}
