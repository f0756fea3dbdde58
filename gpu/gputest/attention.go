package gputest

import (
	"fmt"
	"math"

	"github.com/smile-vplm/smile/gpu"
)

// refAttention computes packed multi-head attention in float64.
func refAttention(q, k, v []float64, qCols, vCols, heads int, offsets []int, scale float64) []float64 {
	rows := offsets[len(offsets)-1]
	out := make([]float64, rows*vCols)
	dk, dv := qCols/heads, vCols/heads
	for s := 0; s+1 < len(offsets); s++ {
		b, e := offsets[s], offsets[s+1]
		for h := 0; h < heads; h++ {
			for i := b; i < e; i++ {
				sc := make([]float64, e-b)
				mx := math.Inf(-1)
				for j := b; j < e; j++ {
					var d float64
					for c := 0; c < dk; c++ {
						d += q[i*qCols+h*dk+c] * k[j*qCols+h*dk+c]
					}
					sc[j-b] = scale * d
					mx = math.Max(mx, sc[j-b])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for c := 0; c < dv; c++ {
					var o float64
					for j := b; j < e; j++ {
						o += sc[j-b] / sum * v[j*vCols+h*dv+c]
					}
					out[i*vCols+h*dv+c] = o
				}
			}
		}
	}
	return out
}

type attnCase struct {
	lens          []int
	heads, dk, dv int
	packed        bool // q, k, v as column slices of one [rows, 3H] matrix
}

func (e *env) runAttention(c attnCase) {
	e.t.Helper()
	offsets := []int{0}
	for _, l := range c.lens {
		offsets = append(offsets, offsets[len(offsets)-1]+l)
	}
	rows := offsets[len(offsets)-1]
	qc, vc := c.heads*c.dk, c.heads*c.dv
	var q, k, v *tm
	var qm, km, vm gpu.Mat
	if c.packed {
		qkv := e.mat(rows, 2*qc+vc, e.layout(), -1, 1)
		q, k, v = qkv, qkv, qkv
		qm, km, vm = qkv.m.Colsl(0, qc), qkv.m.Colsl(qc, 2*qc), qkv.m.Colsl(2*qc, 2*qc+vc)
	} else {
		q, k, v = e.mat(rows, qc, e.layout(), -1, 1), e.mat(rows, qc, e.layout(), -1, 1), e.mat(rows, vc, e.layout(), -1, 1)
		qm, km, vm = q.m, k.m, v.m
	}
	sub := func(x *tm, m gpu.Mat) []float64 {
		all := x.get()
		cols := x.m.Cols
		c0 := m.Off - x.m.Off
		out := make([]float64, 0, m.Rows*m.Cols)
		for i := 0; i < m.Rows; i++ {
			out = append(out, all[i*cols+c0:i*cols+c0+m.Cols]...)
		}
		return out
	}
	out := e.mat(rows, vc, e.layout(), -1, 1)
	scale := 1 / math.Sqrt(float64(max(c.dk, 1)))
	want := refAttention(sub(q, qm), sub(k, km), sub(v, vm), qc, vc, c.heads, offsets, scale)
	name := fmt.Sprintf("Attention lens=%v heads=%d dk=%d dv=%d packed=%v", c.lens, c.heads, c.dk, c.dv, c.packed)
	e.noErr(name, e.dev.Attention(out.m, qm, km, vm, c.heads, offsets, float32(scale)))
	// Values are in [-1, 1]; logits carry a few float32 rounding errors.
	e.check(name, out, want, relTol(1e-5, 2e-6*math.Sqrt(float64(c.dk+1))))
	e.unchanged(name+" q", q)
}

func testAttention(e *env) {
	for r := 0; r < 10; r++ {
		n := 1 + e.rng.IntN(5)
		lens := make([]int, n)
		for i := range lens {
			lens[i] = []int{0, 1, 2, 7, 20, 33}[e.rng.IntN(6)]
		}
		heads := []int{1, 2, 3, 4}[e.rng.IntN(4)]
		dk := []int{1, 3, 8, 16, 33}[e.rng.IntN(5)]
		dv := dk
		if r%3 == 2 {
			dv = []int{1, 5, 8}[e.rng.IntN(3)]
		}
		e.runAttention(attnCase{lens: lens, heads: heads, dk: dk, dv: dv, packed: r%2 == 0})
	}
	// Many short sequences (the batched-serving shape), a BERT-like block
	// and one sequence long enough to be split into row blocks.
	e.runAttention(attnCase{lens: []int{20, 19, 21, 20, 18, 20, 22, 20, 17, 20, 20, 23}, heads: 4, dk: 16, dv: 16, packed: true})
	e.runAttention(attnCase{lens: []int{128, 40}, heads: 2, dk: 32, dv: 32, packed: true})
	e.runAttention(attnCase{lens: []int{300, 5}, heads: 2, dk: 4, dv: 4})
	// dk = 0: all logits are 0, every row averages its sequence's values.
	e.runAttention(attnCase{lens: []int{3, 4}, heads: 2, dk: 0, dv: 2})

	q := e.mat(10, 8, dense, -1, 1)
	out := e.mat(10, 8, dense, -1, 1)
	for _, tc := range []struct {
		name    string
		heads   int
		offsets []int
		q, o    gpu.Mat
		target  error
	}{
		{"heads 3", 3, []int{0, 10}, q.m, out.m, gpu.ErrShape},
		{"heads 0", 0, []int{0, 10}, q.m, out.m, gpu.ErrShape},
		{"offsets short", 2, []int{0, 9}, q.m, out.m, gpu.ErrShape},
		{"offsets late start", 2, []int{1, 10}, q.m, out.m, gpu.ErrShape},
		{"offsets decreasing", 2, []int{0, 6, 4, 10}, q.m, out.m, gpu.ErrOutOfRange},
		{"offsets past rows", 2, []int{0, 11}, q.m, out.m, gpu.ErrOutOfRange},
		{"no offsets", 2, nil, q.m, out.m, gpu.ErrShape},
		{"rows", 2, []int{0, 9}, q.m.Rowsl(0, 9), out.m, gpu.ErrShape},
		{"out = q", 2, []int{0, 10}, q.m, q.m, gpu.ErrShape},
	} {
		e.wantErr("Attention "+tc.name, e.dev.Attention(tc.o, tc.q, q.m, q.m, tc.heads, tc.offsets, 1), tc.target)
	}
	e.unchanged("Attention after errors", out)
}
