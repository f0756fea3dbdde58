package plot

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/smile-vplm/smile/model"
)

// Counter counts, over a corpus of prepared sequences, the n-grams a table
// can use: every position's window (its trigram; a bigram at a sequence's
// edge) and every bigram (the windows' fallbacks). Not safe for concurrent
// use.
type Counter struct {
	counts    map[Gram]int64
	texts     int64
	seqs      int64
	positions int64
}

// NewCounter makes an empty counter.
func NewCounter() *Counter { return &Counter{counts: map[Gram]int64{}} }

// Add counts one prepared sequence's n-grams of two or three ids (the
// vocabulary's unigrams are always in a table).
func (c *Counter) Add(ids []int32) {
	c.texts++
	c.add(ids)
}

func (c *Counter) add(ids []int32) {
	c.seqs++
	c.positions += int64(len(ids))
	n := len(ids)
	for i := range n {
		if lo, hi := max(0, i-1), min(n, i+2); hi-lo >= 2 {
			c.counts[gram(ids[lo:hi])]++
		}
		if i+1 < n {
			c.counts[gram(ids[i:i+2])]++
		}
	}
}

// AddText counts a corpus text's raw ids (tokenized, not yet prepared)
// whole: in consecutive pieces that bb.Prepare keeps entire (a text longer
// than the model's window is served cut, but a corpus reads all of it),
// each prepared as serving prepares a text.
func (c *Counter) AddText(bb model.Backbone, ids []int32) {
	if len(ids) == 0 {
		return
	}
	c.texts++
	special := len(bb.Prepare([]int32{0})) - 1
	piece := max(1, bb.Info().MaxPositions-special)
	for b := 0; b < len(ids); b += piece {
		c.add(bb.Prepare(ids[b:min(b+piece, len(ids))]))
	}
}

// Texts, Sequences and Positions are what was added: texts (Add or
// AddText calls), the prepared sequences counted (a long text is several)
// and their ids.
func (c *Counter) Texts() int64     { return c.texts }
func (c *Counter) Sequences() int64 { return c.seqs }
func (c *Counter) Positions() int64 { return c.positions }

// Len is the number of distinct n-grams counted.
func (c *Counter) Len() int { return len(c.counts) }

// Count is how often g was counted.
func (c *Counter) Count(g Gram) int64 { return c.counts[g] }

// Ranked lists the counted n-grams in the order a budgeted table takes
// them: coverage first. Every bigram, most frequent first, then every
// trigram, most frequent first; ties in Compare order, so the list is a
// function of the counts alone. A position is served at bigram level or
// better when either bigram around it is held, and a bigram costs two
// thirds of a trigram, so bigrams buy more hit rate per byte than
// trigrams do (docs/BENCHMARKS.md compares the two orders on spam).
func (c *Counter) Ranked() []Gram {
	out := make([]Gram, 0, len(c.counts))
	for g := range c.counts {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b Gram) int {
		if x := cmp.Compare(a.N, b.N); x != 0 {
			return x
		}
		if x := cmp.Compare(c.counts[b], c.counts[a]); x != 0 {
			return x
		}
		return a.Compare(b)
	})
	return out
}

// ByFrequency lists the counted n-grams most frequent first, bigrams and
// trigrams mixed (ties in Compare order): the order that keeps the most
// trigrams, for comparison with Ranked.
func (c *Counter) ByFrequency() []Gram {
	out := c.Ranked()
	slices.SortStableFunc(out, func(a, b Gram) int {
		if x := cmp.Compare(c.counts[b], c.counts[a]); x != 0 {
			return x
		}
		return a.Compare(b)
	})
	return out
}

// Vocabulary lists the unigrams of ids 0..vocab-1: every table holds them,
// so a token is never without a state.
func Vocabulary(vocab int) []Gram {
	out := make([]Gram, vocab)
	for i := range out {
		out[i] = Gram{N: 1, T: [MaxN]int32{int32(i)}}
	}
	return out
}

// Bytes is the stored size of grams' entries at width w.
func Bytes(grams []Gram, w int) int64 {
	var b int64
	for _, g := range grams {
		b += int64(EntryLen(int(g.N), w))
	}
	return b
}

// Extend returns base followed by the n-grams of ranked that base lacks,
// in ranked order, as many as fit in budget bytes of entries at width w on
// top of base (budget 0: all of them). It returns how many were added.
func Extend(base, ranked []Gram, w int, budget int64) ([]Gram, int) {
	have := make(map[Gram]struct{}, len(base))
	for _, g := range base {
		have[g] = struct{}{}
	}
	out := slices.Clone(base)
	var used int64
	added := 0
	for _, g := range ranked {
		if _, ok := have[g]; ok {
			continue
		}
		sz := int64(EntryLen(int(g.N), w))
		if budget > 0 && used+sz > budget {
			break
		}
		used += sz
		have[g] = struct{}{}
		out = append(out, g)
		added++
	}
	return out, added
}

// TableID is a table's content address: a digest of the backbone's
// fingerprint, the cut and the set of n-grams (in any order; duplicates
// are an error).
func TableID(backbone string, cut int, grams []Gram) (string, error) {
	sorted := slices.Clone(grams)
	slices.SortFunc(sorted, Gram.Compare)
	h := sha256.New()
	fmt.Fprintf(h, "smile-plot-table-v1\x00%s\x00%d\x00%d\x00", backbone, cut, len(sorted))
	var k []byte
	for i, g := range sorted {
		if i > 0 && g == sorted[i-1] {
			return "", fmt.Errorf("%w: plot: n-gram %v listed twice", model.ErrBadInput, g)
		}
		k = g.AppendKey(k[:0])
		h.Write(k)
	}
	return "plot-" + hex.EncodeToString(h.Sum(nil))[:32], nil
}

// EncodeGrams packs an n-gram list (keys back to back, then a CRC32-C).
func EncodeGrams(grams []Gram) []byte {
	var b []byte
	for _, g := range grams {
		b = g.AppendKey(b)
	}
	return binary.LittleEndian.AppendUint32(b, crc32Sum(b))
}

// DecodeGrams reads a list written by EncodeGrams (errors wrap ErrCorrupt).
func DecodeGrams(b []byte) ([]Gram, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: n-gram list of %d bytes", ErrCorrupt, len(b))
	}
	body := b[:len(b)-4]
	if crc32Sum(body) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, fmt.Errorf("%w: n-gram list checksum", ErrCorrupt)
	}
	var out []Gram
	for len(body) > 0 {
		n := int(body[0])
		if n < 1 || n > MaxN || len(body) < 1+4*n {
			return nil, fmt.Errorf("%w: n-gram list entry %d", ErrCorrupt, len(out))
		}
		g, err := ParseKey(body[:1+4*n])
		if err != nil {
			return nil, err
		}
		out = append(out, g)
		body = body[1+4*n:]
	}
	return out, nil
}
