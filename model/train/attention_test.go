package train

import (
	"math"
	"sync"
	"testing"
)

func offsetsOf(lens ...int) []int {
	off := []int{0}
	for _, l := range lens {
		off = append(off, off[len(off)-1]+l)
	}
	return off
}

func TestProbsLen(t *testing.T) {
	if got := ProbsLen(offsetsOf(3, 1, 0, 5), 2); got != 2*(9+1+0+25) {
		t.Fatalf("ProbsLen = %d", got)
	}
	if got := ProbsLen([]int{0}, 4); got != 0 {
		t.Fatalf("ProbsLen of no sequences = %d", got)
	}
}

func TestAttentionGrad(t *testing.T) {
	b := testDevice(t)
	const heads, a = 2, 6 // dh = 3
	offsets := offsetsOf(3, 1, 5, 2)
	T := offsets[len(offsets)-1]
	rng := newRNG(10)
	qkv := randSlice(rng, T*3*a, 1.5)
	r := randSlice(rng, T*a, 1)
	out := make([]float32, T*a)
	probs := make([]float32, ProbsLen(offsets, heads))
	const scale = 0.6
	eval := func() float64 {
		Attention(b, out, probs, qkv, offsets, heads, a, scale)
		return weighted(r, out)
	}
	eval()
	// The probabilities are a softmax: rows sum to 1.
	po := 0
	for s := 0; s+1 < len(offsets); s++ {
		n := offsets[s+1] - offsets[s]
		for i := 0; i < heads*n; i++ {
			var sum float64
			for _, p := range probs[po+i*n : po+(i+1)*n] {
				sum += float64(p)
			}
			if math.Abs(sum-1) > 1e-6 {
				t.Fatalf("sequence %d: probability row %d sums to %g", s, i, sum)
			}
		}
		po += heads * n * n
	}
	// A sequence of length 1 attends to itself: out = v.
	for c := 0; c < a; c++ {
		if out[3*a+c] != qkv[3*3*a+2*a+c] {
			t.Fatalf("length-1 sequence: out %v, v %v", out[3*a:4*a], qkv[3*3*a+2*a:3*3*a+3*a])
		}
	}
	dqkv := filled(len(qkv), gradInit)
	AttentionBackward(b, dqkv, r, qkv, probs, offsets, heads, a, scale)
	checkGrad(t, "Attention dqkv", 0, eval, qkv, minus(dqkv, gradInit), 1e-3)
}

// refAttention64 is packed attention in float64, straight from the
// definition.
func refAttention64(qkv []float32, offsets []int, heads, a int, scale float64) []float64 {
	T := offsets[len(offsets)-1]
	out := make([]float64, T*a)
	dh, ld := a/heads, 3*a
	for s := 0; s+1 < len(offsets); s++ {
		b, e := offsets[s], offsets[s+1]
		for h := 0; h < heads; h++ {
			for i := b; i < e; i++ {
				sc := make([]float64, e-b)
				mx := math.Inf(-1)
				for j := b; j < e; j++ {
					var d float64
					for c := 0; c < dh; c++ {
						d += float64(qkv[i*ld+h*dh+c]) * float64(qkv[j*ld+a+h*dh+c])
					}
					sc[j-b] = scale * d
					mx = math.Max(mx, sc[j-b])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for c := 0; c < dh; c++ {
					var o float64
					for j := b; j < e; j++ {
						o += sc[j-b] / sum * float64(qkv[j*ld+2*a+h*dh+c])
					}
					out[i*a+h*dh+c] = o
				}
			}
		}
	}
	return out
}

// TestAttentionMatchesDevice compares Attention with gpu/cpu's kernel
// (q, k, v as column views of one packed matrix, as served) and with a
// float64 reference.
func TestAttentionMatchesDevice(t *testing.T) {
	d := testDevice(t)
	for _, tc := range []struct {
		lens     []int
		heads, a int
	}{
		{[]int{1, 7, 2, 33}, 4, 32},
		{[]int{5, 1, 64}, 2, 6},
		{[]int{130}, 3, 24}, // longer than one of the device's row blocks
	} {
		offsets := offsetsOf(tc.lens...)
		T := offsets[len(offsets)-1]
		rng := newRNG(uint64(11 + T))
		qkv := randSlice(rng, T*3*tc.a, 2)
		scale := float32(1 / math.Sqrt(float64(tc.a/tc.heads)))
		got := make([]float32, T*tc.a)
		Attention(d, got, make([]float32, ProbsLen(offsets, tc.heads)), qkv, offsets, tc.heads, tc.a, scale)

		packed := devMat(t, d, T, 3*tc.a, qkv)
		out := devMat(t, d, T, tc.a, nil)
		q, k, v := packed.Colsl(0, tc.a), packed.Colsl(tc.a, 2*tc.a), packed.Colsl(2*tc.a, 3*tc.a)
		if err := d.Attention(out, q, k, v, tc.heads, offsets, scale); err != nil {
			t.Fatal(err)
		}
		maxAbsDiff(t, "Attention vs device", got, download(t, d, out), 1e-5)

		ref := refAttention64(qkv, offsets, tc.heads, tc.a, float64(scale))
		ref32 := make([]float32, len(ref))
		for i, v := range ref {
			ref32[i] = float32(v)
		}
		maxAbsDiff(t, "Attention vs float64", got, ref32, 1e-5)
	}
}

// TestAttentionConcurrent runs two backward passes on their own devices
// side by side (under -race: the shared scratch list).
func TestAttentionConcurrent(t *testing.T) {
	const heads, a = 2, 8
	offsets := offsetsOf(9, 3, 17)
	T := offsets[len(offsets)-1]
	rng := newRNG(12)
	qkv := randSlice(rng, T*3*a, 1)
	dout := randSlice(rng, T*a, 1)
	run := func(b BLAS) []float32 {
		out := make([]float32, T*a)
		probs := make([]float32, ProbsLen(offsets, heads))
		dqkv := make([]float32, len(qkv))
		for range 20 {
			Attention(b, out, probs, qkv, offsets, heads, a, 0.3)
			clear(dqkv)
			AttentionBackward(b, dqkv, dout, qkv, probs, offsets, heads, a, 0.3)
		}
		return dqkv
	}
	want := run(testDevice(t))
	var wg sync.WaitGroup
	got := make([][]float32, 2)
	for i := range got {
		b := testDevice(t)
		wg.Go(func() { got[i] = run(b) })
	}
	wg.Wait()
	for i := range got {
		maxAbsDiff(t, "concurrent dqkv", got[i], want, 0)
	}
}

func BenchmarkAttentionBackward(b *testing.B) {
	const heads, a, seqLen, seqs = 12, 768, 64, 16
	lens := make([]int, seqs)
	for i := range lens {
		lens[i] = seqLen
	}
	offsets := offsetsOf(lens...)
	T := offsets[len(offsets)-1]
	rng := newRNG(13)
	qkv, dout := randSlice(rng, T*3*a, 1), randSlice(rng, T*a, 1)
	out, dqkv := make([]float32, T*a), make([]float32, T*3*a)
	probs := make([]float32, ProbsLen(offsets, heads))
	dev := testDevice(b)
	Attention(dev, out, probs, qkv, offsets, heads, a, 0.125)
	iters := 0
	for b.Loop() {
		AttentionBackward(dev, dqkv, dout, qkv, probs, offsets, heads, a, 0.125)
		iters++
	}
	b.ReportMetric(float64(T*iters)/b.Elapsed().Seconds(), "tokens/s")
}
