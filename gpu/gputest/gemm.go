package gputest

import (
	"fmt"
	"math"

	"github.com/smile-vplm/smile/gpu"
)

// refGemm computes alpha*op(A)*op(B) + beta*C in float64 and, per element,
// the sum of the magnitudes of its terms (the scale of a rounding error).
func refGemm(tA, tB bool, m, n, k int, alpha float64, a []float64, aCols int, b []float64, bCols int,
	beta float64, c []float64) (want, mag []float64) {
	want = make([]float64, m*n)
	mag = make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, sm float64
			for p := 0; p < k; p++ {
				var av, bv float64
				if tA {
					av = a[p*aCols+i]
				} else {
					av = a[i*aCols+p]
				}
				if tB {
					bv = b[j*bCols+p]
				} else {
					bv = b[p*bCols+j]
				}
				s += av * bv
				sm += math.Abs(av * bv)
			}
			want[i*n+j] = alpha * s
			mag[i*n+j] = math.Abs(alpha) * sm
			if beta != 0 {
				want[i*n+j] += beta * c[i*n+j]
				mag[i*n+j] += math.Abs(beta * c[i*n+j])
			}
		}
	}
	return want, mag
}

// gemmTol allows the worst-case error of float32 accumulation in any order:
// (k+4) units of 2^-23 relative to the sum of the magnitudes.
func gemmTol(k int, mag []float64, n int) tolFunc {
	return func(i, j int, _ float64) float64 {
		return float64(k+4)*0x1p-23*mag[i*n+j] + 1e-30
	}
}

type gemmCase struct {
	tA, tB      bool
	m, n, k     int
	alpha, beta float32
	la, lb, lc  layout
}

func (c gemmCase) String() string {
	t := func(b bool) string {
		if b {
			return "T"
		}
		return "N"
	}
	return fmt.Sprintf("%s%s_%dx%dx%d_a%g_b%g_%v_%v_%v", t(c.tA), t(c.tB), c.m, c.n, c.k, c.alpha, c.beta, c.la, c.lb, c.lc)
}

// stored returns the stored shape of op(X) = rows x cols under transpose t.
func stored(t bool, rows, cols int) (int, int) {
	if t {
		return cols, rows
	}
	return rows, cols
}

func (e *env) runGemm(c gemmCase) {
	e.t.Helper()
	ar, ac := stored(c.tA, c.m, c.k)
	br, bc := stored(c.tB, c.k, c.n)
	a := e.mat(ar, ac, c.la, -1, 1)
	b := e.mat(br, bc, c.lb, -1, 1)
	cm := e.mat(c.m, c.n, c.lc, -1, 1)
	if c.beta == 0 && c.m*c.n > 0 {
		// beta = 0 means C is not read: NaNs in it must not survive.
		nan := make([]float32, c.m*c.n)
		for i := range nan {
			nan[i] = float32(math.NaN())
		}
		e.fill(cm, nan)
	}
	want, mag := refGemm(c.tA, c.tB, c.m, c.n, c.k, float64(c.alpha), a.get(), ac, b.get(), bc, float64(c.beta), cm.get())
	e.noErr("Gemm "+c.String(), e.dev.Gemm(c.tA, c.tB, c.alpha, a.m, b.m, c.beta, cm.m))
	e.check("Gemm "+c.String(), cm, want, gemmTol(c.k, mag, c.n))
	e.unchanged("Gemm A", a)
	e.unchanged("Gemm B", b)
}

