package train

import "fmt"

// Metrics are classification scores over N examples.
type Metrics struct {
	N         int
	Accuracy  float64
	MacroF1   float64
	Confusion [][]int // Confusion[gold][pred]
}

// Evaluate scores predictions against gold labels (both in [0, classes)).
// MacroF1 averages the per-class F1 = 2TP/(2TP+FP+FN) over the classes that
// occur in gold or pred; a class with no true positive scores 0. A
// prediction outside [0, classes) (say -1 for "none") counts as wrong and
// stays out of the confusion matrix; a gold label outside it, or slices of
// different lengths, panic.
func Evaluate(pred, gold []int, classes int) Metrics {
	if len(pred) != len(gold) {
		panic(fmt.Sprintf("train: Evaluate: %d predictions for %d labels", len(pred), len(gold)))
	}
	m := Metrics{N: len(gold), Confusion: make([][]int, classes)}
	cells := make([]int, classes*classes)
	for c := range m.Confusion {
		m.Confusion[c] = cells[c*classes : (c+1)*classes : (c+1)*classes]
	}
	if m.N == 0 {
		return m
	}
	goldN := make([]int, classes) // row sums: TP + FN
	predN := make([]int, classes) // column sums: TP + FP
	correct := 0
	for i, g := range gold {
		if g < 0 || g >= classes {
			panic(fmt.Sprintf("train: Evaluate: gold label %d of example %d is outside [0, %d)", g, i, classes))
		}
		goldN[g]++
		p := pred[i]
		if p < 0 || p >= classes {
			continue
		}
		predN[p]++
		m.Confusion[g][p]++
		if p == g {
			correct++
		}
	}
	m.Accuracy = float64(correct) / float64(m.N)
	var f1 float64
	seen := 0
	for c := 0; c < classes; c++ {
		if goldN[c] == 0 && predN[c] == 0 {
			continue
		}
		seen++
		tp := m.Confusion[c][c]
		if tp > 0 {
			f1 += 2 * float64(tp) / float64(goldN[c]+predN[c]) // 2TP/(2TP+FP+FN)
		}
	}
	if seen > 0 {
		m.MacroF1 = f1 / float64(seen)
	}
	return m
}

// Argmax is the index of the largest element of p (the first of equals,
// NaNs never chosen unless all are NaN, giving 0); -1 for an empty p.
func Argmax(p []float32) int {
	if len(p) == 0 {
		return -1
	}
	best := 0
	for i, v := range p {
		if v > p[best] || (p[best] != p[best] && v == v) {
			best = i
		}
	}
	return best
}
