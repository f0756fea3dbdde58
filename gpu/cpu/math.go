package cpu

import (
	"math"

	"github.com/smile-vplm/smile/gpu"
)

// Scalar functions for the float32 kernels. They compute in float64 (scalar
// float64 arithmetic costs the same as float32 here) with short polynomials,
// about 5x faster than math.Exp/Erf/Tanh and accurate to a few float32 ulps;
// the conformance suite compares them with the float64 math package.

const (
	magic    = 6755399441055744.0 // 1.5 * 2^52: adding it rounds to an integer
	inv64ln2 = 64 / math.Ln2
	ln2by64  = math.Ln2 / 64
	sqrt2    = math.Sqrt2
	sqrt2p   = 0.79788456080286535588 // sqrt(2/pi)
)

// exp2Tab[j] holds the bits of 2^(j/64).
var exp2Tab = func() (t [64]uint64) {
	for j := range t {
		t[j] = math.Float64bits(math.Exp2(float64(j) / 64))
	}
	return t
}()

// exp64 returns e^x with a relative error below 4e-11 for x in float32's
// range: e^x = 2^(k/64) * e^r with k = round(64x/ln2), 2^(k/64) from a table
// (whole powers of two added to the exponent bits) and e^r, |r| <= ln2/128,
// a cubic. It saturates to 0 below -104 and +Inf above 89; NaN stays NaN.
// softmaxRow has a copy inlined in its loop.
func exp64(x float64) float64 {
	if x < -104 {
		return 0
	}
	if x > 89 {
		return math.Inf(1)
	}
	t := x*inv64ln2 + magic
	k := math.Float64bits(t) - math.Float64bits(magic) // k mod 2^64
	kn := t - magic
	r := x - kn*ln2by64
	p := 1 + r*(1+r*(0.5+r*(1.0/6)))
	// (k>>6)<<52 adds k/64 (mod 2^12, which is exact here) to the exponent.
	return p * math.Float64frombits(exp2Tab[k&63]+(k>>6)<<52)
}

// erfc64 is the complementary error function with a relative error below
// 1.2e-7 everywhere (Numerical Recipes' Chebyshev fit, erfcc), which is what
// GELU needs: 0.5*x*erfc(-x/sqrt2) keeps its relative accuracy even far in
// the negative tail, where erf-based formulas cancel. The row kernels below
// inline the same arithmetic; this form is the reference for tests.
func erfc64(x float64) float64 {
	z := math.Abs(x)
	t := 1 / (1 + 0.5*z)
	r := t * exp64(-z*z-1.26551223+t*(1.00002368+t*(0.37409196+t*(0.09678418+
		t*(-0.18628806+t*(0.27886807+t*(-1.13520398+t*(1.48851587+
			t*(-0.82215223+t*0.17087277)))))))))
	if x < 0 {
		return 2 - r
	}
	return r
}

// tanh64 is tanh with a relative error of a few 1e-8.
func tanh64(x float64) float64 {
	ax := math.Abs(x)
	var r float64
	switch {
	case ax < 0.004:
		r = ax * (1 - ax*ax*(1.0/3))
	case ax > 10:
		r = 1
	default:
		e := exp64(2 * ax)
		r = (e - 1) / (e + 1)
	}
	return math.Copysign(r, x)
}

func geluErf(x float32) float32 {
	v := float64(x)
	return float32(0.5 * v * erfc64(-v/sqrt2))
}

// geluTanh is 0.5x(1+tanh(u)), computed as x*sigmoid(2u), which has no
// cancellation for negative x.
func geluTanh(x float32) float32 {
	v := float64(x)
	u := sqrt2p * (v + 0.044715*v*v*v)
	return float32(v / (1 + exp64(-2*u)))
}

func relu(x float32) float32 {
	b := math.Float32bits(x)
	return math.Float32frombits(b &^ uint32(int32(b)>>31)) // negatives (and -0) to +0
}

func activate(x float32, act gpu.Activation) float32 {
	switch act {
	case gpu.ActReLU:
		return relu(x)
	case gpu.ActGELU:
		return geluErf(x)
	case gpu.ActGELUTanh:
		return geluTanh(x)
	case gpu.ActTanh:
		return float32(tanh64(float64(x)))
	}
	return x
}

// Comparisons are written as ifs: the builtin min and max order NaNs and
// signed zeros, which costs several instructions each.

