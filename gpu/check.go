package gpu

import (
	"fmt"
	"math"
)

// Shape checks shared by every backend, so that all of them reject the same
// inputs with the same errors. Each returns an error wrapping ErrShape or
// ErrOutOfRange; the caller adds the method name.

// Span is the number of elements from m.Off to one past m's last element, or
// 0 when m has no elements.
func Span(m Mat) int {
	if m.Rows <= 0 || m.Cols <= 0 {
		return 0
	}
	return (m.Rows-1)*m.Stride + m.Cols
}

// CheckMat reports whether m is a well-formed view that lies inside its
// buffer: non-negative geometry, Stride >= Cols, and every element below
// Buf.Len(). A view with no elements may have a nil Buf.
func CheckMat(name string, m Mat) error {
	if m.Rows < 0 || m.Cols < 0 || m.Off < 0 || m.Stride < 0 {
		return fmt.Errorf("%w: %s has negative geometry (%s)", ErrShape, name, matString(m))
	}
	if m.Rows == 0 || m.Cols == 0 {
		return nil
	}
	if m.Buf == nil {
		return fmt.Errorf("%w: %s (%dx%d) has no buffer", ErrShape, name, m.Rows, m.Cols)
	}
	if m.Stride < m.Cols {
		return fmt.Errorf("%w: %s has stride %d < cols %d", ErrShape, name, m.Stride, m.Cols)
	}
	n := m.Buf.Len()
	// Off + (Rows-1)*Stride + Cols <= n, without overflow.
	if m.Off > n || m.Cols > n-m.Off ||
		(m.Rows > 1 && (m.Stride == 0 || m.Rows-1 > (n-m.Off-m.Cols)/m.Stride)) {
		return fmt.Errorf("%w: %s (%s) exceeds its buffer of %d elements", ErrShape, name, matString(m), n)
	}
	return nil
}

func matString(m Mat) string {
	return fmt.Sprintf("%dx%d, off %d, stride %d", m.Rows, m.Cols, m.Off, m.Stride)
}

// CheckSameShape requires b to have a's rows and columns.
func CheckSameShape(an string, a Mat, bn string, b Mat) error {
	if a.Rows != b.Rows || a.Cols != b.Cols {
		return fmt.Errorf("%w: %s is %dx%d, %s is %dx%d", ErrShape, an, a.Rows, a.Cols, bn, b.Rows, b.Cols)
	}
	return nil
}

// CheckRowVector requires v to be 1 x cols (a bias, gamma or beta).
func CheckRowVector(name string, v Mat, cols int) error {
	if v.Rows != 1 || v.Cols != cols {
		return fmt.Errorf("%w: %s is %dx%d, want 1x%d", ErrShape, name, v.Rows, v.Cols, cols)
	}
	return nil
}

// GemmDims returns the m, n, k of C = op(A) op(B) and checks that the three
// operands agree.
func GemmDims(tA, tB bool, a, b, c Mat) (m, n, k int, err error) {
	m, k = a.Rows, a.Cols
	if tA {
		m, k = k, m
	}
	kb, n := b.Rows, b.Cols
	if tB {
		kb, n = n, kb
	}
	if kb != k || c.Rows != m || c.Cols != n {
		return 0, 0, 0, fmt.Errorf("%w: op(A) is %dx%d, op(B) is %dx%d, C is %dx%d",
			ErrShape, m, k, kb, n, c.Rows, c.Cols)
	}
	return m, n, k, nil
}

// Overlap reports whether a and b may share an element. It is exact for views
// of the same buffer with the same stride (column slices of one matrix, for
// example) and for single rows, and conservative (true when their element
// ranges intersect) otherwise.
func Overlap(a, b Mat) bool {
	if a.Buf == nil || b.Buf == nil || a.Buf != b.Buf {
		return false
	}
	sa, sb := Span(a), Span(b)
	if sa == 0 || sb == 0 {
		return false
	}
	if a.Off+sa <= b.Off || b.Off+sb <= a.Off {
		return false
	}
	// A single row is the same view under any stride.
	strideA, strideB := a.Stride, b.Stride
	if a.Rows == 1 {
		strideA = strideB
	}
	if b.Rows == 1 {
		strideB = strideA
	}
	if strideA != strideB || strideA <= 0 {
		return true
	}
	s := strideA
	ar, ac := a.Off/s, a.Off%s
	br, bc := b.Off/s, b.Off%s
	if ac+a.Cols > s || bc+b.Cols > s {
		return true // a view that wraps around rows
	}
	return ar < br+b.Rows && br < ar+a.Rows && ac < bc+b.Cols && bc < ac+a.Cols
}

// Same reports whether a and b view exactly the same elements.
func Same(a, b Mat) bool {
	if a.Buf != b.Buf || a.Off != b.Off || a.Rows != b.Rows || a.Cols != b.Cols {
		return false
	}
	return a.Rows <= 1 || a.Stride == b.Stride
}