func testGemm(e *env) {
	alphaBeta := [][2]float32{{1, 0}, {0.5, 1}, {-1.5, 0.25}, {0, 2}, {2, -1}}
	// Every transpose pair with random odd shapes and layouts.
	for _, tA := range []bool{false, true} {
		for _, tB := range []bool{false, true} {
			for r := 0; r < 6; r++ {
				ab := alphaBeta[e.rng.IntN(len(alphaBeta))]
				e.runGemm(gemmCase{tA: tA, tB: tB, m: e.size(), n: e.size(), k: e.size(),
					alpha: ab[0], beta: ab[1], la: e.layout(), lb: e.layout(), lc: e.layout()})
			}
		}
	}
	// Shapes that cross blocking boundaries (k > 256, m > 128, n not a
	// multiple of small tiles) and are big enough to be split over threads.
	for i, s := range [][3]int{{40, 70, 300}, {200, 33, 17}, {1, 300, 520}, {129, 7, 300}, {3, 1, 1}, {1, 1, 1000}} {
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				if i > 1 && tA != tB {
					continue
				}
				e.runGemm(gemmCase{tA: tA, tB: tB, m: s[0], n: s[1], k: s[2], alpha: 1, beta: 0.5,
					la: e.layout(), lb: e.layout(), lc: e.layout()})
			}
		}
	}
	// Empty dimensions: k = 0 scales C by beta; m or n = 0 does nothing.
	e.runGemm(gemmCase{m: 5, n: 4, k: 0, alpha: 1, beta: 0.5})
	e.runGemm(gemmCase{m: 5, n: 4, k: 0, alpha: 1, beta: 0})
	e.runGemm(gemmCase{m: 0, n: 4, k: 3, alpha: 1, beta: 0.5})
	e.runGemm(gemmCase{m: 4, n: 0, k: 3, alpha: 1, beta: 0.5, tA: true})
}

func testGemmErrors(e *env) {
	a := e.mat(4, 3, dense, -1, 1)
	b := e.mat(3, 5, dense, -1, 1)
	c := e.mat(4, 5, dense, -1, 1)
	e.noErr("Gemm", e.dev.Gemm(false, false, 1, a.m, b.m, 0, c.m))
	c.before = e.whole(c)
	for _, tc := range []struct {
		name    string
		tA, tB  bool
		a, b, c gpu.Mat
	}{
		{"k mismatch", false, true, a.m, b.m, c.m},
		{"m mismatch", true, false, a.m, b.m, c.m},
		{"C rows", false, false, a.m, b.m, c.m.Rowsl(0, 3)},
		{"C cols", false, false, a.m, b.m, c.m.Colsl(0, 4)},
		{"A past its buffer", false, false, gpu.Mat{Buf: a.m.Buf, Off: 1, Rows: 4, Cols: 3, Stride: 3}, b.m, c.m},
		{"stride < cols", false, false, gpu.Mat{Buf: a.m.Buf, Rows: 4, Cols: 3, Stride: 2}, b.m, c.m},
		{"negative rows", false, false, gpu.Mat{Buf: a.m.Buf, Rows: -4, Cols: 3, Stride: 3}, b.m, c.m},
		{"no buffer", false, false, gpu.Mat{Rows: 4, Cols: 3, Stride: 3}, b.m, c.m},
	} {
		e.wantErr("Gemm "+tc.name, e.dev.Gemm(tc.tA, tc.tB, 1, tc.a, tc.b, 0, tc.c), gpu.ErrShape)
	}
	// The output may not alias an input.
	sq := e.mat(4, 4, dense, -1, 1)
	e.wantErr("Gemm C = A", e.dev.Gemm(false, false, 1, sq.m, sq.m.Colsl(0, 3).Rowsl(0, 4), 0, sq.m.Colsl(0, 3)), gpu.ErrShape)
	e.unchanged("Gemm C after errors", c)
}

