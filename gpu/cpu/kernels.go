package cpu

import (
	"fmt"
	"math"

	"github.com/smile-vplm/smile/gpu"
)

// Row-wise kernels. Each method checks its operands, fills d.ewT and runs it
// over rows: on the calling goroutine when the work is small, else in
// chunks over the pool (see parallelRows).

type ewKind uint8

const (
	ewGather ewKind = iota
	ewAddBias
	ewActivate
	ewAdd
	ewScale
	ewLayerNorm
	ewSoftmax
	ewL2
	ewMeanPool
)

// ewTask holds one row-wise kernel call: x is the output (or the in-place
// operand), a and b are inputs, p0 and p1 are 1 x cols parameters.
type ewTask struct {
	d          *Device
	kind       ewKind
	act        gpu.Activation
	accumulate bool
	alpha, eps float32
	cols       int
	x, a, b    []float32
	xs, as, bs int
	p0, p1     []float32
	ids        []int32
	valid      []int32
	offsets    []int
}

func (t *ewTask) row(x []float32, i, stride int) []float32 {
	return x[i*stride : i*stride+t.cols]
}

func (t *ewTask) run(w, lo, hi int) {
	for i := lo; i < hi; i++ {
		switch t.kind {
		case ewGather:
			src := t.row(t.a, int(t.ids[i]), t.as)
			dst := t.row(t.x, i, t.xs)
			if t.accumulate {
				addInto(dst, dst, src)
			} else {
				copy(dst, src)
			}
		case ewAddBias:
			x := t.row(t.x, i, t.xs)
			addInto(x, x, t.p0)
			activateRow(x, t.act)
		case ewActivate:
			activateRow(t.row(t.x, i, t.xs), t.act)
		case ewAdd:
			addInto(t.row(t.x, i, t.xs), t.row(t.a, i, t.as), t.row(t.b, i, t.bs))
		case ewScale:
			x := t.row(t.x, i, t.xs)
			for j := range x {
				x[j] *= t.alpha
			}
		case ewLayerNorm:
			layerNormRow(t.row(t.x, i, t.xs), t.row(t.a, i, t.as), t.p0, t.p1, t.eps)
		case ewSoftmax:
			n := t.cols
			if t.valid != nil {
				n = int(t.valid[i])
			}
			softmaxRow(t.row(t.x, i, t.xs), n)
		case ewL2:
			l2Row(t.row(t.x, i, t.xs), t.eps)
		case ewMeanPool:
			meanPoolRow(t.row(t.x, i, t.xs), t.a, t.as, t.cols, t.offsets[i], t.offsets[i+1], &t.d.ws[w])
		}
	}
}

// parallelRows runs d.ewT over rows. cost is the work per row in element
// operations; below about 64K of them (tens of µs) a kernel runs on the
// calling goroutine, above it in about four chunks per thread.
func (d *Device) parallelRows(rows, cost int) {
	t := &d.ewT
	t.d = d
	if d.threads == 1 || rows*cost < 1<<16 {
		t.run(0, 0, rows)
	} else {
		d.pool.parallel(t, rows, max(1, rows/(4*d.threads), (1<<14)/max(cost, 1)), d.threads)
	}
	*t = ewTask{} // drop references to the operands
}

func addInto(dst, a, b []float32) {
	a = a[:len(dst)]
	b = b[:len(dst)]
	for j := range dst {
		dst[j] = a[j] + b[j]
	}
}

// Gather sets dst row i to table row ids[i] (accumulate: adds it). Every id
// is checked before anything is written.
func (d *Device) Gather(dst, table gpu.Mat, ids []int32, accumulate bool) error {
	x, err := d.view("dst", dst)
	if err != nil {
		return fmt.Errorf("cpu: Gather: %w", err)
	}
	tab, err := d.view("table", table)
	if err != nil {
		return fmt.Errorf("cpu: Gather: %w", err)
	}
	if dst.Rows != len(ids) || dst.Cols != table.Cols {
		return fmt.Errorf("cpu: Gather: %w: dst is %dx%d for %d ids of a table %dx%d",
			gpu.ErrShape, dst.Rows, dst.Cols, len(ids), table.Rows, table.Cols)
	}
	if err := gpu.CheckIDs(ids, table.Rows); err != nil {
		return fmt.Errorf("cpu: Gather: %w", err)
	}
	if err := gpu.CheckDisjoint("dst", dst, false, table); err != nil {
		return fmt.Errorf("cpu: Gather: %w", err)
	}
	if dst.Cols == 0 {
		return nil
	}
	t := &d.ewT
	t.kind, t.cols, t.accumulate = ewGather, dst.Cols, accumulate
	t.x, t.xs, t.a, t.as, t.ids = x, dst.Stride, tab, table.Stride, ids
	d.parallelRows(len(ids), dst.Cols)
	return nil
}

