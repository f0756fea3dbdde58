package plot

import (
	"fmt"
	"math"

	"github.com/smile-vplm/smile/model"
)

// Level is how a position's window was found.
type Level uint8

const (
	// LevelZero: nothing was found for the window (not even its unigram).
	LevelZero Level = iota
	// LevelUnigram: only the position's own id.
	LevelUnigram
	// LevelPartial: a bigram inside a trigram window.
	LevelPartial
	// LevelFull: the whole window (a trigram; a bigram or unigram where the
	// sequence is that short at the position).
	LevelFull
)

// Levels counts positions by the level their window was found at.
type Levels struct {
	Full    int64 `json:"full"`
	Partial int64 `json:"partial"`
	Unigram int64 `json:"unigram"`
	Zero    int64 `json:"zero"`
}

// Positions is the number of positions counted.
func (l Levels) Positions() int64 { return l.Full + l.Partial + l.Unigram + l.Zero }

// HitRate is the share of positions served at trigram or bigram level:
// their whole window found (Full: a trigram, or the bigram or unigram that
// is the whole window of a text that short) or a bigram inside it
// (Partial); 0 with no positions.
func (l Levels) HitRate() float64 {
	if n := l.Positions(); n > 0 {
		return float64(l.Full+l.Partial) / float64(n)
	}
	return 0
}

// Add adds o's counts to l.
func (l *Levels) Add(o Levels) {
	l.Full += o.Full
	l.Partial += o.Partial
	l.Unigram += o.Unigram
	l.Zero += o.Zero
}

// Lookup gives an n-gram's stored fp16 values (N rows of the table's
// width, little-endian), or ok false when the table has no entry for it.
// The bytes are only read during the call.
type Lookup func(g Gram) (halves []byte, ok bool)

// Merger turns looked-up entries into a sequence's states at the cut (see
// the package doc). It is made once per backbone and cut; Merge uses its
// scratch, so a Merger serves one goroutine at a time.
type Merger struct {
	cut, width int
	maxPos     int
	// Post-LN: the cut layer's output norm.
	gamma, beta []float32
	eps         float32
	// Pre-LN with additive positions: the position signal as it reaches
	// the states at the cut, [maxPos, width] (nil: none).
	pos []float32

	row   []float32 // one decoded entry
	count []int32   // contributions per position
	slots []int32   // per position: contributions from slot 0, 1, 2 (3 each)
}

// NewMerger makes the merger for spec's backbone cut after layer cut
// (1 ≤ cut < layers).
func NewMerger(spec *model.TrainSpec, cut int) (*Merger, error) {
	if cut < 1 || cut >= len(spec.Blocks) {
		return nil, fmt.Errorf("%w: plot: cut %d: want 1..%d (the layers a table replaces; at least one must run)", model.ErrBadInput, cut, len(spec.Blocks)-1)
	}
	b := &spec.Blocks[cut-1]
	m := &Merger{cut: cut, width: b.Out, maxPos: spec.Info.MaxPositions}
	if m.maxPos <= 0 {
		m.maxPos = spec.Embedding.MaxPositions
	}
	if !b.PreLN {
		m.gamma, m.beta, m.eps = b.LN2G, b.LN2B, b.LNEps
		if len(m.gamma) != m.width || len(m.beta) != m.width {
			return nil, fmt.Errorf("%w: plot: layer %d's output norm has %d weights, want %d", model.ErrBadInput, cut, len(m.gamma), m.width)
		}
	} else if spec.Embedding.LNGamma == nil && len(spec.Embedding.Positions) > 0 {
		// The embeddings' position rows travel the residual path unchanged
		// but for its projections (ResW): carry them to the cut.
		e := &spec.Embedding
		rows := min(m.maxPos, e.MaxPositions)
		if rows <= 0 || len(e.Positions) < rows*e.Width {
			return nil, fmt.Errorf("%w: plot: %d position values for %d positions of width %d", model.ErrBadInput, len(e.Positions), rows, e.Width)
		}
		p, w := e.Positions[:rows*e.Width], e.Width
		for l := range cut {
			blk := &spec.Blocks[l]
			if !blk.PreLN {
				p = nil
				break
			}
			if blk.ResW != nil {
				p = matmul(p, rows, w, blk.ResW, blk.Out)
				w = blk.Out
			}
		}
		if p != nil && w == m.width {
			m.pos, m.maxPos = p, rows
		}
	}
	return m, nil
}

func matmul(a []float32, rows, in int, b []float32, out int) []float32 {
	c := make([]float32, rows*out)
	for i := range rows {
		ci := c[i*out : (i+1)*out]
		for k, av := range a[i*in : (i+1)*in] {
			if av == 0 {
				continue
			}
			for j, bv := range b[k*out : (k+1)*out] {
				ci[j] += av * bv
			}
		}
	}
	return c
}

