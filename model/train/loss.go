package train

import (
	"fmt"
	"math"
)

// SoftmaxCrossEntropy is the mean over rows of -log softmax(logits)[label]
// for logits [rows, classes], computed in float64. probs, if not nil, gets
// the softmax; dlogits, if not nil, is overwritten with the gradient of the
// mean loss, (softmax - onehot)/rows. A label outside [0, classes) panics.
func SoftmaxCrossEntropy(probs, dlogits, logits []float32, labels []int, rows, classes int) float64 {
	if rows == 0 || classes == 0 {
		return 0
	}
	invRows := 1 / float64(rows)
	var loss float64
	for r := 0; r < rows; r++ {
		y := labels[r]
		if y < 0 || y >= classes {
			panic(fmt.Sprintf("train: SoftmaxCrossEntropy: label %d of row %d is outside [0, %d)", y, r, classes))
		}
		z := logits[r*classes : (r+1)*classes]
		m := z[0]
		for _, v := range z[1:] {
			if v > m {
				m = v
			}
		}
		mf := float64(m)
		var sum float64
		for _, v := range z {
			sum += math.Exp(float64(v) - mf)
		}
		lse := math.Log(sum)
		loss += lse - (float64(z[y]) - mf)
		if probs == nil && dlogits == nil {
			continue
		}
		inv := 1 / sum
		for j, v := range z {
			p := math.Exp(float64(v)-mf) * inv
			if probs != nil {
				probs[r*classes+j] = float32(p)
			}
			if dlogits != nil {
				if j == y {
					p--
				}
				dlogits[r*classes+j] = float32(p * invRows)
			}
		}
	}
	return loss * invRows
}

// SupConLoss is the supervised contrastive loss (Khosla et al. 2020, the
// L_out form) of the rows of emb ([rows, dim], L2-normalised by the caller)
// with similarities s_ij = emb_i.emb_j / temperature: for each anchor i with
// at least one positive (another row of its label),
//
//	L_i = -1/|P(i)| sum_{p in P(i)} log( e^{s_ip} / sum_{j != i} e^{s_ij} )
//
// and the loss is the mean of L_i over those anchors (0 if there are none).
// demb, if not nil, is overwritten with the gradient with respect to emb as
// given (the normalisation's backward is a separate op). Computed in
// float64; it costs rows^2*dim, meant for minibatches of up to a few
// hundred rows. temperature must be positive.
func SupConLoss(demb, emb []float32, labels []int, rows, dim int, temperature float32) float64 {
	if demb != nil {
		clear(demb[:rows*dim])
	}
	if rows < 2 {
		return 0
	}
	if !(temperature > 0) {
		panic(fmt.Sprintf("train: SupConLoss: temperature %g is not positive", temperature))
	}
	invT := 1 / float64(temperature)
	// g holds the logits z_ij = s_ij/T, then dL/ds_ij.
	g := make([]float64, rows*rows)
	for i := 0; i < rows; i++ {
		ei := emb[i*dim : (i+1)*dim]
		for j := i + 1; j < rows; j++ {
			z := dot64(ei, emb[j*dim:(j+1)*dim]) * invT
			g[i*rows+j], g[j*rows+i] = z, z
		}
	}
	anchors := 0
	var loss float64
	for i := 0; i < rows; i++ {
		pos := 0
		for j := 0; j < rows; j++ {
			if j != i && labels[j] == labels[i] {
				pos++
			}
		}
		row := g[i*rows : (i+1)*rows]
		if pos == 0 {
			clear(row)
			continue
		}
		anchors++
		m := math.Inf(-1)
		for j, z := range row {
			if j != i && z > m {
				m = z
			}
		}
		var sum, sumPos float64
		for j, z := range row {
			if j == i {
				continue
			}
			sum += math.Exp(z - m)
			if labels[j] == labels[i] {
				sumPos += z - m
			}
		}
		lse := math.Log(sum)
		loss += lse - sumPos/float64(pos)
		// dL_i/dz_ij = softmax_j - [j positive]/|P(i)|, times 1/T for s_ij;
		// the 1/anchors of the mean is applied below.
		invSum, invPos := 1/sum, 1/float64(pos)
		for j, z := range row {
			if j == i {
				row[j] = 0
				continue
			}
			d := math.Exp(z-m) * invSum
			if labels[j] == labels[i] {
				d -= invPos
			}
			row[j] = d * invT
		}
	}
	if anchors == 0 {
		return 0
	}
	scale := 1 / float64(anchors)
	if demb != nil {
		// s_ij = e_i.e_j, so dL/de_i = sum_j (G_ij + G_ji) e_j.
		acc := make([]float64, dim)
		for i := 0; i < rows; i++ {
			clear(acc)
			for j := 0; j < rows; j++ {
				c := g[i*rows+j] + g[j*rows+i]
				if c == 0 {
					continue
				}
				for k, v := range emb[j*dim : (j+1)*dim] {
					acc[k] += c * float64(v)
				}
			}
			d := demb[i*dim : (i+1)*dim]
			for k, v := range acc {
				d[k] = float32(v * scale)
			}
		}
	}
	return loss * scale
}

func dot64(a, b []float32) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	j := 0
	for ; j+4 <= len(a); j += 4 {
		s0 += float64(a[j]) * float64(b[j])
		s1 += float64(a[j+1]) * float64(b[j+1])
		s2 += float64(a[j+2]) * float64(b[j+2])
		s3 += float64(a[j+3]) * float64(b[j+3])
	}
	for ; j < len(a); j++ {
		s0 += float64(a[j]) * float64(b[j])
	}
	return (s0 + s1) + (s2 + s3)
}
