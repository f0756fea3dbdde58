package cpu

import (
	"fmt"

	"github.com/smile-vplm/smile/gpu"
)

// gemmArgs is one row-major GEMM on host slices:
// C[m,n] = alpha*op(A)*op(B) + beta*C, each slice starting at its (0, 0).
type gemmArgs struct {
	tA, tB      bool
	m, n, k     int
	alpha, beta float32
	a           []float32
	lda         int
	b           []float32
	ldb         int
	c           []float32
	ldc         int
}

// mnk is the GEMM's size in multiply-adds.
func (g *gemmArgs) mnk() int { return g.m * g.n * g.k }

const (
	// parGemmMin: below this many multiply-adds (about 20 µs of one core
	// in pure Go) a GEMM runs on one thread; waking a helper costs a few µs.
	parGemmMin = 1 << 18
	// blasSerialMNK is OpenBLAS's own limit (SMP_THRESHOLD_MIN *
	// GEMM_MULTITHREAD_THRESHOLD = 65536*4) below which it computes a GEMM
	// on the calling thread alone; such calls can run side by side on our
	// helpers without touching OpenBLAS's thread count.
	blasSerialMNK = 65536 * 4
	// bigItemMNK: a batch item at least this big is run on its own, using
	// every thread; smaller items are spread over the threads one item each.
	bigItemMNK = 1 << 23
)

// Gemm computes C = alpha*op(A)*op(B) + beta*C. With beta = 0, C is not read.
func (d *Device) Gemm(tA, tB bool, alpha float32, a, b gpu.Mat, beta float32, c gpu.Mat) error {
	g, err := d.gemmCheck(tA, tB, alpha, a, b, beta, c)
	if err != nil {
		return fmt.Errorf("cpu: Gemm: %w", err)
	}
	d.gemm(&g)
	return nil
}

func (d *Device) gemmCheck(tA, tB bool, alpha float32, a, b gpu.Mat, beta float32, c gpu.Mat) (gemmArgs, error) {
	g, err := d.gemmCheckViews(tA, tB, alpha, a, b, beta, c)
	if err != nil {
		return g, err
	}
	return g, gpu.CheckDisjoint("C", c, false, a, b)
}

// gemm runs one GEMM with every thread.
func (d *Device) gemm(g *gemmArgs) {
	switch {
	case g.m == 0 || g.n == 0:
	case g.k == 0 || g.alpha == 0:
		scaleC(g, 0, g.m, 0, g.n)
	case d.blas && g.mnk() > blasSerialMNK:
		d.blasThreaded(g)
	case d.blas:
		blasSgemm(g) // OpenBLAS runs it on this thread whatever its count
	default:
		d.goGemm(g)
	}
}

// blasThreaded runs a GEMM that OpenBLAS threads, holding its thread count
// at d.threads for the call.
func (d *Device) blasThreaded(g *gemmArgs) {
	blasThreads.acquire(d.threads)
	defer blasThreads.release()
	blasSgemm(g)
}

// gemmSerial runs one GEMM on the calling thread (participant w).
func (d *Device) gemmSerial(w int, g *gemmArgs) {
	switch {
	case g.m == 0 || g.n == 0:
	case g.k == 0 || g.alpha == 0:
		scaleC(g, 0, g.m, 0, g.n)
	case d.blas:
		blasSgemm(g) // callers keep it under blasSerialMNK or hold blasThreads at 1
	default:
		goGemmBlock(&d.ws[w], g, 0, g.m, 0, g.n)
	}
}

// scaleC sets C[i0:i1, j0:j1] *= beta, writing zeros for beta = 0 (so NaNs
// in an output that is not meant to be read do not survive).
func scaleC(g *gemmArgs, i0, i1, j0, j1 int) {
	if g.beta == 1 {
		return
	}
	for i := i0; i < i1; i++ {
		row := g.c[i*g.ldc+j0 : i*g.ldc+j1]
		if g.beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= g.beta
		}
	}
}

// batchTask runs Device.items, one item per index, each on one thread.
type batchTask struct{ d *Device }

func (t *batchTask) run(w, lo, hi int) {
	for i := lo; i < hi; i++ {
		t.d.gemmSerial(w, &t.d.items[i])
	}
}

