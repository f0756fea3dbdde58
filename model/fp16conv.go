package model

import (
	"encoding/binary"
	"fmt"
)

// Bulk fp16 conversions for other packages' compact stores (the trainer's
// cache of lower-layer representations), with the rounding and checks of
// params blobs.

// MaxHalf is the largest finite fp16 value.
const MaxHalf = 65504

// EncodeHalves writes src as little-endian fp16 into dst (2*len(src)
// bytes), rounding to nearest, ties to even. It returns the index of the
// first value that is not finite as a half (NaN, ±Inf, or beyond ±MaxHalf),
// or -1; dst is fully written either way.
func EncodeHalves(dst []byte, src []float32) int {
	_ = dst[:2*len(src)]
	bad := -1
	n, inf := encodeHalvesFast(dst, src)
	if inf {
		for i := range n {
			if !halfFinite(binary.LittleEndian.Uint16(dst[2*i:])) {
				bad = i
				break
			}
		}
	}
	for i := n; i < len(src); i++ {
		f := src[i]
		h := floatToHalf(f)
		if bad < 0 && !halfFinite(h) {
			bad = i
		}
		binary.LittleEndian.PutUint16(dst[2*i:], h)
	}
	return bad
}

// DecodeHalves reads len(dst) little-endian fp16 values from src (2*len(dst)
// bytes) exactly; a value that is not finite is an error wrapping
// ErrBadInput.
func DecodeHalves(dst []float32, src []byte) error {
	if len(src) != 2*len(dst) {
		return fmt.Errorf("%w: %d bytes of fp16 for %d values", ErrBadInput, len(src), len(dst))
	}
	if i := decodeHalves(dst, src); i >= 0 {
		return fmt.Errorf("%w: fp16 value %d is not finite", ErrBadInput, i)
	}
	return nil
}