// AddBias adds the 1 x Cols bias to every row of x, then applies act.
func (d *Device) AddBias(x, bias gpu.Mat, act gpu.Activation) error {
	xs, err := d.view("x", x)
	if err != nil {
		return fmt.Errorf("cpu: AddBias: %w", err)
	}
	bs, err := d.view("bias", bias)
	if err != nil {
		return fmt.Errorf("cpu: AddBias: %w", err)
	}
	if err := gpu.CheckRowVector("bias", bias, x.Cols); err != nil {
		return fmt.Errorf("cpu: AddBias: %w", err)
	}
	if err := gpu.CheckActivation(act); err != nil {
		return fmt.Errorf("cpu: AddBias: %w", err)
	}
	if err := gpu.CheckDisjoint("x", x, false, bias); err != nil {
		return fmt.Errorf("cpu: AddBias: %w", err)
	}
	if x.Cols == 0 {
		return nil
	}
	t := &d.ewT
	t.kind, t.cols, t.act = ewAddBias, x.Cols, act
	t.x, t.xs, t.p0 = xs, x.Stride, bs
	d.parallelRows(x.Rows, x.Cols*(1+actCost(act)))
	return nil
}

// Activate applies act to every element of x in place.
func (d *Device) Activate(x gpu.Mat, act gpu.Activation) error {
	xs, err := d.view("x", x)
	if err != nil {
		return fmt.Errorf("cpu: Activate: %w", err)
	}
	if err := gpu.CheckActivation(act); err != nil {
		return fmt.Errorf("cpu: Activate: %w", err)
	}
	if x.Cols == 0 || act == gpu.ActNone {
		return nil
	}
	t := &d.ewT
	t.kind, t.cols, t.act = ewActivate, x.Cols, act
	t.x, t.xs = xs, x.Stride
	d.parallelRows(x.Rows, x.Cols*actCost(act))
	return nil
}

// Add sets dst = a + b; dst may be a or b (but not partly overlap them).
func (d *Device) Add(dst, a, b gpu.Mat) error {
	x, err := d.view("dst", dst)
	if err != nil {
		return fmt.Errorf("cpu: Add: %w", err)
	}
	as, err := d.view("a", a)
	if err != nil {
		return fmt.Errorf("cpu: Add: %w", err)
	}
	bs, err := d.view("b", b)
	if err != nil {
		return fmt.Errorf("cpu: Add: %w", err)
	}
	if err := gpu.CheckSameShape("dst", dst, "a", a); err != nil {
		return fmt.Errorf("cpu: Add: %w", err)
	}
	if err := gpu.CheckSameShape("dst", dst, "b", b); err != nil {
		return fmt.Errorf("cpu: Add: %w", err)
	}
	if err := gpu.CheckDisjoint("dst", dst, true, a, b); err != nil {
		return fmt.Errorf("cpu: Add: %w", err)
	}
	if dst.Cols == 0 {
		return nil
	}
	t := &d.ewT
	t.kind, t.cols = ewAdd, dst.Cols
	t.x, t.xs, t.a, t.as, t.b, t.bs = x, dst.Stride, as, a.Stride, bs, b.Stride
	d.parallelRows(dst.Rows, dst.Cols)
	return nil
}

// Scale multiplies every element of x by alpha.
func (d *Device) Scale(x gpu.Mat, alpha float32) error {
	xs, err := d.view("x", x)
	if err != nil {
		return fmt.Errorf("cpu: Scale: %w", err)
	}
	if x.Cols == 0 || alpha == 1 {
		return nil
	}
	t := &d.ewT
	t.kind, t.cols, t.alpha = ewScale, x.Cols, alpha
	t.x, t.xs = xs, x.Stride
	d.parallelRows(x.Rows, x.Cols)
	return nil
}

