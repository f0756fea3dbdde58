package cpu

import (
	"math"

	"github.com/smile-vplm/smile/gpu"
)

// Host-side versions of the kernels' arithmetic, for computations on the
// host that must give exactly what these kernels serve (the trainer's
// forward passes, in model/train): the same tables, roundings and
// summation orders, so a model trained there answers the same here.

// ActivateHost applies act to every element of row in place, as AddBias and
// Activate do.
func ActivateHost(row []float32, act gpu.Activation) { activateRow(row, act) }

// SoftmaxHost replaces v by its softmax, as Softmax does for a full row.
func SoftmaxHost(v []float32) { softmaxRow(v, len(v)) }

// LayerNormStats are the mean of x and 1/sqrt(variance+eps), computed as
// LayerNorm computes them (float64, two passes, four summation chains).
func LayerNormStats(x []float32, eps float32) (mean, inv float64) {
	n := len(x)
	mean = sum64(x) / float64(n)
	// Second pass: the variance about the mean, which does not cancel
	// however large the mean is (four chains, as in sum64).
	var s0, s1, s2, s3 float64
	j := 0
	for ; j+4 <= n; j += 4 {
		d0 := float64(x[j]) - mean
		d1 := float64(x[j+1]) - mean
		d2 := float64(x[j+2]) - mean
		d3 := float64(x[j+3]) - mean
		s0 += d0 * d0
		s1 += d1 * d1
		s2 += d2 * d2
		s3 += d3 * d3
	}
	for ; j < n; j++ {
		d := float64(x[j]) - mean
		s0 += d * d
	}
	return mean, 1 / math.Sqrt((s0+s1+s2+s3)/float64(n)+float64(eps))
}

// Sum64 adds x in float64 as the kernels do (four chains).
func Sum64(x []float32) float64 { return sum64(x) }

// Exp64 is the kernels' e^x (relative error below 4e-11; 0 below -104,
// +Inf above 89).
func Exp64(x float64) float64 { return exp64(x) }

// Tanh64 is the kernels' tanh (relative error a few 1e-8).
func Tanh64(x float64) float64 { return tanh64(x) }

// NormCDFPDF is the normal distribution's CDF Φ(x), as exact GELU uses it,
// and its derivative φ(x) from the same Taylor row (so x·Φ(x) and its
// derivative Φ + x·φ agree to the table's accuracy); NaN gives 0, 0.
func NormCDFPDF(x float64) (cdf, pdf float64) {
	if !(x >= phiLo) {
		x = float64(phiKLo) / phiH
	}
	if x > phiHi {
		x = float64(phiKHi) / phiH
	}
	t := x*phiH + magic
	k := int(int64(math.Float64bits(t) - math.Float64bits(magic)))
	d := x - (t-magic)*(1.0/phiH)
	c := &phiTab[k-phiKLo]
	d2 := d * d
	cdf = (c[0] + c[1]*d) + d2*((c[2]+c[3]*d)+d2*(c[4]+c[5]*d))
	pdf = (c[1] + 2*c[2]*d) + d2*((3*c[3]+4*c[4]*d)+d2*(5*c[5]))
	return cdf, pdf
}
