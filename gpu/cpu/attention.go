package cpu

import (
	"fmt"

	"github.com/smile-vplm/smile/gpu"
)

// Attention work is split into items of (sequence, head, block of query
// rows). An item computes S = scale*Q_blk K^T into per-participant scratch,
// a row softmax, and out_blk = S V. Items run side by side, one per
// participant, each GEMM on a single thread: for the OpenBLAS backend the
// call holds OpenBLAS's thread count at 1 (blasThreads) while they run, so
// its own threads and ours never compete for the cores.
//
// With OpenBLAS compiled in, both GEMMs of every item go to OpenBLAS: its
// AVX-512 kernels beat the scalar Go micro-kernel by 2x (L = 2) to 4x
// (L >= 20) per item even where the call overhead dominates (TestTuneAttention
// measures both). The pure-Go backend uses the Go micro-kernel.

// attnRowBlock bounds the query rows of one item so the scores of an item
// (rows x L) stay near 64K floats whatever the sequence length.
func attnRowBlock(l int) int {
	return max(16, min(l, (1<<16)/max(l, 1)))
}

// attnBLASMinMNK: items whose S = Q K^T has fewer multiply-adds use the Go
// micro-kernel even with OpenBLAS; 0 (measured: OpenBLAS always wins). A
// variable so TestTuneAttention can compare both paths.
var attnBLASMinMNK = 0

type attnItem struct {
	s, h, r0, r1 int32
}

type attnTask struct {
	d              *Device
	q, k, v, out   []float32
	qs, ks, vs, os int
	dk, dv         int
	offsets        []int
	scale          float32
	items          []attnItem
}

func (t *attnTask) run(w, lo, hi int) {
	ws := &t.d.ws[w]
	for _, it := range t.items[lo:hi] {
		base := t.offsets[it.s]
		l := t.offsets[it.s+1] - base
		r0, r1 := int(it.r0), int(it.r1)
		nq := r1 - r0
		h := int(it.h)
		s := ws.scores(nq * l)
		useBLAS := t.d.blas && nq*l*t.dk >= attnBLASMinMNK
		g := gemmArgs{tB: true, m: nq, n: l, k: t.dk, alpha: t.scale, c: s, ldc: l}
		if t.dk > 0 { // else S = 0 (the GEMM only clears it): uniform weights
			g.a, g.lda = t.q[(base+r0)*t.qs+h*t.dk:], t.qs
			g.b, g.ldb = t.k[base*t.ks+h*t.dk:], t.ks
		}
		if useBLAS {
			blasSgemm(&g)
		} else {
			goGemmBlock(ws, &g, 0, nq, 0, l)
		}
		// Softmax: exponentials now, the normalisation on whichever side is
		// smaller, the scores (nq x l) or the output (nq x dv).
		postScale := t.dv < l
		inv := ws.accum(nq)
		for i := 0; i < nq; i++ {
			row := s[i*l : (i+1)*l]
			inv[i] = 1 / expRow(row)
			if !postScale {
				for j, e := range row {
					row[j] = float32(float64(e) * inv[i])
				}
			}
		}
		out := t.out[(base+r0)*t.os+h*t.dv:]
		g = gemmArgs{m: nq, n: t.dv, k: l, alpha: 1,
			a: s, lda: l,
			b: t.v[base*t.vs+h*t.dv:], ldb: t.vs,
			c: out, ldc: t.os}
		if useBLAS {
			blasSgemm(&g)
		} else {
			goGemmBlock(ws, &g, 0, nq, 0, t.dv)
		}
		if postScale {
			for i := 0; i < nq; i++ {
				row := out[i*t.os : i*t.os+t.dv]
				for j, o := range row {
					row[j] = float32(float64(o) * inv[i])
				}
			}
		}
	}
}

// Attention is packed (ragged) multi-head scaled dot-product attention:
// sequence s owns rows [offsets[s], offsets[s+1]) of q, k, v and out (the
// offsets must cover all rows); head h uses columns [h*dk, (h+1)*dk) of q
// and k and [h*dv, (h+1)*dv) of v and out. out must not overlap q, k or v.
func (d *Device) Attention(out, q, k, v gpu.Mat, heads int, offsets []int, scale float32) error {
	if err := d.attnCheck(out, q, k, v, heads, offsets); err != nil {
		return fmt.Errorf("cpu: Attention: %w", err)
	}
	if q.Rows == 0 || out.Cols == 0 {
		return nil
	}
	t := &d.attnT
	t.d = d
	t.q, _ = d.view("q", q)
	t.k, _ = d.view("k", k)
	t.v, _ = d.view("v", v)
	t.out, _ = d.view("out", out)
	t.qs, t.ks, t.vs, t.os = q.Stride, k.Stride, v.Stride, out.Stride
	t.dk, t.dv = q.Cols/heads, v.Cols/heads
	t.offsets, t.scale = offsets, scale

	t.items = t.items[:0]
	work, biggest := 0, 0
	for s := 0; s+1 < len(offsets); s++ {
		l := offsets[s+1] - offsets[s]
		if l == 0 {
			continue
		}
		rb := attnRowBlock(l)
		for r0 := 0; r0 < l; r0 += rb {
			r1 := min(r0+rb, l)
			for h := 0; h < heads; h++ {
				t.items = append(t.items, attnItem{s: int32(s), h: int32(h), r0: int32(r0), r1: int32(r1)})
			}
			mnk := (r1 - r0) * l * max(t.dk, t.dv)
			work += heads * mnk
			biggest = max(biggest, mnk)
		}
	}
	serial := d.threads == 1 || len(t.items) == 1 || work < parGemmMin
	if d.blas && biggest > blasSerialMNK {
		n := 1 // items side by side, each GEMM on one thread
		if serial {
			n = d.threads
		}
		blasThreads.acquire(n)
		defer blasThreads.release()
	}
	if serial {
		t.run(0, 0, len(t.items))
	} else {
		d.pool.parallel(t, len(t.items), max(1, len(t.items)/(8*d.threads)), d.threads)
	}
	t.q, t.k, t.v, t.out, t.offsets = nil, nil, nil, nil, nil
	return nil
}

func (d *Device) attnCheck(out, q, k, v gpu.Mat, heads int, offsets []int) error {
	for _, op := range [...]struct {
		name string
		m    gpu.Mat
	}{{"out", out}, {"q", q}, {"k", k}, {"v", v}} {
		if _, err := d.view(op.name, op.m); err != nil {
			return err
		}
	}
	if heads <= 0 {
		return fmt.Errorf("%w: heads = %d", gpu.ErrShape, heads)
	}
	if q.Rows != k.Rows || q.Rows != v.Rows || q.Rows != out.Rows {
		return fmt.Errorf("%w: rows of out, q, k, v are %d, %d, %d, %d", gpu.ErrShape, out.Rows, q.Rows, k.Rows, v.Rows)
	}
	if q.Cols != k.Cols || v.Cols != out.Cols || q.Cols%heads != 0 || v.Cols%heads != 0 {
		return fmt.Errorf("%w: cols of out, q, k, v are %d, %d, %d, %d for %d heads",
			gpu.ErrShape, out.Cols, q.Cols, k.Cols, v.Cols, heads)
	}
	if err := gpu.CheckOffsets(offsets, q.Rows, true); err != nil {
		return err
	}
	return gpu.CheckDisjoint("out", out, false, q, k, v)
}