// runItems runs the independent GEMMs in d.items (their outputs are
// disjoint). Big items run one after the other, each on every thread; many
// small ones run side by side, one per thread, which for OpenBLAS means
// single-threaded calls (the count held at 1 unless every item is under
// blasSerialMNK): OpenBLAS's own threads are never started from two
// goroutines at once. An item bigger than a fair share of the whole (one
// popular adapter's rows among many small segments) is taken out and run on
// every thread first, so it cannot leave the other threads idle.
func (d *Device) runItems() {
	items := d.items
	if len(items) == 0 {
		return
	}
	total := 0
	for i := range items {
		total += items[i].mnk()
	}
	if d.threads == 1 || len(items) == 1 || total < parGemmMin ||
		total/len(items) >= bigItemMNK || len(items) < d.threads {
		for i := range items {
			if total < parGemmMin {
				d.gemmSerial(0, &items[i])
			} else {
				d.gemm(&items[i])
			}
		}
		return
	}
	fair := total / d.threads
	small, biggest := 0, 0
	for i := range items {
		if w := items[i].mnk(); w <= fair {
			items[i], items[small] = items[small], items[i]
			small++
			biggest = max(biggest, w)
		}
	}
	for i := small; i < len(items); i++ {
		d.gemm(&items[i])
	}
	if d.blas && biggest > blasSerialMNK {
		blasThreads.acquire(1)
		defer blasThreads.release()
	}
	d.batchT.d = d
	d.pool.parallel(&d.batchT, small, 1, d.threads)
}

// clearItems drops the operand references of the last batch, so that freed
// buffers are not kept alive by the device.
func (d *Device) clearItems() {
	clear(d.items)
	d.items = d.items[:0]
}

// GemmStridedBatched runs batch GEMMs whose operands lie stride elements apart.
func (d *Device) GemmStridedBatched(tA, tB bool, alpha float32, a gpu.Mat, strideA int, b gpu.Mat, strideB int,
	beta float32, c gpu.Mat, strideC int, batch int) error {
	if err := d.batchedCheck(tA, tB, a, strideA, b, strideB, c, strideC, batch); err != nil {
		return fmt.Errorf("cpu: GemmStridedBatched: %w", err)
	}
	d.items = d.items[:0]
	for i := 0; i < batch; i++ {
		ai, bi, ci := a, b, c
		ai.Off += i * strideA
		bi.Off += i * strideB
		ci.Off += i * strideC
		g, err := d.gemmCheckViews(tA, tB, alpha, ai, bi, beta, ci)
		if err != nil { // unreachable after batchedCheck
			return fmt.Errorf("cpu: GemmStridedBatched: matrix %d: %w", i, err)
		}
		d.items = append(d.items, g)
	}
	d.runItems()
	d.clearItems()
	return nil
}

func (d *Device) batchedCheck(tA, tB bool, a gpu.Mat, strideA int, b gpu.Mat, strideB int, c gpu.Mat, strideC int, batch int) error {
	if batch < 0 {
		return fmt.Errorf("%w: batch = %d", gpu.ErrShape, batch)
	}
	if _, _, _, err := gpu.GemmDims(tA, tB, a, b, c); err != nil {
		return err
	}
	for _, op := range [...]struct {
		name   string
		m      gpu.Mat
		stride int
		out    bool
	}{{"A", a, strideA, false}, {"B", b, strideB, false}, {"C", c, strideC, true}} {
		if _, err := d.view(op.name, op.m); err != nil {
			return err
		}
		if err := gpu.CheckBatch(op.name, op.m, op.stride, batch, op.out); err != nil {
			return err
		}
	}
	if batch == 0 {
		return nil
	}
	return gpu.CheckDisjoint("C", gpu.BatchSpan(c, strideC, batch), false,
		gpu.BatchSpan(a, strideA, batch), gpu.BatchSpan(b, strideB, batch))
}

