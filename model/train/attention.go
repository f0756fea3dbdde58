package train

import "github.com/smile-vplm/smile/gpu/cpu"

// Packed ragged multi-head attention. qkv is [T, 3a] with columns q|k|v;
// head h uses columns h*dh..(h+1)*dh of each (dh = a/heads); sequence s owns
// rows offsets[s]..offsets[s+1] and attends only within itself. Every
// product is one GEMM per (sequence, head) on strided views of qkv (leading
// dimension 3a), so nothing is copied or padded.

// ProbsLen is the length of the probabilities Attention saves:
// heads*n*n for each sequence of n rows.
func ProbsLen(offsets []int, heads int) int {
	total := 0
	for s := 0; s+1 < len(offsets); s++ {
		n := offsets[s+1] - offsets[s]
		total += heads * n * n
	}
	return total
}

// Attention sets out ([T, a]) to softmax(scale * q k^T) v per sequence and
// head, saving the softmax probabilities in probs (ProbsLen long; for
// sequence s, heads blocks of n x n, row i holding query i's weights; the
// sequences one after another). The softmax is gpu/cpu's (max-shifted,
// the exponentials summed in float64).
func Attention(b BLAS, out, probs, qkv []float32, offsets []int, heads, a int, scale float32) {
	if heads <= 0 || a == 0 {
		return
	}
	dh := a / heads
	ld := 3 * a
	po := 0
	for s := 0; s+1 < len(offsets); s++ {
		base, n := offsets[s], offsets[s+1]-offsets[s]
		if n == 0 {
			continue
		}
		for h := 0; h < heads; h++ {
			p := probs[po : po+n*n]
			po += n * n
			q := qkv[base*ld+h*dh:]
			k := qkv[base*ld+a+h*dh:]
			v := qkv[base*ld+2*a+h*dh:]
			b.Sgemm(false, true, n, n, dh, scale, q, ld, k, ld, 0, p, n)
			for i := 0; i < n; i++ {
				softmaxRow(p[i*n : (i+1)*n])
			}
			b.Sgemm(false, false, n, dh, n, 1, p, n, v, ld, 0, out[base*a+h*dh:], a)
		}
	}
}

// AttentionBackward accumulates into dqkv ([T, 3a], laid out as qkv) the
// gradients of q, k and v given dout ([T, a]) and the probabilities saved by
// Attention. Per sequence and head, with P the probabilities:
//
//	dV += P^T dO
//	dP  = dO V^T
//	dS  = P ⊙ (dP - rowsum(P ⊙ dP))
//	dQ += scale * dS K
//	dK += scale * dS^T Q
//
// dP/dS live in an n x n scratch taken from the package's free list, so
// the call allocates nothing once warm and is safe on several goroutines.
func AttentionBackward(b BLAS, dqkv, dout, qkv, probs []float32, offsets []int, heads, a int, scale float32) {
	if dqkv == nil || heads <= 0 || a == 0 {
		return
	}
	dh := a / heads
	ld := 3 * a
	maxN := 0
	for s := 0; s+1 < len(offsets); s++ {
		maxN = max(maxN, offsets[s+1]-offsets[s])
	}
	if maxN == 0 {
		return
	}
	sc := getScratch()
	defer putScratch(sc)
	buf := sc.floats32(maxN * maxN)
	po := 0
	for s := 0; s+1 < len(offsets); s++ {
		base, n := offsets[s], offsets[s+1]-offsets[s]
		if n == 0 {
			continue
		}
		ds := buf[:n*n]
		for h := 0; h < heads; h++ {
			p := probs[po : po+n*n]
			po += n * n
			off := base*ld + h*dh
			q, k, v := qkv[off:], qkv[off+a:], qkv[off+2*a:]
			dq, dk, dv := dqkv[off:], dqkv[off+a:], dqkv[off+2*a:]
			do := dout[base*a+h*dh:]
			b.Sgemm(true, false, n, dh, n, 1, p, n, do, a, 1, dv, ld)
			b.Sgemm(false, true, n, n, dh, 1, do, a, v, ld, 0, ds, n)
			for i := 0; i < n; i++ {
				pr := p[i*n : (i+1)*n]
				dr := ds[i*n : (i+1)*n]
				var dot float64
				for j, pv := range pr {
					dot += float64(pv) * float64(dr[j])
				}
				for j, pv := range pr {
					dr[j] = float32(float64(pv) * (float64(dr[j]) - dot))
				}
			}
			b.Sgemm(false, false, n, dh, n, scale, ds, n, k, ld, 1, dq, ld)
			b.Sgemm(true, false, n, dh, n, scale, ds, n, q, ld, 1, dk, ld)
		}
	}
}

// softmaxRow replaces v by its softmax, exactly as gpu/cpu's kernel.
func softmaxRow(v []float32) { cpu.SoftmaxHost(v) }
