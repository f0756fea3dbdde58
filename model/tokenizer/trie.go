package tokenizer

import "slices"

// runeTrie is a double-array trie over code points. Runes are first mapped
// to dense codes (1..K, 0 = a rune no piece contains), so a transition is
// two array reads: t = base[s]+code, valid when check[t] == s.
type runeTrie struct {
	low  []int32        // code of rune r for r < len(low)
	high map[rune]int32 // code of the rarer runes above len(low)

	// states is the double array; base, check and id of a state sit in one
	// cache line. Scores are looked up by id, only at states that end a
	// piece.
	states []daState
	depth  int // longest piece, in code points
}

type daState struct {
	base  int32
	check int32 // parent state; -1: free slot
	id    int32 // piece id ending at this state, -1 if none
}

// lowLimit bounds the dense rune table: runes below it are looked up in an
// array (at most 48 KiB), the rest in a map. It covers the alphabetic
// scripts and the common symbols; USE-Lite's highest rune is U+2665.
const lowLimit = 0x3000

func (t *runeTrie) code(r rune) int32 {
	if int(r) < len(t.low) {
		return t.low[r]
	}
	return t.high[r]
}

type buildNode struct {
	codes    []int32
	children []*buildNode
	id       int32 // last piece inserted that ends here, -1 if none
}

func (n *buildNode) child(c int32) *buildNode {
	i, ok := slices.BinarySearch(n.codes, c)
	if ok {
		return n.children[i]
	}
	ch := &buildNode{id: -1}
	n.codes = slices.Insert(n.codes, i, c)
	n.children = slices.Insert(n.children, i, ch)
	return ch
}

// trieEntry is one piece to insert; later entries with the same piece
// replace earlier ones (the reference's Trie.insert does the same).
type trieEntry struct {
	piece string
	id    int32
}

func buildTrie(entries []trieEntry) *runeTrie {
	t := &runeTrie{high: map[rune]int32{}}
	// Codes in order of first appearance; frequent pieces come first in a
	// unigram vocabulary, so frequent runes get small codes and the double
	// array stays dense.
	var maxLow rune = -1
	codes := map[rune]int32{}
	for _, e := range entries {
		for _, r := range e.piece {
			if _, ok := codes[r]; !ok {
				codes[r] = int32(len(codes) + 1)
				if r < lowLimit && r > maxLow {
					maxLow = r
				}
			}
		}
	}
	t.low = make([]int32, maxLow+1)
	for r, c := range codes {
		if r < lowLimit {
			t.low[r] = c
		} else {
			t.high[r] = c
		}
	}

	root := &buildNode{id: -1}
	for _, e := range entries {
		if e.piece == "" {
			continue
		}
		n, d := root, 0
		for _, r := range e.piece {
			n = n.child(codes[r])
			d++
		}
		n.id = e.id
		t.depth = max(t.depth, d)
	}

	var da doubleArray
	da.init()
	type item struct {
		n     *buildNode
		state int32
	}
	queue := []item{{root, 0}}
	da.take(0, -2) // the root is nobody's child
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		da.id[it.state] = it.n.id
		if len(it.n.codes) == 0 {
			continue
		}
		b := da.findBase(it.n.codes)
		da.base[it.state] = b
		for i, c := range it.n.codes {
			s := b + c
			da.take(s, it.state)
			queue = append(queue, item{it.n.children[i], s})
		}
	}
	t.states = make([]daState, da.used+1)
	for i := range t.states {
		t.states[i] = daState{base: da.base[i], check: da.check[i], id: da.id[i]}
	}
	return t
}

// doubleArray is the builder's state: the arrays plus a doubly linked list
// of free slots so that the base search visits only free slots.
type doubleArray struct {
	base, check, id []int32
	next, prev      []int32 // free list; slot len is the sentinel
	used            int32   // highest occupied slot
}

func (d *doubleArray) init() {
	d.grow(1024)
}

func (d *doubleArray) grow(n int) {
	old := len(d.check)
	if n <= old {
		return
	}
	n = max(n, 2*old)
	d.base = append(d.base, make([]int32, n-old)...)
	d.id = append(d.id, make([]int32, n-old)...)
	d.check = append(d.check, make([]int32, n-old)...)
	for i := old; i < n; i++ {
		d.check[i] = -1
		d.id[i] = -1
	}
	// Rebuild the free list with the sentinel at index n.
	d.next = make([]int32, n+1)
	d.prev = make([]int32, n+1)
	last := int32(n)
	for i := 0; i < n; i++ {
		if d.check[i] == -1 {
			d.next[last] = int32(i)
			d.prev[i] = last
			last = int32(i)
		}
	}
	d.next[last] = int32(n)
	d.prev[n] = last
}

func (d *doubleArray) take(s, parent int32) {
	d.grow(int(s) + 1)
	d.check[s] = parent
	p, n := d.prev[s], d.next[s]
	d.next[p], d.prev[n] = n, p
	d.used = max(d.used, s)
}

// findBase returns the smallest b >= 0 for which every b+codes[i] is free.
func (d *doubleArray) findBase(codes []int32) int32 {
	sentinel := int32(len(d.check))
	for pos := d.next[sentinel]; ; pos = d.next[pos] {
		if pos == sentinel {
			// Every free slot tried: place past the end.
			b := max(int32(len(d.check)), codes[0]) - codes[0]
			d.grow(int(b+codes[len(codes)-1]) + 1)
			return b
		}
		if pos < codes[0] {
			continue
		}
		b := pos - codes[0]
		ok := true
		for _, c := range codes[1:] {
			s := b + c
			if int(s) < len(d.check) && d.check[s] != -1 {
				ok = false
				break
			}
		}
		if ok {
			d.grow(int(b+codes[len(codes)-1]) + 1)
			return b
		}
	}
}