// CheckDisjoint requires out not to share elements with any of ins, except
// that out may be exactly the same view as an input when sameOK is set (an
// in-place elementwise operation).
func CheckDisjoint(outName string, out Mat, sameOK bool, ins ...Mat) error {
	for _, in := range ins {
		if sameOK && Same(out, in) {
			continue
		}
		if Overlap(out, in) {
			return fmt.Errorf("%w: %s overlaps an input (%s vs %s)", ErrShape, outName, matString(out), matString(in))
		}
	}
	return nil
}

// BatchSpan is the view that covers batch matrices shaped like m, matrix i
// starting i*stride elements after m.Off, as one block of rows at m's stride
// when that is exact, else as one contiguous row. It is used for overlap
// checks between whole batches.
func BatchSpan(m Mat, stride, batch int) Mat {
	if batch <= 1 || Span(m) == 0 {
		return m
	}
	if m.Stride > 0 && stride%m.Stride == 0 {
		return Mat{Buf: m.Buf, Off: m.Off, Rows: m.Rows + (batch-1)*(stride/m.Stride), Cols: m.Cols, Stride: m.Stride}
	}
	if m.Stride > 0 && m.Off%m.Stride+(batch-1)*stride+m.Cols <= m.Stride {
		// Side by side in the same rows (heads of one matrix).
		return Mat{Buf: m.Buf, Off: m.Off, Rows: m.Rows, Cols: (batch-1)*stride + m.Cols, Stride: m.Stride}
	}
	n := (batch-1)*stride + Span(m)
	return Mat{Buf: m.Buf, Off: m.Off, Rows: 1, Cols: n, Stride: n}
}

// CheckBatch checks a strided batch of matrices shaped like m: a
// non-negative stride, every matrix inside the buffer, and, when distinct
// is set (outputs), no two matrices sharing an element.
func CheckBatch(name string, m Mat, stride, batch int, distinct bool) error {
	if err := CheckMat(name, m); err != nil {
		return err
	}
	if stride < 0 {
		return fmt.Errorf("%w: %s has negative batch stride %d", ErrShape, name, stride)
	}
	if batch <= 1 || Span(m) == 0 {
		return nil
	}
	if stride > 0 && batch-1 > (math.MaxInt-m.Off-Span(m))/stride {
		return fmt.Errorf("%w: %s batch of %d with stride %d overflows", ErrShape, name, batch, stride)
	}
	last := m
	last.Off += (batch - 1) * stride
	if err := CheckMat(name, last); err != nil {
		return fmt.Errorf("%w (matrix %d of the batch)", err, batch-1)
	}
	if !distinct {
		return nil
	}
	switch {
	case stride >= Span(m):
	case m.Off%m.Stride+(batch-1)*stride+m.Cols <= m.Stride && stride >= m.Cols:
		// side by side in the same rows
	case stride%m.Stride == 0 && stride/m.Stride >= m.Rows:
		// stacked rows
	default:
		return fmt.Errorf("%w: %s batch matrices overlap (stride %d, %s)", ErrShape, name, stride, matString(m))
	}
	return nil
}

// CheckOffsets checks ragged sequence offsets over rows: non-decreasing,
// inside [0, rows], and, when cover is set, starting at 0 and ending at rows.
func CheckOffsets(offsets []int, rows int, cover bool) error {
	if len(offsets) == 0 {
		return fmt.Errorf("%w: no offsets (want len(offsets) = sequences+1)", ErrShape)
	}
	prev := 0
	for i, o := range offsets {
		if o < 0 || o > rows || o < prev {
			return fmt.Errorf("%w: offsets[%d] = %d (previous %d, rows %d)", ErrOutOfRange, i, o, prev, rows)
		}
		prev = o
	}
	if cover && (offsets[0] != 0 || offsets[len(offsets)-1] != rows) {
		return fmt.Errorf("%w: offsets cover rows [%d, %d), want [0, %d)",
			ErrShape, offsets[0], offsets[len(offsets)-1], rows)
	}
	return nil
}

// CheckIDs checks that every id indexes one of rows table rows.
func CheckIDs(ids []int32, rows int) error {
	for i, id := range ids {
		if id < 0 || int(id) >= rows {
			return fmt.Errorf("%w: ids[%d] = %d, table has %d rows", ErrOutOfRange, i, id, rows)
		}
	}
	return nil
}

// CheckActivation rejects an unknown Activation.
func CheckActivation(act Activation) error {
	if act > ActTanh {
		return fmt.Errorf("%w: unknown activation %d", ErrOutOfRange, act)
	}
	return nil
}

// String names the activation.
func (a Activation) String() string {
	switch a {
	case ActNone:
		return "none"
	case ActReLU:
		return "relu"
	case ActGELU:
		return "gelu"
	case ActGELUTanh:
		return "gelu_tanh"
	case ActTanh:
		return "tanh"
	}
	return fmt.Sprintf("Activation(%d)", uint8(a))
}