func testGemmStridedBatched(e *env) {
	// Stacked matrices, a broadcast B (stride 0), and transposes.
	for r := 0; r < 8; r++ {
		tA, tB := r&1 != 0, r&2 != 0
		m, n, k, batch := e.size(), e.size(), e.size(), 1+e.rng.IntN(5)
		if r == 7 {
			m, n, k, batch = 24, 48, 300, 4 // big enough to be split over threads
		}
		ar, ac := stored(tA, m, k)
		br, bc := stored(tB, k, n)
		alpha, beta := float32(0.75), float32(r%3)*0.5
		a := e.mat(ar*batch, ac, e.layout(), -1, 1)
		bStride := 0
		bRows := br
		if r%4 != 3 {
			bRows, bStride = br*batch, 0
		}
		b := e.mat(bRows, bc, e.layout(), -1, 1)
		if r%4 != 3 {
			bStride = br * b.m.Stride
		}
		c := e.mat(m*batch, n, e.layout(), -1, 1)
		av, bv, cv := a.get(), b.get(), c.get()
		want := make([]float64, 0, m*n*batch)
		mags := make([]float64, 0, m*n*batch)
		for i := 0; i < batch; i++ {
			bo := 0
			if bStride != 0 {
				bo = i * br * bc
			}
			w, mg := refGemm(tA, tB, m, n, k, float64(alpha), av[i*ar*ac:], ac, bv[bo:], bc, float64(beta), cv[i*m*n:])
			want = append(want, w...)
			mags = append(mags, mg...)
		}
		e.noErr("GemmStridedBatched", e.dev.GemmStridedBatched(tA, tB, alpha,
			gpu.Mat{Buf: a.m.Buf, Off: a.m.Off, Rows: ar, Cols: ac, Stride: a.m.Stride}, ar*a.m.Stride,
			gpu.Mat{Buf: b.m.Buf, Off: b.m.Off, Rows: br, Cols: bc, Stride: b.m.Stride}, bStride,
			beta, gpu.Mat{Buf: c.m.Buf, Off: c.m.Off, Rows: m, Cols: n, Stride: c.m.Stride}, m*c.m.Stride, batch))
		e.check(fmt.Sprintf("GemmStridedBatched %d: %dx%dx%d x%d", r, m, n, k, batch), c, want, gemmTol(k, mags, n))
	}
	// Heads side by side: matrix h is columns [h*d, (h+1)*d) of one matrix,
	// as in attention (S_h = Q_h K_h^T, then O_h = P_h V_h).
	const l, heads, d = 9, 3, 5
	q := e.mat(l, heads*d, strided, -1, 1)
	kk := e.mat(l, heads*d, dense, -1, 1)
	s := e.mat(l*heads, l, dense, -1, 1)
	qv, kv := q.get(), kk.get()
	var want, mags []float64
	for h := 0; h < heads; h++ {
		qh := make([]float64, l*d)
		kh := make([]float64, l*d)
		for i := 0; i < l; i++ {
			for j := 0; j < d; j++ {
				qh[i*d+j] = qv[i*heads*d+h*d+j]
				kh[i*d+j] = kv[i*heads*d+h*d+j]
			}
		}
		w, mg := refGemm(false, true, l, l, d, 1, qh, d, kh, d, 0, nil)
		want = append(want, w...)
		mags = append(mags, mg...)
	}
	e.noErr("GemmStridedBatched heads", e.dev.GemmStridedBatched(false, true, 1,
		q.m.Colsl(0, d), d, kk.m.Colsl(0, d), d, 0, s.m.Rowsl(0, l), l*l, heads))
	e.check("GemmStridedBatched heads", s, want, gemmTol(d, mags, l))
	// And back: O_h = S_h V_h written into columns of one output.
	o := e.mat(l, heads*d, strided, -1, 1)
	sv := s.get()
	want, mags = want[:0], mags[:0]
	wantO := make([]float64, l*heads*d)
	magO := make([]float64, l*heads*d)
	for h := 0; h < heads; h++ {
		vh := make([]float64, l*d)
		for i := 0; i < l; i++ {
			for j := 0; j < d; j++ {
				vh[i*d+j] = kv[i*heads*d+h*d+j]
			}
		}
		w, mg := refGemm(false, false, l, d, l, 1, sv[h*l*l:], l, vh, d, 0, nil)
		for i := 0; i < l; i++ {
			for j := 0; j < d; j++ {
				wantO[i*heads*d+h*d+j] = w[i*d+j]
				magO[i*heads*d+h*d+j] = mg[i*d+j]
			}
		}
	}
	e.noErr("GemmStridedBatched heads out", e.dev.GemmStridedBatched(false, false, 1,
		s.m.Rowsl(0, l), l*l, kk.m.Colsl(0, d), d, 0, o.m.Colsl(0, d), d, heads))
	e.check("GemmStridedBatched heads out", o, wantO, gemmTol(l, magO, heads*d))

	// batch = 0 does nothing; overlapping outputs and bad strides fail.
	e.noErr("GemmStridedBatched batch 0", e.dev.GemmStridedBatched(false, true, 1, q.m.Colsl(0, d), d, kk.m.Colsl(0, d), d, 0, s.m.Rowsl(0, l), l*l, 0))
	e.unchanged("GemmStridedBatched batch 0", s)
	e.wantErr("GemmStridedBatched overlapping C", e.dev.GemmStridedBatched(false, false, 1,
		s.m.Rowsl(0, l), l*l, kk.m.Colsl(0, d), d, 0, o.m.Colsl(0, d), 1, heads), gpu.ErrShape)
	e.wantErr("GemmStridedBatched past the buffer", e.dev.GemmStridedBatched(false, false, 1,
		s.m.Rowsl(0, l), l*l, kk.m.Colsl(0, d), d, 0, o.m.Colsl(0, d), d, heads+5), gpu.ErrShape)
	e.wantErr("GemmStridedBatched negative stride", e.dev.GemmStridedBatched(false, false, 1,
		s.m.Rowsl(0, l), -1, kk.m.Colsl(0, d), d, 0, o.m.Colsl(0, d), d, heads), gpu.ErrShape)
	e.wantErr("GemmStridedBatched negative batch", e.dev.GemmStridedBatched(false, false, 1,
		s.m.Rowsl(0, l), l*l, kk.m.Colsl(0, d), d, 0, o.m.Colsl(0, d), d, -1), gpu.ErrShape)
	e.unchanged("GemmStridedBatched after errors", o)
}

