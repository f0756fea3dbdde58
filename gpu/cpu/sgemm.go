package cpu

import "unsafe"

// The pure-Go GEMM. Go (without assembly or GOEXPERIMENT=simd) compiles
// float32 arithmetic to scalar SSE: one multiply and one add per
// multiply-add, no FMA under GOAMD64=v1, and 15 usable XMM registers. The
// compiler's scheduler also hoists the multiplies of a block above its adds
// (values with uses inside the block go first), so the last k step of an
// unrolled loop needs one temporary register per product. A 1x6 tile is
// the largest that stays in registers (6 accumulators, 6 products, the A
// element) while giving the two adders six independent chains, which is
// what their latency needs; 2x4, 3x4, 4x4 and 2x6 tiles spill and run at
// half the speed or less, 1x7 gains 2%. The k loop is unrolled by four, the
// micro-kernel uses unsafe pointers (bounds are checked once per call), B
// is packed into 6-wide column slivers that stay in L1, and A rows are read
// in place (packed only when transposed). Measured on the reference machine
// (AMD EPYC, Zen 5, 2 vCPUs): about 11.8 GFLOP/s per core for the
// micro-kernel alone and 11.3 for whole BERT-sized GEMMs; gonum's SSE
// assembly and OpenBLAS's AVX-512 are out of reach of scalar code.
const (
	nr = 6   // micro-tile width (columns of C)
	kc = 256 // depth of a packed B sliver: 6 KiB, stays in L1
	mc = 128 // rows of A per block: 128 KiB at kc = 256, stays in L2
	nc = 192 // columns of a packed B panel: 192 KiB at kc = 256, stays in L2
)

// workspace is one participant's scratch, grown on first use and kept.
type workspace struct {
	packB []float32 // kc*nc
	packA []float32 // mc*kc, for transposed A
	s     []float32 // attention scores
	acc   []float64 // row accumulators
}

func (ws *workspace) packBuf() []float32 {
	if ws.packB == nil {
		ws.packB = make([]float32, kc*nc)
	}
	return ws.packB
}

func (ws *workspace) packABuf() []float32 {
	if ws.packA == nil {
		ws.packA = make([]float32, mc*kc)
	}
	return ws.packA
}

func (ws *workspace) scores(n int) []float32 {
	if cap(ws.s) < n {
		ws.s = make([]float32, n)
	}
	return ws.s[:n]
}

func (ws *workspace) accum(n int) []float64 {
	if cap(ws.acc) < n {
		ws.acc = make([]float64, n)
	}
	return ws.acc[:n]
}

// gemmTask splits one GEMM over the pool by column slivers or by rows.
type gemmTask struct {
	d      *Device
	g      gemmArgs
	byRows bool
}

func (t *gemmTask) run(w, lo, hi int) {
	g := &t.g
	if t.byRows {
		goGemmBlock(&t.d.ws[w], g, lo, hi, 0, g.n)
	} else {
		goGemmBlock(&t.d.ws[w], g, 0, g.m, lo*nr, min(hi*nr, g.n))
	}
}

// goGemm runs g on every thread when it is big enough to pay for waking
// them: in chunks of column slivers (each participant packs its own B
// slivers and reads all of A, which stays in L2) or, for narrow outputs, of
// rows. Chunks are handed out dynamically, about four per thread, so a
// participant slowed by another process on the shared cores takes fewer.
func (d *Device) goGemm(g *gemmArgs) {
	if d.threads == 1 || g.mnk() < parGemmMin {
		goGemmBlock(&d.ws[0], g, 0, g.m, 0, g.n)
		return
	}
	t := &d.gemmT
	t.d, t.g = d, *g
	slivers := (g.n + nr - 1) / nr
	if slivers >= 2*d.threads {
		t.byRows = false
		d.pool.parallel(t, slivers, max(1, slivers/(4*d.threads)), d.threads)
	} else {
		t.byRows = true
		d.pool.parallel(t, g.m, max(1, g.m/(4*d.threads)), d.threads)
	}
	t.g = gemmArgs{} // drop the references to the operands
}

