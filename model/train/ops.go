package train

import (
	"math"
	"sync"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/gpu/cpu"
)

// Forward and backward operations on row-major float32 matrices with
// explicit sizes. Forward functions overwrite their outputs; backward
// functions add into their gradient outputs (dx += ...) and skip any that
// is nil. The forward numerics are those of the serving kernels in gpu/cpu
// (float64 accumulation, the same polynomial GELU/tanh/exp), so a model
// trained here computes what it will be served with.

// scratch is per-call working memory. Calls take one from scratchFree and
// return it, so steady-state training allocates nothing and two engines on
// different goroutines never share one. A mutex-guarded free list rather
// than a sync.Pool: the pool drops entries at random under the race
// detector and after every GC, which would make the hot loops allocate.
type scratch struct {
	f32 []float32
	f64 []float64
}

const maxFreeScratch = 16 // a few per concurrent engine; the rest are dropped

var (
	scratchMu   sync.Mutex
	scratchFree []*scratch
)

func getScratch() *scratch {
	scratchMu.Lock()
	defer scratchMu.Unlock()
	if n := len(scratchFree); n > 0 {
		s := scratchFree[n-1]
		scratchFree[n-1] = nil
		scratchFree = scratchFree[:n-1]
		return s
	}
	return new(scratch)
}

func putScratch(s *scratch) {
	scratchMu.Lock()
	defer scratchMu.Unlock()
	if len(scratchFree) < maxFreeScratch {
		scratchFree = append(scratchFree, s)
	}
}

// floats32 returns n float32s of s (contents undefined).
func (s *scratch) floats32(n int) []float32 {
	if cap(s.f32) < n {
		s.f32 = make([]float32, n)
	}
	return s.f32[:n]
}

// floats64 returns n zeroed float64s of s.
func (s *scratch) floats64(n int) []float64 {
	if cap(s.f64) < n {
		s.f64 = make([]float64, n)
	}
	v := s.f64[:n]
	clear(v)
	return v
}

// Linear sets y = x W + bias: x is [rows, in], W is [in, out], y is
// [rows, out]; bias ([out]) may be nil. As served: the GEMM, then the bias
// added in float32.
func Linear(b BLAS, y, x []float32, rows, in, out int, w, bias []float32) {
	if rows == 0 || out == 0 {
		return
	}
	b.Sgemm(false, false, rows, out, in, 1, x, in, w, out, 0, y, out)
	if bias != nil {
		bias = bias[:out]
		for r := 0; r < rows; r++ {
			row := y[r*out : (r+1)*out]
			for j := range row {
				row[j] += bias[j]
			}
		}
	}
}

// LinearBackward accumulates Linear's gradients: dx += dy W^T,
// dw += x^T dy, dbias += the column sums of dy (in float64).
func LinearBackward(b BLAS, dx, dw, dbias, dy, x, w []float32, rows, in, out int) {
	if rows == 0 || out == 0 {
		return
	}
	if dx != nil && in > 0 {
		b.Sgemm(false, true, rows, in, out, 1, dy, out, w, out, 1, dx, in)
	}
	if dw != nil && in > 0 {
		b.Sgemm(true, false, in, out, rows, 1, x, in, dy, out, 1, dw, out)
	}
	if dbias != nil {
		s := getScratch()
		acc := s.floats64(out)
		colSum64(acc, dy, rows, out)
		dbias = dbias[:out]
		for j, v := range acc {
			dbias[j] += float32(v)
		}
		putScratch(s)
	}
}

// colSum64 adds the columns of the [rows, cols] matrix x into acc.
func colSum64(acc []float64, x []float32, rows, cols int) {
	acc = acc[:cols]
	for r := 0; r < rows; r++ {
		row := x[r*cols : (r+1)*cols]
		for j, v := range row {
			acc[j] += float64(v)
		}
	}
}

// AddTo sets dst += src (len(src) elements).
func AddTo(dst, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] += v
	}
}

// LayerNorm normalises each row of x ([rows, cols]) into y (which may be x):
// y = (x-mean)/sqrt(var+eps)*gamma + beta, mean and variance accumulated in
// float64 in two passes exactly as gpu/cpu does. It saves mean[r] and
// rstd[r] = 1/sqrt(var+eps) for LayerNormBackward. gamma and beta are [cols];
// nil means ones and zeros.
func LayerNorm(y, mean, rstd, x, gamma, beta []float32, rows, cols int, eps float32) {
	if cols == 0 {
		return
	}
	if gamma != nil {
		gamma = gamma[:cols]
	}
	if beta != nil {
		beta = beta[:cols]
	}
	for r := 0; r < rows; r++ {
		xr := x[r*cols : (r+1)*cols]
		yr := y[r*cols : (r+1)*cols]
		mu, inv := cpu.LayerNormStats(xr, eps)
		switch {
		case gamma != nil && beta != nil:
			for j, v := range xr {
				yr[j] = float32((float64(v)-mu)*inv*float64(gamma[j]) + float64(beta[j]))
			}
		default:
			for j, v := range xr {
				g, bb := 1.0, 0.0
				if gamma != nil {
					g = float64(gamma[j])
				}
				if beta != nil {
					bb = float64(beta[j])
				}
				yr[j] = float32((float64(v)-mu)*inv*g + bb)
			}
		}
		if mean != nil {
			mean[r] = float32(mu)
		}
		rstd[r] = float32(inv)
	}
}

