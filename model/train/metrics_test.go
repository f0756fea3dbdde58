package train

import (
	"math"
	"testing"
)

func TestEvaluate(t *testing.T) {
	// Four classes; class 3 never occurs (left out of the macro average).
	gold := []int{0, 0, 0, 1, 1, 2, 2, 2, 2, 0}
	pred := []int{0, 0, 1, 1, 2, 2, 2, 0, 2, -1}
	m := Evaluate(pred, gold, 4)
	want := [][]int{
		{2, 1, 0, 0}, // the -1 prediction stays out
		{0, 1, 1, 0},
		{1, 0, 3, 0},
		{0, 0, 0, 0},
	}
	for g := range want {
		for p := range want[g] {
			if m.Confusion[g][p] != want[g][p] {
				t.Fatalf("confusion %v, want %v", m.Confusion, want)
			}
		}
	}
	if m.N != 10 || m.Accuracy != 0.6 {
		t.Fatalf("N %d accuracy %v, want 10, 0.6", m.N, m.Accuracy)
	}
	// Class 0: TP 2, FP 1, FN 2 -> 4/7. Class 1: TP 1, FP 1, FN 1 -> 1/2.
	// Class 2: TP 3, FP 1, FN 1 -> 6/8.
	if f1 := (4.0/7 + 0.5 + 0.75) / 3; math.Abs(m.MacroF1-f1) > 1e-12 {
		t.Fatalf("macro-F1 %v, want %v", m.MacroF1, f1)
	}

	// A class only ever predicted counts, with F1 0.
	m = Evaluate([]int{1, 1}, []int{0, 1}, 2)
	if math.Abs(m.MacroF1-(0+2.0/3)/2) > 1e-12 || m.Accuracy != 0.5 {
		t.Fatalf("predicted-only class: %+v", m)
	}
	m = Evaluate(nil, nil, 3)
	if m.N != 0 || m.Accuracy != 0 || m.MacroF1 != 0 || len(m.Confusion) != 3 {
		t.Fatalf("empty: %+v", m)
	}
}

func TestArgmax(t *testing.T) {
	nan := float32(math.NaN())
	for _, tc := range []struct {
		p    []float32
		want int
	}{
		{nil, -1},
		{[]float32{3}, 0},
		{[]float32{1, 3, 2}, 1},
		{[]float32{5, 5, 1}, 0},
		{[]float32{-2, -1, -3}, 1},
		{[]float32{nan, 1, 2}, 2},
		{[]float32{1, nan, 0}, 0},
		{[]float32{nan, nan}, 0},
	} {
		if got := Argmax(tc.p); got != tc.want {
			t.Errorf("Argmax(%v) = %d, want %d", tc.p, got, tc.want)
		}
	}
}