func testGemmSegmented(e *env) {
	for r := 0; r < 6; r++ {
		tB := r%2 == 1
		k, n := e.size(), e.size()
		if r == 5 {
			k, n = 300, 70
		}
		var segs []gpu.Segment
		var ws []*tm
		rows := 0
		for s := 0; s < 2+e.rng.IntN(6); s++ {
			sr := []int{0, 1, 2, 5, 17, 40}[e.rng.IntN(6)]
			seg := gpu.Segment{Rows: sr}
			var w *tm
			if e.rng.IntN(4) != 0 {
				wr, wc := stored(tB, k, n)
				w = e.mat(wr, wc, e.layout(), -1, 1)
				seg.W = w.m
			}
			segs = append(segs, seg)
			ws = append(ws, w)
			rows += sr
		}
		x := e.mat(rows, k, e.layout(), -1, 1)
		y := e.mat(rows, n, e.layout(), -1, 1)
		alpha, beta := float32(1.25), float32(r%3)*0.5
		xv, yv := x.get(), y.get()
		want := append([]float64(nil), yv...)
		mag := make([]float64, len(yv))
		r0 := 0
		for si, s := range segs {
			if ws[si] != nil {
				_, wc := stored(tB, k, n)
				w, mg := refGemm(false, tB, s.Rows, n, k, float64(alpha), xv[r0*k:], k, ws[si].get(), wc, float64(beta), yv[r0*n:])
				copy(want[r0*n:], w)
				copy(mag[r0*n:], mg)
			} else {
				// A zero W contributes nothing: beta*y, exactly (beta is 0,
				// 0.5 or 1), and zeros for beta = 0 even over a NaN.
				for i := r0 * n; i < (r0+s.Rows)*n; i++ {
					want[i] = float64(beta) * yv[i]
					if beta == 0 {
						want[i] = 0
					}
				}
			}
			r0 += s.Rows
		}
		e.noErr("GemmSegmented", e.dev.GemmSegmented(tB, alpha, x.m, segs, beta, y.m))
		e.check(fmt.Sprintf("GemmSegmented %d", r), y, want, gemmTol(k, mag, n))
	}
	testZeroSegments(e)
	// Errors: rows that do not add up, a W of the wrong shape, y = x.
	x := e.mat(6, 4, dense, -1, 1)
	y := e.mat(6, 3, dense, -1, 1)
	w := e.mat(4, 3, dense, -1, 1)
	bad := e.mat(3, 3, dense, -1, 1)
	e.wantErr("GemmSegmented rows", e.dev.GemmSegmented(false, 1, x.m, []gpu.Segment{{Rows: 2, W: w.m}, {Rows: 3, W: w.m}}, 0, y.m), gpu.ErrShape)
	e.wantErr("GemmSegmented too many rows", e.dev.GemmSegmented(false, 1, x.m, []gpu.Segment{{Rows: 7, W: w.m}}, 0, y.m), gpu.ErrShape)
	e.wantErr("GemmSegmented negative rows", e.dev.GemmSegmented(false, 1, x.m, []gpu.Segment{{Rows: 8, W: w.m}, {Rows: -2}}, 0, y.m), gpu.ErrShape)
	e.wantErr("GemmSegmented W shape", e.dev.GemmSegmented(false, 1, x.m, []gpu.Segment{{Rows: 3, W: w.m}, {Rows: 3, W: bad.m}}, 0, y.m), gpu.ErrShape)
	e.wantErr("GemmSegmented W transposed", e.dev.GemmSegmented(true, 1, x.m, []gpu.Segment{{Rows: 6, W: w.m}}, 0, y.m), gpu.ErrShape)
	e.wantErr("GemmSegmented y = x", e.dev.GemmSegmented(false, 1, x.m, []gpu.Segment{{Rows: 6, W: w.m.Colsl(0, 3)}}, 0, x.m.Colsl(0, 3)), gpu.ErrShape)
	e.unchanged("GemmSegmented after errors", y)
}

