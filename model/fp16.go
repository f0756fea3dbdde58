package model

import "math"

// IEEE 754 binary16 ("half") conversions for adapter blobs. Halves are stored
// as their uint16 bit patterns, little-endian in blobs.

// floatToHalf rounds f to the nearest half, ties to even. Values beyond the
// half range become ±Inf, values below half the smallest subnormal ±0; NaN
// stays NaN (its payload's top bits kept, so a half NaN round-trips).
func floatToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant == 0 {
			return sign | 0x7c00
		}
		m := uint16(mant >> 13)
		if m == 0 {
			m = 0x200
		}
		return sign | 0x7c00 | m
	}
	e := exp - 127 + 15
	if e >= 31 {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			// |f| < 2^-25, half of the smallest subnormal: rounds to zero.
			return sign
		}
		// Subnormal half: m * 2^-24 with m = mant24 * 2^(exp-126).
		mant |= 0x800000
		shift := uint32(14 - e)
		m := mant >> shift
		rem := mant & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || rem == half && m&1 == 1 {
			m++ // may carry into the smallest normal: the right encoding
		}
		return sign | uint16(m)
	}
	h := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++ // a carry into the exponent is correct, up to Inf
	}
	return sign | uint16(h)
}

// halfToFloat converts a half exactly. Shifting the half's exponent and
// mantissa into float32 position gives the value scaled by 2^-112 (for
// subnormals too, as float32 subnormals), and a multiplication by a power
// of two is exact: no table, no branch but the Inf/NaN one.
func halfToFloat(h uint16) float32 {
	em := uint32(h & 0x7fff)
	var f uint32
	if em >= 0x7c00 {
		f = em<<13 | 0x7f800000
	} else {
		f = math.Float32bits(math.Float32frombits(em<<13) * 0x1p112)
	}
	return math.Float32frombits(f | uint32(h&0x8000)<<16)
}

// halfFinite reports whether h is neither Inf nor NaN.
func halfFinite(h uint16) bool { return h&0x7c00 != 0x7c00 }
