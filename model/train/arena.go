package train

// arena hands out float32 scratch for one step's activations and
// gradients from one reusable buffer. A step that needs more than the
// buffer holds gets fresh slices and the buffer grows at the next reset,
// so steady-state steps allocate nothing.
type arena struct {
	buf  []float32
	off  int
	need int // floats the last cycle asked for
}

// reset starts a new cycle, growing the buffer to the last cycle's need.
func (a *arena) reset() {
	if a.need > len(a.buf) {
		a.buf = make([]float32, a.need+a.need/4)
	}
	a.off, a.need = 0, 0
}

// get returns n floats of unspecified content.
func (a *arena) get(n int) []float32 {
	a.need += n
	if a.off+n > len(a.buf) {
		return make([]float32, n)
	}
	s := a.buf[a.off : a.off+n : a.off+n]
	a.off += n
	return s
}

// getZero returns n zeroed floats.
func (a *arena) getZero(n int) []float32 {
	s := a.get(n)
	clear(s)
	return s
}
