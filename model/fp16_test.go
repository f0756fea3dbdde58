package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestHalfRoundTrip: every one of the 65,536 halves converts to float32 and
// back to the same bits (NaN payloads included), and converts exactly:
// compared with the value computed from the half's fields in float64.
func TestHalfRoundTrip(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := halfToFloat(h)
		if got := floatToHalf(f); got != h {
			t.Fatalf("half %#04x -> %g -> %#04x", h, f, got)
		}
		e, m := int(h>>10&0x1f), float64(h&0x3ff)
		var want float64
		switch e {
		case 0x1f:
			if m != 0 {
				if !math.IsNaN(float64(f)) {
					t.Fatalf("half %#04x (NaN) -> %g", h, f)
				}
				continue
			}
			want = math.Inf(1)
		case 0:
			want = m * 0x1p-24
		default:
			want = (1 + m/1024) * math.Ldexp(1, e-15)
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if float64(f) != want || math.Signbit(float64(f)) != (h&0x8000 != 0) {
			t.Fatalf("half %#04x -> %g, want %g", h, f, want)
		}
	}
}

// TestFloatToHalfRounding: float32 -> half is round-to-nearest, ties to
// even, checked against the neighbouring halves for random and boundary
// values.
func TestFloatToHalfRounding(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	vals := []float32{0, 65504, 65519.99, 65520, 1e6, 0x1p-24, 0x1p-25, 0x1.8p-25, 0x1p-26, 0x1p-14,
		0x1.ffcp-15, 1 + 0x1p-11, 1 + 0x3p-11, 2049, 2051, 0.1, 1 / 3.0}
	for range 200000 {
		vals = append(vals, math.Float32frombits(r.Uint32()))
	}
	for range 200000 {
		vals = append(vals, float32(r.NormFloat64()*math.Pow(2, float64(r.IntN(40)-30))))
	}
	for _, f := range vals {
		for _, f := range []float32{f, -f} {
			h := floatToHalf(f)
			if math.IsNaN(float64(f)) {
				if !math.IsNaN(float64(halfToFloat(h))) {
					t.Fatalf("NaN -> %#04x", h)
				}
				continue
			}
			got := float64(halfToFloat(h))
			err := math.Abs(got - float64(f))
			if math.IsInf(got, 0) {
				// Overflow: only values at or past 65520 (halfway to the
				// next binade's first value) may become Inf.
				if math.Abs(float64(f)) < 65520 {
					t.Fatalf("%g -> Inf", f)
				}
				continue
			}
			for _, nb := range []uint16{h + 1, h - 1} {
				if nb&0x7fff >= 0x7c00 || (h&0x7fff == 0 && nb&0x7fff != 1) {
					continue
				}
				alt := float64(halfToFloat(nb))
				altErr := math.Abs(alt - float64(f))
				if altErr < err || altErr == err && h&1 == 1 {
					t.Fatalf("%g -> %#04x (%g), but %#04x (%g) is nearer or the even tie", f, h, got, nb, alt)
				}
			}
		}
	}
}

func BenchmarkHalfToFloat(b *testing.B) {
	src := make([]uint16, 1<<16)
	for i := range src {
		src[i] = uint16(i) & 0x7bff
	}
	dst := make([]float32, len(src))
	for b.Loop() {
		for i, h := range src {
			dst[i] = halfToFloat(h)
		}
	}
	b.ReportMetric(float64(len(src)*b.N)/b.Elapsed().Seconds()/1e6, "Mhalves/s")
}

// TestDecodeHalvesAllValues: the bulk decoder (F16C where compiled in)
// gives exactly halfToFloat for every finite half, in every position of a
// vector (so both its 8-wide and its scalar tails are checked), and finds
// the first non-finite value.
func TestDecodeHalvesAllValues(t *testing.T) {
	var src []byte
	var want []float32
	for h := range 1 << 16 {
		if !halfFinite(uint16(h)) {
			continue
		}
		src = append(src, byte(h), byte(h>>8))
		want = append(want, halfToFloat(uint16(h)))
	}
	for _, off := range []int{0, 1, 3, 7} { // shift the 8-wide blocks
		dst := make([]float32, len(want)-off)
		if i := decodeHalves(dst, src[2*off:]); i != -1 {
			t.Fatalf("offset %d: finite input reported non-finite at %d", off, i)
		}
		for i := range dst {
			if math.Float32bits(dst[i]) != math.Float32bits(want[off+i]) {
				t.Fatalf("offset %d, value %d: %v, want %v", off, i, dst[i], want[off+i])
			}
		}
	}
	for _, bad := range []int{0, 5, 8, 13, 100} {
		s := append([]byte(nil), src[:2*120]...)
		s[2*bad], s[2*bad+1] = 0x00, 0x7c // +Inf
		if i := decodeHalves(make([]float32, 120), s); i != bad {
			t.Fatalf("Inf at %d reported at %d", bad, i)
		}
	}
}
