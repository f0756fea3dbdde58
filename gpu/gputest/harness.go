// Package gputest is the conformance suite for gpu.Device implementations:
// Run checks every method of a device against naive float64 references on
// random shapes, strided views, transposes, odd sizes and error cases. Every
// backend's tests call it:
//
//	func TestConformance(t *testing.T) {
//		gputest.Run(t, func(t *testing.T) gpu.Device { ... })
//	}
//
// The suite is deterministic (fixed seeds) and sized to run in a few
// seconds under the race detector.
package gputest

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/smile-vplm/smile/gpu"
)

// env is one subtest's device and random source.
type env struct {
	t   *testing.T
	dev gpu.Device
	rng *rand.Rand
}

func newEnv(t *testing.T, newDev func(t *testing.T) gpu.Device, seed uint64) *env {
	t.Helper()
	return &env{t: t, dev: newDev(t), rng: rand.New(rand.NewPCG(seed, 0x5eed))}
}

// layout says how a test matrix sits in its buffer.
type layout int

const (
	dense   layout = iota // Off 0, Stride = Cols
	offset                // dense after a random prefix
	strided               // a column slice of a wider matrix, itself offset
	rowsl                 // a row slice of a taller, wider matrix
	nLayouts
)

func (l layout) String() string {
	return [...]string{"dense", "offset", "strided", "rowsl"}[l]
}

// tm is a test matrix: a view into its own buffer, whose every element
// (inside and outside the view) starts random, so writes outside the view
// are caught.
type tm struct {
	m      gpu.Mat
	before []float32 // the whole buffer before the operation under test
}

// mat allocates a rows x cols view with layout l, filled with uniform values
// in [lo, hi) (and the rest of the buffer with other random values).
func (e *env) mat(rows, cols int, l layout, lo, hi float64) *tm {
	e.t.Helper()
	var off, stride, total int
	switch l {
	case dense:
		stride, total = cols, rows*cols
	case offset:
		off = 1 + e.rng.IntN(13)
		stride, total = cols, off+rows*cols+e.rng.IntN(5)
	case strided:
		c0 := 1 + e.rng.IntN(5)
		stride = cols + c0 + e.rng.IntN(4)
		off = 3*stride + c0
		total = off + rows*stride
	case rowsl:
		c0 := e.rng.IntN(3)
		stride = cols + c0 + 1
		r0 := 1 + e.rng.IntN(3)
		off = r0*stride + c0
		total = off + (rows+2)*stride
	}
	buf, err := e.dev.Alloc(total)
	if err != nil {
		e.t.Fatalf("Alloc(%d): %v", total, err)
	}
	e.t.Cleanup(func() { e.dev.Free(buf) })
	host := make([]float32, total)
	for i := range host {
		host[i] = float32(lo + (hi-lo)*e.rng.Float64())
	}
	if err := e.dev.Upload(gpu.NewMat(buf, 1, total), host); err != nil {
		e.t.Fatalf("Upload: %v", err)
	}
	return &tm{m: gpu.Mat{Buf: buf, Off: off, Rows: rows, Cols: cols, Stride: stride}, before: host}
}

// fill sets the view's elements (row-major vals) and refreshes before.
func (e *env) fill(x *tm, vals []float32) {
	e.t.Helper()
	if err := e.dev.Upload(x.m, vals); err != nil {
		e.t.Fatalf("Upload: %v", err)
	}
	x.before = e.whole(x)
}

// whole downloads x's entire buffer.
func (e *env) whole(x *tm) []float32 {
	e.t.Helper()
	n := x.m.Buf.Len()
	out := make([]float32, n)
	if err := e.dev.Download(out, gpu.NewMat(x.m.Buf, 1, n)); err != nil {
		e.t.Fatalf("Download: %v", err)
	}
	return out
}

// get returns x's view as float64, row-major, as it was before the operation.
func (x *tm) get() []float64 {
	out := make([]float64, x.m.Rows*x.m.Cols)
	for i := 0; i < x.m.Rows; i++ {
		for j := 0; j < x.m.Cols; j++ {
			out[i*x.m.Cols+j] = float64(x.before[x.m.Off+i*x.m.Stride+j])
		}
	}
	return out
}

func inView(m gpu.Mat, idx int) (i, j int, ok bool) {
	if idx < m.Off || m.Stride == 0 {
		return 0, 0, false
	}
	i, j = (idx-m.Off)/m.Stride, (idx-m.Off)%m.Stride
	return i, j, i < m.Rows && j < m.Cols
}

// tolFunc is the allowed absolute error of element (i, j) whose reference is want.
type tolFunc func(i, j int, want float64) float64

func relTol(rel, abs float64) tolFunc {
	return func(_, _ int, want float64) float64 { return rel*math.Abs(want) + abs }
}

// check compares x's view with want (row-major) and requires every element
// of x's buffer outside the view to be unchanged (bit for bit).
func (e *env) check(what string, x *tm, want []float64, tol tolFunc) {
	e.t.Helper()
	after := e.whole(x)
	bad := 0
	for idx, v := range after {
		i, j, ok := inView(x.m, idx)
		if !ok {
			if math.Float32bits(v) != math.Float32bits(x.before[idx]) {
				e.t.Errorf("%s: element %d outside the %s view changed: %v -> %v", what, idx, viewString(x.m), x.before[idx], v)
				bad++
			}
		} else {
			w := want[i*x.m.Cols+j]
			if d := math.Abs(float64(v) - w); !(d <= tol(i, j, w)) && !(math.IsNaN(w) && math.IsNaN(float64(v))) {
				e.t.Errorf("%s: [%d,%d] = %.9g, want %.9g (error %.3g > %.3g)", what, i, j, v, w, d, tol(i, j, w))
				bad++
			}
		}
		if bad >= 5 {
			e.t.Fatalf("%s: stopping after %d bad elements", what, bad)
		}
	}
	x.before = after
}

// unchanged requires x's whole buffer to be as before (after a failed call).
func (e *env) unchanged(what string, x *tm) {
	e.t.Helper()
	after := e.whole(x)
	for idx, v := range after {
		if math.Float32bits(v) != math.Float32bits(x.before[idx]) {
			e.t.Fatalf("%s: element %d changed by a failed call: %v -> %v", what, idx, x.before[idx], v)
		}
	}
}

func viewString(m gpu.Mat) string {
	return fmt.Sprintf("%dx%d+%d/%d", m.Rows, m.Cols, m.Off, m.Stride)
}

// wantErr requires err to wrap target.
func (e *env) wantErr(what string, err, target error) {
	e.t.Helper()
	if !errors.Is(err, target) {
		e.t.Errorf("%s: got error %v, want %v", what, err, target)
	}
}

// noErr fails the test on err.
func (e *env) noErr(what string, err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
}

// sizes used for random shapes: odd ones around powers of two.
var oddSizes = []int{1, 2, 3, 7, 17, 33, 65}

func (e *env) size() int { return oddSizes[e.rng.IntN(len(oddSizes))] }

func (e *env) layout() layout { return layout(e.rng.IntN(int(nLayouts))) }