// LayerNormBackward accumulates LayerNorm's gradients from the saved mean
// and rstd: with xh = (x-mean)*rstd and g = dy*gamma,
// dx += rstd*(g - mean(g) - xh*mean(g*xh)), dgamma += sum_rows dy*xh,
// dbeta += sum_rows dy. gamma nil means ones.
func LayerNormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma []float32, rows, cols int) {
	if cols == 0 || rows == 0 || (dx == nil && dgamma == nil && dbeta == nil) {
		return
	}
	s := getScratch()
	defer putScratch(s)
	if gamma == nil {
		gamma = s.floats32(cols)
		for j := range gamma {
			gamma[j] = 1
		}
	}
	gamma = gamma[:cols]
	acc := s.floats64(2 * cols)
	accG, accB := acc[:cols], acc[cols:]
	params := dgamma != nil || dbeta != nil
	n := float64(cols)
	for r := 0; r < rows; r++ {
		xr := x[r*cols : (r+1)*cols]
		dyr := dy[r*cols : (r+1)*cols]
		mu, rs := float64(mean[r]), float64(rstd[r])
		// One pass for the parameter gradients and the two row sums.
		var sg, sgx float64
		if params {
			for j, v := range xr {
				xh := (float64(v) - mu) * rs
				d := float64(dyr[j])
				accG[j] += d * xh
				accB[j] += d
				g := d * float64(gamma[j])
				sg += g
				sgx += g * xh
			}
		} else {
			for j, v := range xr {
				xh := (float64(v) - mu) * rs
				g := float64(dyr[j]) * float64(gamma[j])
				sg += g
				sgx += g * xh
			}
		}
		if dx == nil {
			continue
		}
		mg, mgx := sg/n, sgx/n
		dxr := dx[r*cols : (r+1)*cols]
		for j, v := range xr {
			xh := (float64(v) - mu) * rs
			dxr[j] += float32(rs * (float64(dyr[j])*float64(gamma[j]) - mg - xh*mgx))
		}
	}
	if dgamma != nil {
		dgamma = dgamma[:cols]
		for j, v := range accG {
			dgamma[j] += float32(v)
		}
	}
	if dbeta != nil {
		dbeta = dbeta[:cols]
		for j, v := range accB {
			dbeta[j] += float32(v)
		}
	}
}

// MeanPool sets y row s ([cols]) to the mean of x's rows
// [offsets[s], offsets[s+1]), accumulated in float64 (zeros for an empty
// range), as gpu/cpu does.
func MeanPool(y, x []float32, offsets []int, cols int) {
	if cols == 0 || len(offsets) < 2 {
		return
	}
	s := getScratch()
	for seg := 0; seg+1 < len(offsets); seg++ {
		acc := s.floats64(cols)
		r0, r1 := offsets[seg], offsets[seg+1]
		for r := r0; r < r1; r++ {
			row := x[r*cols : (r+1)*cols]
			for j, v := range row {
				acc[j] += float64(v)
			}
		}
		inv := 1 / float64(max(r1-r0, 1))
		dst := y[seg*cols : (seg+1)*cols]
		for j := range dst {
			dst[j] = float32(acc[j] * inv)
		}
	}
	putScratch(s)
}

// MeanPoolBackward accumulates MeanPool's gradient: every row of segment s
// gets dy row s divided by the segment's length.
func MeanPoolBackward(dx, dy []float32, offsets []int, cols int) {
	if dx == nil || cols == 0 {
		return
	}
	for seg := 0; seg+1 < len(offsets); seg++ {
		r0, r1 := offsets[seg], offsets[seg+1]
		if r1 <= r0 {
			continue
		}
		inv := 1 / float64(r1-r0)
		g := dy[seg*cols : (seg+1)*cols]
		for r := r0; r < r1; r++ {
			row := dx[r*cols : (r+1)*cols]
			for j, v := range g {
				row[j] += float32(float64(v) * inv)
			}
		}
	}
}