// goGemmBlock computes C[i0:i1, j0:j1] on the calling thread. Loops, from
// the outside: depth blocks of kc, row blocks of mc (A, transposed into
// scratch if need be, stays in L2), column panels of nc (packed into
// slivers; a panel stays in L2, a sliver in L1), slivers, rows.
func goGemmBlock(ws *workspace, g *gemmArgs, i0, i1, j0, j1 int) {
	scaleC(g, i0, i1, j0, j1)
	if g.k == 0 || g.alpha == 0 || i0 >= i1 || j0 >= j1 {
		return
	}
	bp := ws.packBuf()
	for pc := 0; pc < g.k; pc += kc {
		kb := min(kc, g.k-pc)
		for ic := i0; ic < i1; ic += mc {
			mb := min(mc, i1-ic)
			var a []float32
			lda := g.lda
			if g.tA {
				a = ws.packABuf()
				packAT(a, g, ic, mb, pc, kb)
				lda = kb
			} else {
				a = g.a[ic*g.lda+pc:]
			}
			for jc := j0; jc < j1; jc += nc {
				nb := min(nc, j1-jc)
				packB(bp, g, pc, kb, jc, nb)
				for s := 0; s*nr < nb; s++ {
					kernel(kb, mb, min(nr, nb-s*nr), a, lda, bp[s*kb*nr:], g.c[ic*g.ldc+jc+s*nr:], g.ldc, g.alpha)
				}
			}
		}
	}
}

// packB copies the panel op(B)[pc:pc+kb, jc:jc+nb] into dst as
// ceil(nb/nr) slivers of kb rows of nr, the last one zero-padded. Reads
// follow B's rows (whole cache lines, in order, which the prefetcher
// follows); reading a sliver at a time would hop one row of B per element
// group and stall on every one when B's rows are long.
func packB(dst []float32, g *gemmArgs, pc, kb, jc, nb int) {
	ns := (nb + nr - 1) / nr
	dst = dst[:ns*kb*nr]
	ldb := g.ldb
	full := nb / nr
	if !g.tB {
		for p := 0; p < kb; p++ {
			src := g.b[(pc+p)*ldb+jc:]
			src = src[:nb]
			for s := 0; s < full; s++ {
				*(*[nr]float32)(dst[(s*kb+p)*nr:]) = *(*[nr]float32)(src[s*nr:])
			}
			if full < ns {
				d := (*[nr]float32)(dst[(full*kb+p)*nr:])
				*d = [nr]float32{}
				copy(d[:], src[full*nr:])
			}
		}
		return
	}
	// B is stored n x k: column j of op(B) is row j of B, contiguous in k.
	for j := 0; j < ns*nr; j++ {
		d := dst[(j/nr)*kb*nr+j%nr:]
		if j >= nb {
			for p := 0; p < kb; p++ {
				d[p*nr] = 0
			}
			continue
		}
		row := g.b[(jc+j)*ldb+pc:]
		row = row[:kb]
		for p, v := range row {
			d[p*nr] = v
		}
	}
}

// packAT copies op(A)[ic:ic+mb, pc:pc+kb] of a transposed A (stored k x m)
// into dst as mb rows of kb.
func packAT(dst []float32, g *gemmArgs, ic, mb, pc, kb int) {
	dst = dst[:mb*kb]
	for p := 0; p < kb; p++ {
		row := g.a[(pc+p)*g.lda+ic:]
		row = row[:mb]
		for i, v := range row {
			dst[i*kb+p] = v
		}
	}
}

