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

// GELU's normal CDF, Φ(x) = ½·erfc(-x/√2), comes from phiTab: row k holds
// the Taylor coefficients of Φ to degree 5 around x_k = k/phiH, so
// Φ(x) = Σ c_n·d^n with d = x - x_k, |d| <= 1/64, for the nearest x_k.
// Φ's derivatives are φ's, φ^(m)(x) = (-1)^m·He_m(x)·φ(x) (Hermite
// polynomials), and the remainder relative to Φ is about (|x|·d)^6/720.
// GELU = x·Φ(x) rounded to float32 is within 1.2e-7 relative of
// 0.5·x·erfc(-x/√2) wherever it is a normal float32 (TestGELUAccuracy).
// It needs no division and no exponential: one table row (48 bytes; 32 KB
// in all, the rows of |x| < 4 a quarter of it), a polynomial and the
// product, ~2.9 ns per element against ~6.7 for the erfc approximation it
// replaced (a reciprocal, a 10-term polynomial, an exponential), and it
// keeps the relative accuracy of erfc in the negative tail (no 1+erf
// cancellation).
const (
	phiH   = 32                  // grid points per unit of x
	phiLo  = -15.0               // below, Φ = 0: x·Φ(x) is 0 in float32 from about -14.5
	phiHi  = 6.0                 // above, Φ = 1: 1-Φ(6) = 1e-9, under half a float32 ulp
	phiKLo = int(phiLo*phiH) - 1 // row of zeros, for x < phiLo (and NaN)
	phiKHi = int(phiHi*phiH) + 1 // row Φ = 1 exactly, for x > phiHi
	phiDeg = 5
)

var phiTab = func() (t [phiKHi - phiKLo + 1][phiDeg + 1]float64) {
	t[phiKHi-phiKLo][0] = 1
	for k := phiKLo + 1; k < phiKHi; k++ {
		x := float64(k) / phiH
		c := &t[k-phiKLo]
		c[0] = 0.5 * math.Erfc(-x/sqrt2)
		phi := math.Exp(-x*x/2) / math.Sqrt(2*math.Pi)
		he := [phiDeg]float64{1, x} // He_{m+1} = x·He_m - m·He_{m-1}
		for m := 1; m+1 < phiDeg; m++ {
			he[m+1] = x*he[m] - float64(m)*he[m-1]
		}
		f := phi // (-1)^(n-1)·φ(x)/n!
		for n := 1; n <= phiDeg; n++ {
			f /= float64(n)
			c[n] = f * he[n-1]
			f = -f
		}
	}
	return t
}()

// normCDF is Φ(x) from phiTab (see above); NaN gives 0.
func normCDF(x float64) float64 {
	c, _ := NormCDFPDF(x)
	return c
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

// geluErf is x·Φ(x), exact GELU to within 1.1e-7 relative, 0 from -15
// down; +Inf stays +Inf, -Inf and NaN give NaN (as 0.5·x·erfc(-x/√2) does).
func geluErf(x float32) float32 {
	v := float64(x)
	return float32(v * normCDF(v))
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

// activateRow applies act to every element of row.
//
// These loops are written out, with exp64's arithmetic inlined, because the
// functions above, called per element, run 3-5x slower (measured): the
// calls and the long dependency chains (a division, a polynomial, the
// exponential) keep the CPU from overlapping elements. A branch on the sign
// of x would flush the pipeline on random data, so signs are applied with
// bit operations. GELU (normCDF, written out: too big to inline) has
// neither a division nor an exponential.
func activateRow(row []float32, act gpu.Activation) {
	switch act {
	case gpu.ActNone:
	case gpu.ActReLU:
		for j, v := range row {
			row[j] = relu(v)
		}
	case gpu.ActGELU:
		for j, x := range row {
			v := float64(x) // x·normCDF(x), inlined
			c := v
			if !(c >= phiLo) {
				c = float64(phiKLo) / phiH
			}
			if c > phiHi {
				c = float64(phiKHi) / phiH
			}
			t := c*phiH + magic
			k := int(int64(math.Float64bits(t) - math.Float64bits(magic)))
			d := c - (t-magic)*(1.0/phiH)
			p := &phiTab[k-phiKLo]
			d2 := d * d
			row[j] = float32(v * ((p[0] + p[1]*d) + d2*((p[2]+p[3]*d)+d2*(p[4]+p[5]*d))))
		}
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

// actCost is a rough cost per element in units of an add, used to decide
// when a kernel is worth splitting over threads.
func actCost(act gpu.Activation) int {
	switch act {
	case gpu.ActGELU, gpu.ActGELUTanh, gpu.ActTanh:
		return 16
	}
	return 1
}