// L2Normalize sets each row of y ([rows, cols]; y may be x) to
// x / sqrt(max(sum x^2, eps)) as gpu/cpu and model do, and saves the divisor
// in norm[r] (norm may be nil when no backward pass follows).
func L2Normalize(y, norm, x []float32, rows, cols int, eps float32) {
	for r := 0; r < rows; r++ {
		xr := x[r*cols : (r+1)*cols]
		var s0, s1, s2, s3 float64
		j := 0
		for ; j+4 <= cols; j += 4 {
			s0 += float64(xr[j]) * float64(xr[j])
			s1 += float64(xr[j+1]) * float64(xr[j+1])
			s2 += float64(xr[j+2]) * float64(xr[j+2])
			s3 += float64(xr[j+3]) * float64(xr[j+3])
		}
		for ; j < cols; j++ {
			s0 += float64(xr[j]) * float64(xr[j])
		}
		d := math.Sqrt(max((s0+s1)+(s2+s3), float64(eps)))
		inv := 1 / d
		yr := y[r*cols : (r+1)*cols]
		for j, v := range xr {
			yr[j] = float32(float64(v) * inv)
		}
		if norm != nil {
			norm[r] = float32(d)
		}
	}
}

// L2NormalizeBackward accumulates L2Normalize's gradient from its output y
// and the saved divisors: dx += (dy - y*(y.dy)) / norm where the row was
// normalised, and dx += dy / norm where sum x^2 < eps clamped the divisor
// to sqrt(eps) (a plain scaling). A row whose divisor is within a float32
// rounding of sqrt(eps) sits on the kink and takes the clamped branch.
func L2NormalizeBackward(dx, dy, y, norm []float32, rows, cols int, eps float32) {
	if dx == nil {
		return
	}
	clampAt := float32(math.Sqrt(float64(eps)))
	for r := 0; r < rows; r++ {
		n := float64(norm[r])
		if n == 0 {
			continue // eps = 0 and a zero row: the output is NaN anyway
		}
		inv := 1 / n
		dyr := dy[r*cols : (r+1)*cols]
		dxr := dx[r*cols : (r+1)*cols]
		if norm[r] <= clampAt {
			for j, g := range dyr {
				dxr[j] += float32(float64(g) * inv)
			}
			continue
		}
		yr := y[r*cols : (r+1)*cols]
		var dot float64
		for j, g := range dyr {
			dot += float64(g) * float64(yr[j])
		}
		for j, g := range dyr {
			dxr[j] += float32((float64(g) - float64(yr[j])*dot) * inv)
		}
	}
}

// Activate sets y = act(x) elementwise (y may be x), computing exactly what
// gpu/cpu's kernels compute.
func Activate(act gpu.Activation, y, x []float32) {
	y = y[:len(x)]
	switch act {
	case gpu.ActNone, gpu.ActReLU, gpu.ActGELU, gpu.ActGELUTanh, gpu.ActTanh:
	default:
		panic("train: Activate: unknown activation " + act.String())
	}
	copy(y, x) // a no-op when y is x
	cpu.ActivateHost(y, act)
}

// ActivateBackward accumulates dx += dy * act'(x), x being the input of
// the activation (not its output).
func ActivateBackward(act gpu.Activation, dx, dy, x []float32) {
	if dx == nil {
		return
	}
	dx, dy = dx[:len(x)], dy[:len(x)]
	switch act {
	case gpu.ActNone:
		AddTo(dx, dy)
	case gpu.ActReLU:
		for j, v := range x {
			if v > 0 {
				dx[j] += dy[j]
			}
		}
	case gpu.ActGELU:
		// d/dx x*Phi(x) = Phi(x) + x*phi(x), both from phiTab's Taylor row
		// (phi as the derivative of the polynomial): no exponential.
		for j, v := range x {
			f := float64(v)
			cdf, pdf := cpu.NormCDFPDF(f)
			dx[j] += float32(float64(dy[j]) * (cdf + f*pdf))
		}
	case gpu.ActGELUTanh:
		// y = x*s with s = sigmoid(2u), u = sqrt(2/pi)(x + 0.044715x^3):
		// y' = s + x*2s(1-s)*u'.
		for j, v := range x {
			f := float64(v)
			u := sqrt2p * (f + 0.044715*f*f*f)
			s := 1 / (1 + cpu.Exp64(-2*u))
			du := sqrt2p * (1 + 3*0.044715*f*f)
			dx[j] += float32(float64(dy[j]) * (s + f*2*s*(1-s)*du))
		}
	case gpu.ActTanh:
		for j, v := range x {
			th := cpu.Tanh64(float64(v))
			dx[j] += float32(float64(dy[j]) * (1 - th*th))
		}
	default:
		panic("train: ActivateBackward: unknown activation " + act.String())
	}
}

// sqrt2p is sqrt(2/pi), GELU-tanh's constant.
const sqrt2p = 0.79788456080286535588