// gemmCheckViews checks the operands of one GEMM and builds its arguments.
func (d *Device) gemmCheckViews(tA, tB bool, alpha float32, a, b gpu.Mat, beta float32, c gpu.Mat) (gemmArgs, error) {
	var g gemmArgs
	m, n, k, err := gpu.GemmDims(tA, tB, a, b, c)
	if err != nil {
		return g, err
	}
	as, err := d.view("A", a)
	if err != nil {
		return g, err
	}
	bs, err := d.view("B", b)
	if err != nil {
		return g, err
	}
	cs, err := d.view("C", c)
	if err != nil {
		return g, err
	}
	return gemmArgs{tA: tA, tB: tB, m: m, n: n, k: k, alpha: alpha, beta: beta,
		a: as, lda: a.Stride, b: bs, ldb: b.Stride, c: cs, ldc: c.Stride}, nil
}

// GemmSegmented computes y[seg] = alpha*x[seg]*op(W_seg) + beta*y[seg] for
// consecutive row groups; a segment with a zero W contributes nothing:
// y[seg] = beta*y[seg] (zeros for beta = 0). Nothing is written unless
// every segment checks out.
func (d *Device) GemmSegmented(tB bool, alpha float32, x gpu.Mat, segs []gpu.Segment, beta float32, y gpu.Mat) error {
	if err := d.segmentedCheck(tB, x, segs, y); err != nil {
		return fmt.Errorf("cpu: GemmSegmented: %w", err)
	}
	d.items = d.items[:0]
	r := 0
	for _, s := range segs {
		switch {
		case s.Rows == 0 || s.W.IsZero() && beta == 1:
		case s.W.IsZero():
			// k = 0: gemm and gemmSerial only scale C by beta.
			ys, _ := d.view("y", y.Rowsl(r, r+s.Rows))
			d.items = append(d.items, gemmArgs{m: s.Rows, n: y.Cols, alpha: alpha, beta: beta, c: ys, ldc: y.Stride})
		default:
			g, err := d.gemmCheckViews(false, tB, alpha, x.Rowsl(r, r+s.Rows), s.W, beta, y.Rowsl(r, r+s.Rows))
			if err != nil { // unreachable after segmentedCheck
				return fmt.Errorf("cpu: GemmSegmented: %w", err)
			}
			d.items = append(d.items, g)
		}
		r += s.Rows
	}
	d.runItems()
	d.clearItems()
	return nil
}

func (d *Device) segmentedCheck(tB bool, x gpu.Mat, segs []gpu.Segment, y gpu.Mat) error {
	if _, err := d.view("x", x); err != nil {
		return err
	}
	if _, err := d.view("y", y); err != nil {
		return err
	}
	if x.Rows != y.Rows {
		return fmt.Errorf("%w: x has %d rows, y %d", gpu.ErrShape, x.Rows, y.Rows)
	}
	if err := gpu.CheckDisjoint("y", y, false, x); err != nil {
		return err
	}
	rows := 0
	for i, s := range segs {
		if s.Rows < 0 {
			return fmt.Errorf("%w: segment %d has %d rows", gpu.ErrShape, i, s.Rows)
		}
		rows += s.Rows
		if rows > x.Rows {
			break
		}
		if s.W.IsZero() {
			continue
		}
		if _, err := d.view("W", s.W); err != nil {
			return fmt.Errorf("segment %d: %w", i, err)
		}
		k, n := s.W.Rows, s.W.Cols
		if tB {
			k, n = n, k
		}
		if k != x.Cols || n != y.Cols {
			return fmt.Errorf("%w: segment %d: op(W) is %dx%d, x is %dx%d, y is %dx%d",
				gpu.ErrShape, i, k, n, x.Rows, x.Cols, y.Rows, y.Cols)
		}
		if err := gpu.CheckDisjoint("y", y, false, s.W); err != nil {
			return err
		}
	}
	if rows != x.Rows {
		return fmt.Errorf("%w: segments cover %d rows, x has %d", gpu.ErrShape, rows, x.Rows)
	}
	return nil
}

// Sgemm computes C = alpha*op(A)*op(B) + beta*C on host slices, row-major
// (op(A) is m x k, op(B) k x n, C m x n; lda, ldb and ldc are the stored
// row strides), with the device's backend and thread budget. It is the
// GEMM of host-side computations that run on the device's goroutine, such
// as the trainer's backward passes (model/train). The caller guarantees
// the slices are long enough and C does not overlap A or B.
func (d *Device) Sgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	g := gemmArgs{tA: tA, tB: tB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc}
	d.gemm(&g)
}
