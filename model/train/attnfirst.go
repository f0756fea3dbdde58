package train

// Attention for the first row of each sequence only: what a [CLS]-pooled
// model's last layer needs (every later step of that layer reads only the
// first rows). Keys and values still cover every row. Layouts as in
// Attention; out is [S, a] (one row per sequence) and probs holds heads*n
// floats per sequence (FirstProbsLen).

// FirstProbsLen is the length of the probabilities AttentionFirst saves.
func FirstProbsLen(offsets []int, heads int) int {
	return heads * offsets[len(offsets)-1]
}

// AttentionFirst sets out row s to softmax(scale * q_first k^T) v for
// sequence s's first row, per head.
func AttentionFirst(b BLAS, out, probs, qkv []float32, offsets []int, heads, a int, scale float32) {
	dh := a / heads
	ld := 3 * a
	po := 0
	for s := 0; s+1 < len(offsets); s++ {
		base, n := offsets[s], offsets[s+1]-offsets[s]
		for h := 0; h < heads; h++ {
			p := probs[po : po+n]
			po += n
			q := qkv[base*ld+h*dh:]
			b.Sgemm(false, true, 1, n, dh, scale, q, ld, qkv[base*ld+a+h*dh:], ld, 0, p, n)
			softmaxRow(p)
			b.Sgemm(false, false, 1, dh, n, 1, p, n, qkv[base*ld+2*a+h*dh:], ld, 0, out[s*a+h*dh:], a)
		}
	}
}

// AttentionFirstBackward accumulates into dqkv the gradients of the first
// rows' queries and of every row's keys and values, given dout ([S, a]).
// scratch must hold at least the longest sequence's length.
func AttentionFirstBackward(b BLAS, dqkv, dout, qkv, probs []float32, offsets []int, heads, a int, scale float32, scratch []float32) {
	dh := a / heads
	ld := 3 * a
	po := 0
	for s := 0; s+1 < len(offsets); s++ {
		base, n := offsets[s], offsets[s+1]-offsets[s]
		for h := 0; h < heads; h++ {
			p := probs[po : po+n]
			po += n
			do := dout[s*a+h*dh : s*a+(h+1)*dh]
			// dV += p^T dO (outer product), dP = dO V^T.
			b.Sgemm(true, false, n, dh, 1, 1, p, n, do, dh, 1, dqkv[base*ld+2*a+h*dh:], ld)
			dp := scratch[:n]
			b.Sgemm(false, true, 1, n, dh, 1, do, dh, qkv[base*ld+2*a+h*dh:], ld, 0, dp, n)
			var dot float64
			for j := range dp {
				dot += float64(p[j]) * float64(dp[j])
			}
			for j := range dp {
				dp[j] = p[j] * (dp[j] - float32(dot))
			}
			// dq_first += scale dS K; dK += scale dS^T q_first.
			b.Sgemm(false, false, 1, dh, n, scale, dp, n, qkv[base*ld+a+h*dh:], ld, 1, dqkv[base*ld+h*dh:], ld)
			b.Sgemm(true, false, n, dh, 1, scale, dp, n, qkv[base*ld+h*dh:], ld, 1, dqkv[base*ld+a+h*dh:], ld)
		}
	}
}
