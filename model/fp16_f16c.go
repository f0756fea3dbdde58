//go:build cgo && amd64 && !purego

package model

/*
#cgo CFLAGS: -O2
#include <stdint.h>
#include <string.h>
#include <immintrin.h>

// smile_halves converts n little-endian fp16 values to float32 and returns
// the index of the first non-finite one, or -1. F16C converts 8 at a time
// where the CPU has it (every x86-64 since 2013); the scalar loop is exact
// too (the same bit arithmetic as the Go fallback).
static float smile_half_scalar(uint16_t h) {
	uint32_t em = h & 0x7fff, f;
	if (em >= 0x7c00) {
		f = em << 13 | 0x7f800000;
	} else {
		float x; uint32_t b = em << 13; memcpy(&x, &b, 4);
		x *= 5.192296858534828e33f; // 2^112
		memcpy(&f, &x, 4);
	}
	f |= (uint32_t)(h & 0x8000) << 16;
	float out; memcpy(&out, &f, 4);
	return out;
}

__attribute__((target("avx,f16c")))
static long smile_halves_f16c(float *dst, const uint8_t *src, long n) {
	long i = 0;
	const __m128i expo = _mm_set1_epi16(0x7c00);
	for (; i + 8 <= n; i += 8) {
		__m128i h = _mm_loadu_si128((const __m128i *)(src + 2 * i));
		if (_mm_movemask_epi8(_mm_cmpeq_epi16(_mm_and_si128(h, expo), expo))) {
			break; // a non-finite value: the scalar loop finds its index
		}
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
	}
	for (; i < n; i++) {
		uint16_t h = (uint16_t)src[2 * i] | (uint16_t)src[2 * i + 1] << 8;
		if ((h & 0x7c00) == 0x7c00) return i;
		dst[i] = smile_half_scalar(h);
	}
	return -1;
}

static long smile_halves_plain(float *dst, const uint8_t *src, long n) {
	for (long i = 0; i < n; i++) {
		uint16_t h = (uint16_t)src[2 * i] | (uint16_t)src[2 * i + 1] << 8;
		if ((h & 0x7c00) == 0x7c00) return i;
		dst[i] = smile_half_scalar(h);
	}
	return -1;
}

// smile_encode_f16c converts src to fp16 (round to nearest, ties to even,
// as floatToHalf) 8 at a time and returns how many it converted: it stops
// before a block holding a NaN, whose payload the Go code keeps exactly.
// *inf is set when a converted value became ±Inf (beyond the half range).
__attribute__((target("avx,f16c")))
static long smile_encode_f16c(uint8_t *dst, const float *src, long n, int *inf) {
	long i = 0;
	const __m128i expo = _mm_set1_epi16(0x7c00);
	__m128i seen = _mm_setzero_si128();
	for (; i + 8 <= n; i += 8) {
		__m256 x = _mm256_loadu_ps(src + i);
		if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q))) {
			break;
		}
		__m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT);
		seen = _mm_or_si128(seen, _mm_cmpeq_epi16(_mm_and_si128(h, expo), expo));
		_mm_storeu_si128((__m128i *)(dst + 2 * i), h);
	}
	*inf = _mm_movemask_epi8(seen) != 0;
	return i;
}

static long smile_encode(uint8_t *dst, const float *src, long n, int *inf) {
	return smile_encode_f16c(dst, src, n, inf);
}

static int smile_have_f16c(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
}

static long smile_halves(float *dst, const uint8_t *src, long n, int f16c) {
	return f16c ? smile_halves_f16c(dst, src, n) : smile_halves_plain(dst, src, n);
}
*/
import "C"

import "unsafe"

var haveF16C = C.smile_have_f16c() != 0

// decodeHalves sets dst[i] to the fp16 value in src[2i:2i+2] (little
// endian) and returns the index of the first value that is not finite, or
// -1. len(src) must be 2*len(dst).
func decodeHalves(dst []float32, src []byte) int {
	if len(dst) == 0 {
		return -1
	}
	_ = src[2*len(dst)-1] // a short src panics here, as in the Go fallback
	f := C.int(0)
	if haveF16C {
		f = 1
	}
	return int(C.smile_halves((*C.float)(unsafe.Pointer(&dst[0])), (*C.uint8_t)(unsafe.Pointer(&src[0])), C.long(len(dst)), f))
}

// encodeHalvesFast converts a prefix of src with F16C, where the CPU has
// it, and returns its length (a multiple of 8, stopping before a block
// with a NaN) and whether a value in it became ±Inf.
func encodeHalvesFast(dst []byte, src []float32) (int, bool) {
	if !haveF16C || len(src) < 8 {
		return 0, false
	}
	_ = dst[2*len(src)-1]
	var inf C.int
	n := C.smile_encode((*C.uint8_t)(unsafe.Pointer(&dst[0])), (*C.float)(unsafe.Pointer(&src[0])), C.long(len(src)), &inf)
	return int(n), inf != 0
}
