package cpu

import (
	"math"
	"testing"

	"github.com/smile-vplm/smile/gpu"
)

// TestGELUAccuracy compares GELU, row kernel and scalar form, with
// 0.5·x·erfc(-x/√2) in float64 on every 1009th float32 from -16 to 8 (and
// both zeros): the relative error must stay under 2e-7 (the table's 1.1e-7
// plus the float32 rounding), far inside the conformance suite's 1e-6.
func TestGELUAccuracy(t *testing.T) {
	var xs []float32
	for b := uint32(0); b <= math.Float32bits(16); b += 1009 {
		x := math.Float32frombits(b)
		if x <= 8 {
			xs = append(xs, x)
		}
		xs = append(xs, -x)
	}
	got := append([]float32(nil), xs...)
	for i := 0; i < len(got); i += 3072 {
		activateRow(got[i:min(i+3072, len(got))], gpu.ActGELU)
	}
	worst, at := 0.0, float32(0)
	for i, x := range xs {
		if s := geluErf(x); math.Float32bits(s) != math.Float32bits(got[i]) {
			t.Fatalf("geluErf(%v) = %v, row kernel %v", x, s, got[i])
		}
		v := float64(x)
		want := 0.5 * v * math.Erfc(-v/math.Sqrt2)
		err := math.Abs(float64(got[i]) - want)
		if want == 0 || math.Abs(want) < 0x1p-126 { // no relative accuracy in denormals
			if err > 0x1p-149 {
				t.Errorf("gelu(%v) = %v, want %v", x, got[i], want)
			}
			continue
		}
		if r := err / math.Abs(want); r > worst {
			worst, at = r, x
		}
	}
	if worst > 2e-7 {
		t.Errorf("worst relative error %.3g at x = %v", worst, at)
	}
	t.Logf("%d points, worst relative error %.3g at x = %v", len(xs), worst, at)

	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	for _, tc := range []struct{ x, want float32 }{
		{0, 0}, {6.5, 6.5}, {1e30, 1e30}, {inf, inf}, {-15.5, 0}, {-1e30, 0}, {-inf, nan}, {nan, nan},
	} {
		row := []float32{tc.x}
		activateRow(row, gpu.ActGELU)
		if g := row[0]; g != tc.want && !(g != g && tc.want != tc.want) {
			t.Errorf("gelu(%v) = %v, want %v", tc.x, g, tc.want)
		}
	}
}
