package gpu

import (
	"errors"
	"math"
	"testing"
)

type fakeBuf int

func (b *fakeBuf) Len() int       { return int(*b) }
func (b *fakeBuf) Device() Device { return nil }

func newFake(n int) *fakeBuf { b := fakeBuf(n); return &b }

func TestCheckMat(t *testing.T) {
	b := newFake(100)
	for _, tc := range []struct {
		m  Mat
		ok bool
	}{
		{NewMat(b, 10, 10), true},
		{NewMat(b, 10, 10).Rowsl(2, 5).Colsl(3, 7), true},
		{Mat{Buf: b, Off: 99, Rows: 1, Cols: 1, Stride: 1}, true},
		{Mat{Buf: b, Off: 99, Rows: 1, Cols: 2, Stride: 2}, false},
		{Mat{Buf: b, Off: 0, Rows: 11, Cols: 9, Stride: 9}, true},
		{Mat{Buf: b, Off: 1, Rows: 11, Cols: 9, Stride: 9}, true},
		{Mat{Buf: b, Off: 2, Rows: 11, Cols: 9, Stride: 9}, false},
		{Mat{Buf: b, Rows: 2, Cols: 5, Stride: 4}, false},
		{Mat{Buf: b, Rows: 0, Cols: 5, Stride: 0}, true},
		{Mat{Rows: 0, Cols: 5}, true},
		{Mat{Rows: 1, Cols: 5, Stride: 5}, false},
		{Mat{Buf: b, Rows: -1, Cols: 5, Stride: 5}, false},
		{Mat{Buf: b, Off: -1, Rows: 1, Cols: 5, Stride: 5}, false},
		{Mat{Buf: b, Rows: 3, Cols: 1, Stride: math.MaxInt / 2}, false},
		{Mat{Buf: b, Off: math.MaxInt, Rows: 1, Cols: 1, Stride: 1}, false},
	} {
		err := CheckMat("m", tc.m)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrShape)) {
			t.Errorf("CheckMat(%s) = %v", matString(tc.m), err)
		}
	}
}

func TestOverlap(t *testing.T) {
	b, c := newFake(1000), newFake(1000)
	x := NewMat(b, 10, 30)
	for _, tc := range []struct {
		a, b Mat
		want bool
	}{
		{x.Colsl(0, 10), x.Colsl(10, 20), false},          // side by side
		{x.Colsl(0, 11), x.Colsl(10, 20), true},           // one shared column
		{x.Rowsl(0, 5), x.Rowsl(5, 10), false},            // stacked
		{x.Rowsl(0, 6), x.Rowsl(5, 10), true},             // one shared row
		{x, NewMat(c, 10, 30), false},                     // other buffer
		{x.Rowsl(2, 3), x.Colsl(5, 6), true},              // a row crossing a column
		{x.Rowsl(2, 3).Colsl(0, 5), x.Colsl(5, 6), false}, // a row beside a column
		{x.Colsl(0, 0), x, false},                         // empty
		{NewMat(b, 10, 30).Reshape(30, 10), x.Colsl(0, 1), true},
		{Mat{Buf: b, Off: 300, Rows: 2, Cols: 10, Stride: 20}, x.Colsl(0, 10), false}, // beyond the span
		{Mat{Buf: b, Off: 5, Rows: 2, Cols: 10, Stride: 17}, x.Colsl(20, 30), true},   // conservative
	} {
		if got := Overlap(tc.a, tc.b); got != tc.want {
			t.Errorf("Overlap(%s, %s) = %v", matString(tc.a), matString(tc.b), got)
		}
		if got := Overlap(tc.b, tc.a); got != tc.want {
			t.Errorf("Overlap(%s, %s) = %v (swapped)", matString(tc.b), matString(tc.a), got)
		}
	}
	if !Same(x.Rowsl(1, 2), Mat{Buf: b, Off: 30, Rows: 1, Cols: 30, Stride: 99}) || Same(x, x.Colsl(0, 29)) {
		t.Error("Same")
	}
	if err := CheckDisjoint("y", x, true, x); err != nil {
		t.Errorf("CheckDisjoint same: %v", err)
	}
	if err := CheckDisjoint("y", x, false, x); !errors.Is(err, ErrShape) {
		t.Errorf("CheckDisjoint same, not allowed: %v", err)
	}
}

func TestCheckBatch(t *testing.T) {
	b := newFake(1000)
	x := NewMat(b, 10, 40)
	head := x.Colsl(0, 8)
	for _, tc := range []struct {
		name            string
		m               Mat
		stride, batch   int
		distinct, ok    bool
		spanRows, spanC int
	}{
		{"heads side by side", head, 8, 5, true, true, 10, 40},
		{"heads overlapping", head, 4, 5, true, false, 0, 0},
		{"heads past the row", head, 8, 6, true, false, 0, 0},
		{"stacked", NewMat(b, 2, 40), 80, 5, true, true, 10, 40},
		{"broadcast input", head, 0, 7, false, true, 10, 8},
		{"broadcast output", head, 0, 7, true, false, 0, 0},
		{"past the buffer", NewMat(b, 2, 40), 80, 13, false, false, 0, 0},
		{"negative stride", head, -8, 2, false, false, 0, 0},
		{"overflow", head, math.MaxInt / 2, 3, false, false, 0, 0},
	} {
		err := CheckBatch("m", tc.m, tc.stride, tc.batch, tc.distinct)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrShape)) {
			t.Errorf("%s: CheckBatch = %v", tc.name, err)
		}
		if tc.ok {
			s := BatchSpan(tc.m, tc.stride, tc.batch)
			if s.Rows != tc.spanRows || s.Cols != tc.spanC {
				t.Errorf("%s: BatchSpan = %s", tc.name, matString(s))
			}
		}
	}
}

func TestCheckOffsetsIDs(t *testing.T) {
	if err := CheckOffsets([]int{0, 3, 3, 10}, 10, true); err != nil {
		t.Error(err)
	}
	if err := CheckOffsets([]int{2, 3}, 10, false); err != nil {
		t.Error(err)
	}
	for _, o := range [][]int{{0, 4, 3, 10}, {-1, 10}, {0, 11}} {
		if err := CheckOffsets(o, 10, false); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("%v: %v", o, err)
		}
	}
	for _, o := range [][]int{nil, {1, 10}, {0, 9}} {
		if err := CheckOffsets(o, 10, true); !errors.Is(err, ErrShape) {
			t.Errorf("%v: %v", o, err)
		}
	}
	if err := CheckIDs([]int32{0, 9, math.MinInt32}, 10); !errors.Is(err, ErrOutOfRange) || err.Error() != "gpu: index out of range: ids[2] = -2147483648, table has 10 rows" {
		t.Errorf("CheckIDs: %v", err)
	}
	if err := CheckActivation(ActTanh + 1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("CheckActivation: %v", err)
	}
	if ActGELU.String() != "gelu" || Activation(9).String() != "Activation(9)" {
		t.Error("Activation.String")
	}
}
