package train

import (
	"math"
	"testing"
)

func TestSoftmaxCrossEntropyValue(t *testing.T) {
	// Uniform logits: loss log(C), p = 1/C, dlogits = (1/C - onehot)/rows.
	logits := make([]float32, 2*4)
	probs, dl := make([]float32, 8), make([]float32, 8)
	loss := SoftmaxCrossEntropy(probs, dl, logits, []int{1, 3}, 2, 4)
	if math.Abs(loss-math.Log(4)) > 1e-12 {
		t.Fatalf("loss %v, want log 4", loss)
	}
	for i, p := range probs {
		want := float32(0.25 / 2)
		if i == 1 || i == 7 { // the labels' entries
			want = (0.25 - 1) / 2
		}
		if p != 0.25 || dl[i] != want {
			t.Fatalf("probs %v dlogits %v", probs, dl)
		}
	}
	// Large logits do not overflow: one row [1000, 0] with label 0 costs log(1+e^-1000).
	if loss := SoftmaxCrossEntropy(nil, nil, []float32{1000, 0}, []int{0}, 1, 2); loss != 0 {
		t.Fatalf("confident loss %v", loss)
	}
	if loss := SoftmaxCrossEntropy(nil, nil, []float32{1000, 0}, []int{1}, 1, 2); math.Abs(loss-1000) > 1e-9 {
		t.Fatalf("confidently wrong loss %v, want 1000", loss)
	}
}

func TestSoftmaxCrossEntropyGrad(t *testing.T) {
	const rows, classes = 5, 4
	rng := newRNG(20)
	logits := randSlice(rng, rows*classes, 3)
	labels := []int{0, 3, 1, 1, 2}
	eval := func() float64 { return SoftmaxCrossEntropy(nil, nil, logits, labels, rows, classes) }
	dl := filled(rows*classes, 7) // overwritten, not accumulated
	SoftmaxCrossEntropy(nil, dl, logits, labels, rows, classes)
	checkGrad(t, "SoftmaxCrossEntropy", 0, eval, logits, dl, 1e-3)
}

func TestSupConLossValue(t *testing.T) {
	// Anchors 0 and 1 share a label and point the same way; 2 is alone
	// (skipped as an anchor). With T = 1 each counted anchor costs
	// -log(e^1/(e^1+e^0)) = log(1+e^-1).
	emb := []float32{1, 0, 1, 0, 0, 1}
	loss := SupConLoss(nil, emb, []int{0, 0, 1}, 3, 2, 1)
	if want := math.Log1p(math.Exp(-1)); math.Abs(loss-want) > 1e-12 {
		t.Fatalf("loss %v, want %v", loss, want)
	}
	// No positives anywhere: 0 and a zero gradient.
	demb := filled(6, 3)
	if loss := SupConLoss(demb, emb, []int{0, 1, 2}, 3, 2, 0.1); loss != 0 {
		t.Fatalf("loss without positives %v", loss)
	}
	for _, g := range demb {
		if g != 0 {
			t.Fatalf("gradient without positives %v", demb)
		}
	}
	demb = filled(2, 3)
	if loss := SupConLoss(demb, emb[:2], []int{0}, 1, 2, 0.1); loss != 0 || demb[0] != 0 || demb[1] != 0 {
		t.Fatalf("one row: loss %v, grad %v", loss, demb)
	}
}

func TestSupConLossGrad(t *testing.T) {
	const rows, dim = 7, 5
	rng := newRNG(21)
	emb := randSlice(rng, rows*dim, 1)
	L2Normalize(emb, nil, emb, rows, dim, 1e-12)
	labels := []int{0, 1, 0, 2, 1, 0, 3} // 2 and 3 have no positive
	const temp = 0.5
	eval := func() float64 { return SupConLoss(nil, emb, labels, rows, dim, temp) }
	demb := filled(rows*dim, 7) // overwritten
	SupConLoss(demb, emb, labels, rows, dim, temp)
	checkGrad(t, "SupConLoss", 0, eval, emb, demb, 1e-3)

	// Through the normalisation, as an embed head trains it.
	raw := randSlice(rng, rows*dim, 2)
	y, norm := make([]float32, rows*dim), make([]float32, rows)
	evalRaw := func() float64 {
		L2Normalize(y, norm, raw, rows, dim, 1e-12)
		return SupConLoss(nil, y, labels, rows, dim, temp)
	}
	evalRaw()
	dy := make([]float32, rows*dim)
	SupConLoss(dy, y, labels, rows, dim, temp)
	draw := make([]float32, rows*dim)
	L2NormalizeBackward(draw, dy, y, norm, rows, dim, 1e-12)
	checkGrad(t, "SupConLoss through L2Normalize", 0, evalRaw, raw, draw, 1e-3)
}