// Cut is the layer boundary the merged states are at.
func (m *Merger) Cut() int { return m.cut }

// Width is the width of the merged states (and of an entry's rows).
func (m *Merger) Width() int { return m.width }

// Merge writes the states at the cut for prepared ids (len(ids)*Width()
// floats) into dst, looking up each position's window, and adds the levels
// found to lv. A stored value that fails to decode is an error wrapping
// ErrCorrupt.
func (m *Merger) Merge(ids []int32, look Lookup, dst []float32, lv *Levels) error {
	n, w := len(ids), m.width
	if n == 0 {
		return fmt.Errorf("%w: plot: merge of an empty sequence", model.ErrBadInput)
	}
	if len(dst) != n*w {
		return fmt.Errorf("%w: plot: merge into %d floats, want %d", model.ErrBadInput, len(dst), n*w)
	}
	if m.pos != nil && n > m.maxPos {
		return fmt.Errorf("%w: plot: sequence of %d ids, the backbone has %d positions", model.ErrBadInput, n, m.maxPos)
	}
	clear(dst)
	m.count = grow(m.count, n)
	m.slots = grow(m.slots, 3*n)
	if cap(m.row) < MaxN*w {
		m.row = make([]float32, MaxN*w)
	}
	add := func(lo, hi int) (bool, error) {
		h, ok := look(gram(ids[lo:hi]))
		if !ok {
			return false, nil
		}
		k := hi - lo
		row := m.row[:k*w]
		if err := model.DecodeHalves(row, h); err != nil {
			return false, fmt.Errorf("%w: n-gram %v: %v", ErrCorrupt, ids[lo:hi], err)
		}
		for j := range k {
			p := lo + j
			d, r := dst[p*w:(p+1)*w], row[j*w:(j+1)*w]
			for x, v := range r {
				d[x] += v
			}
			m.count[p]++
			m.slots[3*p+j]++
		}
		return true, nil
	}
	for i := range n {
		lo, hi := max(0, i-1), min(n, i+2)
		ok, err := add(lo, hi)
		if err != nil {
			return err
		}
		if ok {
			lv.Full++
			continue
		}
		if hi-lo == 3 {
			if ok, err = add(i-1, i+1); !ok && err == nil {
				ok, err = add(i, i+2)
			}
			if err != nil {
				return err
			}
			if ok {
				lv.Partial++
				continue
			}
		}
		if hi-lo > 1 {
			if ok, err = add(i, i+1); err != nil {
				return err
			}
			if ok {
				lv.Unigram++
				continue
			}
		}
		lv.Zero++
	}
	for p := range n {
		d := dst[p*w : (p+1)*w]
		c := m.count[p]
		if c > 1 {
			inv := 1 / float32(c)
			for x := range d {
				d[x] *= inv
			}
		}
		if m.pos != nil {
			// Move the position signal from the slots the rows came from
			// to the real position.
			inv := 1 / float32(c)
			real := m.pos[p*w : (p+1)*w]
			for j := range 3 {
				s := m.slots[3*p+j]
				if s == 0 {
					continue
				}
				f := float32(s) * inv
				slot := m.pos[j*w : (j+1)*w]
				for x := range d {
					d[x] -= f * slot[x]
				}
			}
			for x := range d {
				d[x] += real[x]
			}
		}
		if m.gamma != nil {
			renorm(d, m.gamma, m.beta, m.eps)
		}
	}
	return nil
}

func grow(s []int32, n int) []int32 {
	if cap(s) < n {
		return make([]int32, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// renorm puts a mean of layer-norm outputs (rows g·n + b) back on the
// norm's manifold: it takes the affine part off (u = (x-b)/g; 0 where g is
// 0), normalises u and puts g and b back. A single row comes back as it
// was (up to eps): averaging only shrinks the normalised part, which this
// restores. Sums are float64, as the backbones' host code does.
func renorm(x, g, b []float32, eps float32) {
	var s, ss float64
	for i, v := range x {
		u := 0.0
		if g[i] != 0 {
			u = (float64(v) - float64(b[i])) / float64(g[i])
		}
		s += u
	}
	n := float64(len(x))
	mean := s / n
	for i, v := range x {
		u := 0.0
		if g[i] != 0 {
			u = (float64(v) - float64(b[i])) / float64(g[i])
		}
		ss += (u - mean) * (u - mean)
	}
	inv := 1 / math.Sqrt(ss/n+float64(eps))
	for i, v := range x {
		u := 0.0
		if g[i] != 0 {
			u = (float64(v) - float64(b[i])) / float64(g[i])
		}
		x[i] = float32((u-mean)*inv)*g[i] + b[i]
	}
}