// kernel computes C[0:mb, 0:nb] += alpha * A[0:mb, 0:kb] * Bp for a packed
// sliver Bp (kb rows of nr). It checks every bound once, then runs the
// unchecked micro-kernel.
func kernel(kb, mb, nb int, a []float32, lda int, b []float32, c []float32, ldc int, alpha float32) {
	if kb <= 0 || mb <= 0 || nb <= 0 {
		return
	}
	_ = a[(mb-1)*lda+kb-1]
	_ = b[kb*nr-1]
	_ = c[(mb-1)*ldc+nb-1]
	kern1x6(kb, mb, nb, unsafe.Pointer(unsafe.SliceData(a)), uintptr(lda)*4,
		unsafe.Pointer(unsafe.SliceData(b)), unsafe.Pointer(unsafe.SliceData(c)), uintptr(ldc)*4, alpha)
}

// kern1x6 is the micro-kernel: for each of mb rows of A (lda bytes apart),
// six dot products against the packed sliver, added into C (ldc bytes
// apart). nb < nr writes only the first nb columns.
//
// The pointers into A and B advance only when another step follows, so they
// never point past the end of an operand (which the unsafe.Pointer rules
// forbid); indexing from a base instead makes the compiler rematerialise
// every address, five instructions per multiply-add instead of three.
func kern1x6(kb, mb, nb int, a unsafe.Pointer, lda uintptr, b, c unsafe.Pointer, ldc uintptr, alpha float32) {
	k4, kr := kb>>2, kb&3
	for i := 0; i < mb; i++ {
		pa := unsafe.Add(a, uintptr(i)*lda)
		pb := b
		var c0, c1, c2, c3, c4, c5 float32
		for n := k4; n > 0; n-- {
			aa := (*[4]float32)(pa)
			bb := (*[4 * nr]float32)(pb)
			a0 := aa[0]
			c0 += a0 * bb[0]
			c1 += a0 * bb[1]
			c2 += a0 * bb[2]
			c3 += a0 * bb[3]
			c4 += a0 * bb[4]
			c5 += a0 * bb[5]
			a0 = aa[1]
			c0 += a0 * bb[6]
			c1 += a0 * bb[7]
			c2 += a0 * bb[8]
			c3 += a0 * bb[9]
			c4 += a0 * bb[10]
			c5 += a0 * bb[11]
			a0 = aa[2]
			c0 += a0 * bb[12]
			c1 += a0 * bb[13]
			c2 += a0 * bb[14]
			c3 += a0 * bb[15]
			c4 += a0 * bb[16]
			c5 += a0 * bb[17]
			a0 = aa[3]
			c0 += a0 * bb[18]
			c1 += a0 * bb[19]
			c2 += a0 * bb[20]
			c3 += a0 * bb[21]
			c4 += a0 * bb[22]
			c5 += a0 * bb[23]
			if n > 1 || kr > 0 {
				pa = unsafe.Add(pa, 16)
				pb = unsafe.Add(pb, 16*nr)
			}
		}
		for n := kr; n > 0; n-- {
			a0 := *(*float32)(pa)
			bb := (*[nr]float32)(pb)
			c0 += a0 * bb[0]
			c1 += a0 * bb[1]
			c2 += a0 * bb[2]
			c3 += a0 * bb[3]
			c4 += a0 * bb[4]
			c5 += a0 * bb[5]
			if n > 1 {
				pa = unsafe.Add(pa, 4)
				pb = unsafe.Add(pb, 4*nr)
			}
		}
		cr := unsafe.Add(c, uintptr(i)*ldc)
		if nb == nr {
			cc := (*[nr]float32)(cr)
			cc[0] += alpha * c0
			cc[1] += alpha * c1
			cc[2] += alpha * c2
			cc[3] += alpha * c3
			cc[4] += alpha * c4
			cc[5] += alpha * c5
		} else {
			acc := [nr]float32{c0, c1, c2, c3, c4, c5}
			for j := 0; j < nb; j++ {
				*(*float32)(unsafe.Add(cr, 4*j)) += alpha * acc[j]
			}
		}
	}
}