// activateRow applies act to every element of row, using ws for scratch.
//
// These loops are written out, with exp64's arithmetic inlined, because the
// functions above, called per element, run 3-5x slower (measured): the
// calls and the long dependency chains (a division, a 10-term polynomial,
// the exponential: ~100 cycles per element) keep the CPU from overlapping
// elements. GELU is split into three passes with short chains each (the
// reciprocal; the polynomial; the exponential and the sign), which lets
// the out-of-order core run many elements at once: ~6 ns per element
// instead of ~25. A branch on the sign of x would flush the pipeline on
// random data, so signs are applied with bit operations.
func activateRow(row []float32, act gpu.Activation, ws *workspace) {
	switch act {
	case gpu.ActNone:
	case gpu.ActReLU:
		for j, v := range row {
			row[j] = relu(v)
		}
	case gpu.ActGELU:
		geluRow(row, ws)
	case gpu.ActGELUTanh:
		for j, x := range row {
			v := float64(x)
			y := -2 * sqrt2p * (v + 0.044715*v*v*v) // e^y = e^(-2u)
			if y < -104 {
				y = -104
			}
			if y > 89 {
				y = 89 // v/(1+e^89) is 0 in float32
			}
			t := y*inv64ln2 + magic
			k := math.Float64bits(t) - math.Float64bits(magic)
			kn := t - magic
			r := y - kn*ln2by64
			p := (1 + r) + r*r*(0.5+r*(1.0/6))
			row[j] = float32(v / (1 + p*math.Float64frombits(exp2Tab[k&63]+(k>>6)<<52)))
		}
	case gpu.ActTanh:
		for j, x := range row {
			v := float64(x)
			ax := math.Abs(v)
			y := 2 * ax
			if y > 20 {
				y = 20 // tanh(10) is 1 in float32
			}
			t := y*inv64ln2 + magic
			k := math.Float64bits(t) - math.Float64bits(magic)
			kn := t - magic
			r := y - kn*ln2by64
			e := ((1 + r) + r*r*(0.5+r*(1.0/6))) * math.Float64frombits(exp2Tab[k&63]+(k>>6)<<52)
			th := (e - 1) / (e + 1)
			if ax < 0.004 { // (e-1) cancels; rare in activations, so predictable
				th = ax * (1 - ax*ax*(1.0/3))
			}
			row[j] = float32(math.Copysign(th, v))
		}
	}
}

// geluRow is 0.5*x*erfc(-x/sqrt2) in three passes (see activateRow).
func geluRow(row []float32, ws *workspace) {
	n := len(row)
	tmp := ws.accum(2 * n)
	ts, ys := tmp[:n], tmp[n:2*n]
	for j, x := range row {
		ts[j] = 1 / (1 + 0.5*(1/sqrt2)*math.Abs(float64(x)))
	}
	for j, x := range row {
		z := math.Abs(float64(x)) * (1 / sqrt2)
		t := ts[j]
		t2 := t * t
		t4 := t2 * t2
		// The erfcc polynomial by Estrin's scheme: a shorter chain than Horner's.
		p01 := -1.26551223 + 1.00002368*t
		p23 := 0.37409196 + 0.09678418*t
		p45 := -0.18628806 + 0.27886807*t
		p67 := -1.13520398 + 1.48851587*t
		p89 := -0.82215223 + 0.17087277*t
		y := (-z*z + p01 + p23*t2) + t4*((p45+p67*t2)+p89*t4)
		if y < -104 {
			y = -104
		}
		ys[j] = y
	}
	for j, x := range row {
		v := float64(x)
		y := ys[j]
		t := y*inv64ln2 + magic
		k := math.Float64bits(t) - math.Float64bits(magic)
		kn := t - magic
		r := y - kn*ln2by64
		p := (1 + r) + r*r*(0.5+r*(1.0/6))
		e := ts[j] * p * math.Float64frombits(exp2Tab[k&63]+(k>>6)<<52) // erfc(|x|/sqrt2)
		// erfc(-x/sqrt2) is e for x < 0 and 2-e for x >= 0.
		pos := -(math.Float64bits(v)>>63 ^ 1) // all ones when x >= 0
		ec := math.Float64frombits(math.Float64bits(e)&^pos | math.Float64bits(2-e)&pos)
		row[j] = float32(0.5 * v * ec)
	}
}

// actCost is a rough cost per element in units of an add, used to decide
// when a kernel is worth splitting over threads.
func actCost(act gpu.Activation) int {
	switch act {
	case gpu.ActGELU, gpu.ActGELUTanh, gpu.ActTanh:
		return 16
	}
	return 1
}
