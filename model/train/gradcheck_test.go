package train

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/smile-vplm/smile/gpu/cpu"
)

// Gradient checking by central differences, shared by every op's test and
// by whole-layer checks.
//
// The method: fix random inputs and a random weighting r of the op's output,
// take the scalar L = sum(r ⊙ f(x)) (computed in float64 from the float32
// outputs), run the backward pass once with dy = r to get the analytic
// gradient, then for each checked coordinate x_i compare it with
// (L(x_i+h) - L(x_i-h)) / (x_i+h - x_i-h), the perturbed values rounded to
// float32 and the denominator taken from them, so only L's own rounding
// (about 1e-7 relative per float32 output) and the O(h^2) truncation
// remain. With h = 1e-2, inputs and r of order 1 and outputs of a few
// hundred elements, the numeric derivative is good to about 1e-4 (the op
// tests see worst scaled errors of 1e-5 and below); they use tol = 1e-3.

// gradStep is checkGrad's perturbation.
const gradStep = 1e-2

// checkGrad compares analytic (the gradient of eval with respect to param,
// same length as param) with central differences of eval, perturbing
// param[i] in place by ±gradStep and restoring it. eval must recompute the
// scalar loss from param's current contents (and from nothing it
// mutates between calls). n bounds the coordinates checked: n <= 0 or
// n >= len(param) checks all, else n spread evenly over param. A coordinate
// fails when |numeric - analytic| > tol * (1 + max(|numeric|, |analytic|))
// (tol is both the absolute and the relative tolerance); the first few
// failures are reported under name, and the worst error is logged.
func checkGrad(t testing.TB, name string, n int, eval func() float64, param, analytic []float32, tol float64) {
	t.Helper()
	checkGradStep(t, name, n, eval, param, analytic, tol, gradStep)
}

// checkGradStep is checkGrad with the perturbation h given (smaller near a
// kink the default step would cross, larger for a noisy loss).
func checkGradStep(t testing.TB, name string, n int, eval func() float64, param, analytic []float32, tol, h float64) {
	t.Helper()
	if len(param) != len(analytic) {
		t.Fatalf("%s: %d params, %d gradients", name, len(param), len(analytic))
	}
	if len(param) == 0 {
		return
	}
	idx := make([]int, 0, len(param))
	if n <= 0 || n >= len(param) {
		for i := range param {
			idx = append(idx, i)
		}
	} else {
		for k := 0; k < n; k++ {
			idx = append(idx, k*len(param)/n)
		}
	}
	failures := 0
	worst, worstAt := 0.0, -1
	for _, i := range idx {
		x := param[i]
		plus := float32(float64(x) + h)
		minus := float32(float64(x) - h)
		param[i] = plus
		lp := eval()
		param[i] = minus
		lm := eval()
		param[i] = x
		num := (lp - lm) / (float64(plus) - float64(minus))
		ana := float64(analytic[i])
		diff := math.Abs(num - ana)
		scale := 1 + math.Max(math.Abs(num), math.Abs(ana))
		if e := diff / scale; e > worst || math.IsNaN(e) {
			worst, worstAt = e, i
		}
		if !(diff <= tol*scale) {
			failures++
			if failures <= 5 {
				t.Errorf("%s[%d]: analytic %.7g, numeric %.7g (diff %.3g, tol %.3g)", name, i, ana, num, diff, tol*scale)
			}
		}
	}
	if failures > 5 {
		t.Errorf("%s: %d of %d coordinates failed", name, failures, len(idx))
	}
	t.Logf("%s: %d coordinates, worst scaled error %.3g at %d", name, len(idx), worst, worstAt)
}

// weighted is sum(r ⊙ y) in float64: the scalar loss of a gradient check.
func weighted(r, y []float32) float64 {
	var s float64
	for i, v := range y {
		s += float64(r[i]) * float64(v)
	}
	return s
}

// randSlice returns n values uniform in [-scale, scale).
func randSlice(rng *rand.Rand, n int, scale float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = scale * (2*rng.Float32() - 1)
	}
	return x
}

// filled returns n copies of v (gradient buffers start non-zero so the
// checks also see that backward passes accumulate).
func filled(n int, v float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = v
	}
	return x
}

// minus returns x - v elementwise (the accumulated part of a gradient
// buffer that started at v).
func minus(x []float32, v float32) []float32 {
	y := make([]float32, len(x))
	for i, e := range x {
		y[i] = e - v
	}
	return y
}

// gradInit is what gradient buffers hold before a backward pass in tests.
const gradInit = 0.25

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }

// testDevice is a single-threaded CPU device (the tests' BLAS), closed at
// the end of the test.
func testDevice(t testing.TB) *cpu.Device {
	t.Helper()
	d, err := cpu.New(cpu.SingleThreadConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