// LayerNorm normalises each row of x into dst (which may be x). Mean and
// variance are computed in two passes in float64.
func (d *Device) LayerNorm(dst, x, gamma, beta gpu.Mat, eps float32) error {
	ds, err := d.view("dst", dst)
	if err != nil {
		return fmt.Errorf("cpu: LayerNorm: %w", err)
	}
	xs, err := d.view("x", x)
	if err != nil {
		return fmt.Errorf("cpu: LayerNorm: %w", err)
	}
	gs, err := d.view("gamma", gamma)
	if err != nil {
		return fmt.Errorf("cpu: LayerNorm: %w", err)
	}
	bs, err := d.view("beta", beta)
	if err != nil {
		return fmt.Errorf("cpu: LayerNorm: %w", err)
	}
	if err := gpu.CheckSameShape("dst", dst, "x", x); err != nil {
		return fmt.Errorf("cpu: LayerNorm: %w", err)
	}
	if err := gpu.CheckRowVector("gamma", gamma, x.Cols); err != nil {
		return fmt.Errorf("cpu: LayerNorm: %w", err)
	}
	if err := gpu.CheckRowVector("beta", beta, x.Cols); err != nil {
		return fmt.Errorf("cpu: LayerNorm: %w", err)
	}
	if !(eps >= 0) {
		return fmt.Errorf("cpu: LayerNorm: %w: eps = %g", gpu.ErrShape, eps)
	}
	if err := gpu.CheckDisjoint("dst", dst, true, x); err != nil {
		return fmt.Errorf("cpu: LayerNorm: %w", err)
	}
	if err := gpu.CheckDisjoint("dst", dst, false, gamma, beta); err != nil {
		return fmt.Errorf("cpu: LayerNorm: %w", err)
	}
	if x.Cols == 0 {
		return nil
	}
	t := &d.ewT
	t.kind, t.cols, t.eps = ewLayerNorm, x.Cols, eps
	t.x, t.xs, t.a, t.as, t.p0, t.p1 = ds, dst.Stride, xs, x.Stride, gs, bs
	d.parallelRows(x.Rows, 4*x.Cols)
	return nil
}

func layerNormRow(dst, x, gamma, beta []float32, eps float32) {
	n := len(dst)
	x, gamma, beta = x[:n], gamma[:n], beta[:n]
	mean, inv := LayerNormStats(x, eps)
	for j, v := range x {
		dst[j] = float32((float64(v)-mean)*inv*float64(gamma[j]) + float64(beta[j]))
	}
}

// sum64 adds x in float64 over four independent chains: one chain is bound
// by the add latency (3-4 cycles an element), four by throughput.
func sum64(x []float32) float64 {
	var s0, s1, s2, s3 float64
	j := 0
	for ; j+4 <= len(x); j += 4 {
		s0 += float64(x[j])
		s1 += float64(x[j+1])
		s2 += float64(x[j+2])
		s3 += float64(x[j+3])
	}
	for ; j < len(x); j++ {
		s0 += float64(x[j])
	}
	return (s0 + s1) + (s2 + s3)
}

// Softmax applies a row-wise softmax in place; with valid, only the first
// valid[i] columns of row i take part and the rest are set to 0.
func (d *Device) Softmax(x gpu.Mat, valid []int32) error {
	xs, err := d.view("x", x)
	if err != nil {
		return fmt.Errorf("cpu: Softmax: %w", err)
	}
	if valid != nil {
		if len(valid) != x.Rows {
			return fmt.Errorf("cpu: Softmax: %w: %d valid counts for %d rows", gpu.ErrShape, len(valid), x.Rows)
		}
		for i, v := range valid {
			if v < 0 || int(v) > x.Cols {
				return fmt.Errorf("cpu: Softmax: %w: valid[%d] = %d, rows have %d columns", gpu.ErrOutOfRange, i, v, x.Cols)
			}
		}
	}
	if x.Cols == 0 {
		return nil
	}
	t := &d.ewT
	t.kind, t.cols, t.valid = ewSoftmax, x.Cols, valid
	t.x, t.xs = xs, x.Stride
	d.parallelRows(x.Rows, 12*x.Cols)
	return nil
}

// softmaxRow normalises the first n elements of r and zeroes the rest.
func softmaxRow(r []float32, n int) {
	if n <= 0 {
		clear(r)
		return
	}
	v := r[:n]
	inv := 1 / expRow(v)
	for j, e := range v {
		v[j] = float32(float64(e) * inv)
	}
	clear(r[n:])
}

