package model

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

func TestEncodeDecodeHalves(t *testing.T) {
	src := []float32{0, 1, -2.5, 1e-3, 65504, -65504, 3.14159, 1e-8}
	b := make([]byte, 2*len(src))
	if i := EncodeHalves(b, src); i != -1 {
		t.Fatalf("EncodeHalves reported value %d", i)
	}
	got := make([]float32, len(src))
	if err := DecodeHalves(got, b); err != nil {
		t.Fatal(err)
	}
	for i, f := range src {
		if d := math.Abs(float64(got[i] - f)); d > math.Abs(float64(f))/1024+6e-8 {
			t.Errorf("value %d: %g round-trips to %g", i, f, got[i])
		}
	}
	if i := EncodeHalves(b[:4], []float32{1, 70000}); i != 1 {
		t.Fatalf("overflow reported at %d, want 1", i)
	}
	if err := DecodeHalves(got[:2], b[:4]); !errors.Is(err, ErrBadInput) {
		t.Fatalf("decoding Inf: %v", err)
	}
	if err := DecodeHalves(got[:2], b[:3]); !errors.Is(err, ErrBadInput) {
		t.Fatalf("short input: %v", err)
	}
}

// TestEncodeHalvesMatchesScalar: the F16C path (where the CPU has it)
// writes exactly what floatToHalf does, for a sweep of float32 bit
// patterns (every sign, exponent and rounding case: subnormal halves,
// ties, overflow to Inf, NaNs with payloads), and reports the same first
// non-finite index.
func TestEncodeHalvesMatchesScalar(t *testing.T) {
	const step = 251 // prime: every low-bit pattern comes up across exponents
	src := make([]float32, 0, 1<<24)
	for b := uint64(0); b < 1<<32; b += step {
		src = append(src, math.Float32frombits(uint32(b)))
	}
	for _, f := range []float32{65504, 65519.99, 65520, -65520, 5.960464e-08, 2.980232e-08, 2.9802326e-08, 6.1035156e-05, 6.1035152e-05} {
		src = append(src, f)
	}
	got := make([]byte, 2*len(src))
	bad := EncodeHalves(got, src)
	wantBad := -1
	for i, f := range src {
		h := floatToHalf(f)
		if g := binary.LittleEndian.Uint16(got[2*i:]); g != h {
			t.Fatalf("value %d (%#08x = %g): got half %#04x, want %#04x", i, math.Float32bits(f), f, g, h)
		}
		if wantBad < 0 && !halfFinite(h) {
			wantBad = i
		}
	}
	if bad != wantBad {
		t.Fatalf("first non-finite at %d, want %d", bad, wantBad)
	}
	// Finite blocks only: the fast path's own Inf detection.
	fin := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 70000, 1}
	out := make([]byte, 2*len(fin))
	if i := EncodeHalves(out, fin); i != 15 {
		t.Fatalf("overflow at 15 reported at %d", i)
	}
	if i := EncodeHalves(out[:16], fin[:8]); i != -1 {
		t.Fatalf("finite values reported non-finite at %d", i)
	}
}

func BenchmarkEncodeHalves(b *testing.B) {
	src := make([]float32, 1<<16)
	for i := range src {
		src[i] = float32(i%1000)/997 - 0.5
	}
	dst := make([]byte, 2*len(src))
	b.SetBytes(int64(4 * len(src)))
	for b.Loop() {
		EncodeHalves(dst, src)
	}
}
