package plot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/smile-vplm/smile/model"
)

// ErrCorrupt marks a stored entry, key or table list that fails its checks
// (a checksum, a length, a value that is not finite).
var ErrCorrupt = errors.New("plot: corrupt table data")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// EntryLen is the stored size of an n-gram's entry at width w.
func EntryLen(n, w int) int { return 2*n*w + 4 }

// EncodeEntry stores an n-gram's states (g.N rows of width w, row-major):
// fp16 values then a CRC32-C over the n-gram's key and the values. States
// that are not finite as fp16 are an error: a table never holds a value it
// cannot give back.
func EncodeEntry(g Gram, w int, h []float32) ([]byte, error) {
	if len(h) != int(g.N)*w {
		return nil, fmt.Errorf("%w: plot: %d floats for an entry of %d rows of width %d", model.ErrBadInput, len(h), g.N, w)
	}
	b := make([]byte, EntryLen(int(g.N), w))
	if i := model.EncodeHalves(b, h); i >= 0 {
		return nil, fmt.Errorf("%w: plot: n-gram %v: state value %g is not finite as fp16", model.ErrBadInput, g, h[i])
	}
	binary.LittleEndian.PutUint32(b[len(b)-4:], entrySum(g, b[:len(b)-4]))
	return b, nil
}

func crc32Sum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func entrySum(g Gram, halves []byte) uint32 {
	var k [1 + 4*MaxN]byte
	c := crc32.Update(0, castagnoli, g.AppendKey(k[:0]))
	return crc32.Update(c, castagnoli, halves)
}

// CheckEntry verifies a stored entry of g at width w and returns its fp16
// values (a view of b). Errors wrap ErrCorrupt.
func CheckEntry(g Gram, w int, b []byte) ([]byte, error) {
	if len(b) != EntryLen(int(g.N), w) {
		return nil, fmt.Errorf("%w: n-gram %v: entry of %d bytes, want %d", ErrCorrupt, g, len(b), EntryLen(int(g.N), w))
	}
	halves := b[:len(b)-4]
	if got, want := entrySum(g, halves), binary.LittleEndian.Uint32(b[len(b)-4:]); got != want {
		return nil, fmt.Errorf("%w: n-gram %v: checksum %08x, stored %08x", ErrCorrupt, g, got, want)
	}
	return halves, nil
}

// DecodeEntry verifies a stored entry and decodes its states into dst
// (g.N*w floats).
func DecodeEntry(g Gram, w int, b []byte, dst []float32) error {
	halves, err := CheckEntry(g, w, b)
	if err != nil {
		return err
	}
	if len(dst) != int(g.N)*w {
		return fmt.Errorf("%w: plot: decode into %d floats, want %d", model.ErrBadInput, len(dst), int(g.N)*w)
	}
	if err := model.DecodeHalves(dst, halves); err != nil {
		return fmt.Errorf("%w: n-gram %v: %v", ErrCorrupt, g, err)
	}
	return nil
}
