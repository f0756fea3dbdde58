package plot

import (
	"cmp"
	"encoding/binary"
	"fmt"

	"github.com/smile-vplm/smile/model"
)

// MaxN is the longest n-gram a table holds (trigrams).
const MaxN = 3

// Gram is an n-gram of prepared token ids: T[:N] (N = 1..MaxN); the rest
// of T is zero, so Grams compare and hash by value.
type Gram struct {
	N uint8
	T [MaxN]int32
}

// GramOf makes the n-gram of ids (1..MaxN ids, each ≥ 0).
func GramOf(ids ...int32) (Gram, error) {
	var g Gram
	if len(ids) < 1 || len(ids) > MaxN {
		return g, fmt.Errorf("%w: plot: an n-gram has 1..%d ids, got %d", model.ErrBadInput, MaxN, len(ids))
	}
	for i, id := range ids {
		if id < 0 {
			return g, fmt.Errorf("%w: plot: n-gram id %d is negative", model.ErrBadInput, id)
		}
		g.T[i] = id
	}
	g.N = uint8(len(ids))
	return g, nil
}

// gram makes an n-gram from a slice known to be valid.
func gram(ids []int32) Gram {
	g := Gram{N: uint8(len(ids))}
	copy(g.T[:], ids)
	return g
}

// IDs are the n-gram's ids.
func (g Gram) IDs() []int32 { return g.T[:g.N] }

// String is the ids, as "[a b c]".
func (g Gram) String() string { return fmt.Sprint(g.IDs()) }

// Compare orders n-grams by length, then ids.
func (g Gram) Compare(o Gram) int {
	if c := cmp.Compare(g.N, o.N); c != 0 {
		return c
	}
	for i := range g.N {
		if c := cmp.Compare(g.T[i], o.T[i]); c != 0 {
			return c
		}
	}
	return 0
}

// KeyLen is the length of an n-gram's key.
func (g Gram) KeyLen() int { return 1 + 4*int(g.N) }

// AppendKey appends the n-gram's key: N, then each id as a big-endian
// uint32 (keys of the same length sort like Compare).
func (g Gram) AppendKey(b []byte) []byte {
	b = append(b, g.N)
	for _, id := range g.IDs() {
		b = binary.BigEndian.AppendUint32(b, uint32(id))
	}
	return b
}

// ParseKey reads a key written by AppendKey.
func ParseKey(b []byte) (Gram, error) {
	var g Gram
	if len(b) < 1 || b[0] < 1 || b[0] > MaxN || len(b) != 1+4*int(b[0]) {
		return g, fmt.Errorf("%w: plot: n-gram key of %d bytes", ErrCorrupt, len(b))
	}
	g.N = b[0]
	for i := range g.N {
		v := binary.BigEndian.Uint32(b[1+4*int(i):])
		if v > 1<<31-1 {
			return Gram{}, fmt.Errorf("%w: plot: n-gram key id %d out of range", ErrCorrupt, v)
		}
		g.T[i] = int32(v)
	}
	return g, nil
}
