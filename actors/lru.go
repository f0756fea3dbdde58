package actors

import "container/list"

// byteLRU is a least-recently-used cache bounded in bytes, whose entries can
// be pinned (in use by the batch in flight) so eviction skips them. It is not
// safe for concurrent use: each tier has one owner goroutine.
//
// A pinned cache may hold more than its budget for a while (a batch may need
// more adapters than fit); the excess is evicted as soon as pins drop.
type byteLRU[V any] struct {
	budget  int64
	used    int64
	order   *list.List // front = most recently used; values are *lruEntry[V]
	entries map[string]*lruEntry[V]
	evict   func(key string, v V) // called for every entry leaving the cache

	hits, misses, evictions uint64
}

type lruEntry[V any] struct {
	key  string
	val  V
	size int64
	pins int
	elem *list.Element
}

func newByteLRU[V any](budget int64, evict func(string, V)) *byteLRU[V] {
	return &byteLRU[V]{budget: budget, order: list.New(), entries: map[string]*lruEntry[V]{}, evict: evict}
}

// get returns the entry for key and marks it recently used.
func (c *byteLRU[V]) get(key string) (V, bool) {
	e, ok := c.entries[key]
	if !ok {
		c.misses++
		var zero V
		return zero, false
	}
	c.hits++
	c.order.MoveToFront(e.elem)
	return e.val, true
}

// peek is get without touching recency or counters.
func (c *byteLRU[V]) peek(key string) (V, bool) {
	e, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	return e.val, true
}

// insert adds key (size bytes) with pins taken on the entry before
// anything beyond the budget is evicted, so it cannot be the one that goes. Keys name immutable content (params
// digests): inserting a key that is present keeps the resident value,
// which may be in use, adds the pins and hands the new copy to evict, so
// the caller must pass a fresh copy, never the resident value itself.
func (c *byteLRU[V]) insert(key string, v V, size int64, pins int) {
	if e, ok := c.entries[key]; ok {
		e.pins += pins
		c.order.MoveToFront(e.elem)
		if c.evict != nil {
			c.evict(key, v)
		}
	} else {
		e := &lruEntry[V]{key: key, val: v, size: size, pins: pins}
		e.elem = c.order.PushFront(e)
		c.entries[key] = e
		c.used += size
	}
	c.shrink()
}

func (c *byteLRU[V]) pin(key string) bool {
	e, ok := c.entries[key]
	if ok {
		e.pins++
	}
	return ok
}

func (c *byteLRU[V]) unpin(key string) {
	if e, ok := c.entries[key]; ok && e.pins > 0 {
		e.pins--
		if e.pins == 0 {
			c.shrink()
		}
	}
}

func (c *byteLRU[V]) drop(e *lruEntry[V]) {
	c.order.Remove(e.elem)
	delete(c.entries, e.key)
	c.used -= e.size
	c.evictions++
	if c.evict != nil {
		c.evict(e.key, e.val)
	}
}

// shrink evicts least recently used unpinned entries until within budget.
func (c *byteLRU[V]) shrink() {
	for el := c.order.Back(); el != nil && c.used > c.budget; {
		e := el.Value.(*lruEntry[V])
		el = el.Prev()
		if e.pins == 0 {
			c.drop(e)
		}
	}
}

func (c *byteLRU[V]) len() int { return len(c.entries) }

// clear drops every entry, pinned or not (the owner knows none is in use).
func (c *byteLRU[V]) clear() {
	for _, e := range c.entries {
		c.drop(e)
	}
}