// testZeroSegments: a segment with a zero W contributes a zero product, so
// its rows of y become beta*y whatever beta is: untouched for beta = 1 (a NaN
// stays), scaled for 0.5, zeros for 0 (y is not read: a NaN goes). Also when
// every segment is zero.
func testZeroSegments(e *env) {
	const k, n = 5, 4
	w := e.mat(k, n, dense, -1, 1)
	for _, beta := range []float32{0, 0.5, 1} {
		for _, allZero := range []bool{false, true} {
			segs := []gpu.Segment{{Rows: 2, W: w.m}, {Rows: 3}, {Rows: 1, W: w.m}, {Rows: 2}}
			if allZero {
				for i := range segs {
					segs[i].W = gpu.Mat{}
				}
			}
			x := e.mat(8, k, e.layout(), -1, 1)
			y := e.mat(8, n, e.layout(), -1, 1)
			yv := y.get()
			yv[2*n+1] = math.NaN() // in the first zero segment
			y32 := make([]float32, len(yv))
			for i, v := range yv {
				y32[i] = float32(v)
			}
			e.fill(y, y32)
			xv, wv := x.get(), w.get()
			want := make([]float64, len(yv))
			mag := make([]float64, len(yv))
			r0 := 0
			for _, s := range segs {
				if s.W.IsZero() {
					for i := r0 * n; i < (r0+s.Rows)*n; i++ {
						if beta != 0 {
							want[i] = float64(beta) * yv[i]
						}
					}
				} else {
					g, mg := refGemm(false, false, s.Rows, n, k, 1, xv[r0*k:], k, wv, n, float64(beta), yv[r0*n:])
					copy(want[r0*n:], g)
					copy(mag[r0*n:], mg)
				}
				r0 += s.Rows
			}
			e.noErr("GemmSegmented zero W", e.dev.GemmSegmented(false, 1, x.m, segs, beta, y.m))
			e.check(fmt.Sprintf("GemmSegmented zero W beta=%v all=%v", beta, allZero), y, want, gemmTol(k, mag, n))
		}
	}
}