// expRow sets v[j] = e^(v[j] - max(v)) and returns their sum (>= 1), for a
// softmax whose normalisation the caller applies. The exponential is exp64
// written out in the loop, two elements at a time (as a call it costs half
// as much again, and softmax is the largest non-GEMM cost of attention);
// the max and the sum run over two chains each.
func expRow(v []float32) float64 {
	n := len(v)
	m0, m1 := v[0], v[0]
	j := 0
	for ; j+2 <= n; j += 2 {
		if v[j] > m0 {
			m0 = v[j]
		}
		if v[j+1] > m1 {
			m1 = v[j+1]
		}
	}
	if j < n && v[j] > m0 {
		m0 = v[j]
	}
	if m1 > m0 {
		m0 = m1
	}
	m := float64(m0)
	var s0, s1 float64
	for j = 0; j+2 <= n; j += 2 {
		x0 := float64(v[j]) - m // <= 0
		x1 := float64(v[j+1]) - m
		if x0 < -104 {
			x0 = -104 // e^-104 is 0 in float32
		}
		if x1 < -104 {
			x1 = -104
		}
		t0 := x0*inv64ln2 + magic
		t1 := x1*inv64ln2 + magic
		k0 := math.Float64bits(t0) - math.Float64bits(magic)
		k1 := math.Float64bits(t1) - math.Float64bits(magic)
		r0 := x0 - (t0-magic)*ln2by64
		r1 := x1 - (t1-magic)*ln2by64
		e0 := ((1 + r0) + r0*r0*(0.5+r0*(1.0/6))) * math.Float64frombits(exp2Tab[k0&63]+(k0>>6)<<52)
		e1 := ((1 + r1) + r1*r1*(0.5+r1*(1.0/6))) * math.Float64frombits(exp2Tab[k1&63]+(k1>>6)<<52)
		v[j], v[j+1] = float32(e0), float32(e1)
		s0 += e0
		s1 += e1
	}
	if j < n {
		e := exp64(float64(v[j]) - m)
		v[j] = float32(e)
		s0 += e
	}
	return s0 + s1
}

// L2Normalize scales each row to unit length: x / sqrt(max(sum x^2, eps)).
func (d *Device) L2Normalize(x gpu.Mat, eps float32) error {
	xs, err := d.view("x", x)
	if err != nil {
		return fmt.Errorf("cpu: L2Normalize: %w", err)
	}
	if !(eps >= 0) {
		return fmt.Errorf("cpu: L2Normalize: %w: eps = %g", gpu.ErrShape, eps)
	}
	if x.Cols == 0 {
		return nil
	}
	t := &d.ewT
	t.kind, t.cols, t.eps = ewL2, x.Cols, eps
	t.x, t.xs = xs, x.Stride
	d.parallelRows(x.Rows, 3*x.Cols)
	return nil
}

func l2Row(x []float32, eps float32) {
	var s0, s1, s2, s3 float64
	j := 0
	for ; j+4 <= len(x); j += 4 {
		s0 += float64(x[j]) * float64(x[j])
		s1 += float64(x[j+1]) * float64(x[j+1])
		s2 += float64(x[j+2]) * float64(x[j+2])
		s3 += float64(x[j+3]) * float64(x[j+3])
	}
	for ; j < len(x); j++ {
		s0 += float64(x[j]) * float64(x[j])
	}
	ss := (s0 + s1) + (s2 + s3)
	inv := 1 / math.Sqrt(max(ss, float64(eps)))
	for j, v := range x {
		x[j] = float32(float64(v) * inv)
	}
}

// MeanPool sets dst row s to the mean of x's rows [offsets[s], offsets[s+1])
// (zeros for an empty range), accumulating in float64.
func (d *Device) MeanPool(dst, x gpu.Mat, offsets []int) error {
	ds, err := d.view("dst", dst)
	if err != nil {
		return fmt.Errorf("cpu: MeanPool: %w", err)
	}
	xs, err := d.view("x", x)
	if err != nil {
		return fmt.Errorf("cpu: MeanPool: %w", err)
	}
	if err := gpu.CheckOffsets(offsets, x.Rows, false); err != nil {
		return fmt.Errorf("cpu: MeanPool: %w", err)
	}
	if dst.Rows != len(offsets)-1 || dst.Cols != x.Cols {
		return fmt.Errorf("cpu: MeanPool: %w: dst is %dx%d for %d segments of x %dx%d",
			gpu.ErrShape, dst.Rows, dst.Cols, len(offsets)-1, x.Rows, x.Cols)
	}
	if err := gpu.CheckDisjoint("dst", dst, false, x); err != nil {
		return fmt.Errorf("cpu: MeanPool: %w", err)
	}
	if dst.Cols == 0 || dst.Rows == 0 {
		return nil
	}
	t := &d.ewT
	t.kind, t.cols, t.offsets = ewMeanPool, x.Cols, offsets
	t.x, t.xs, t.a, t.as = ds, dst.Stride, xs, x.Stride
	per := max(1, (offsets[len(offsets)-1]-offsets[0])/dst.Rows)
	d.parallelRows(dst.Rows, per*x.Cols)
	return nil
}

func meanPoolRow(dst []float32, x []float32, xs, cols, r0, r1 int, ws *workspace) {
	acc := ws.accum(cols)
	clear(acc)
	for r := r0; r < r1; r++ {
		row := x[r*xs : r*xs+cols]
		for j, v := range row {
			acc[j] += float64(v)
		}
	}
	inv := 1 / float64(max(r1-r0, 1))
	for j := range dst {
		dst[j] = float32(acc[j] * inv)
	}
}
