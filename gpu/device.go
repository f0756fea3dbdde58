package gpu

import "context"

// Buffer is device memory holding float32 elements. Buffers are created by
// Device.Alloc and released with Device.Free; a Buffer belongs to exactly one
// device and must only be passed to that device's methods.
type Buffer interface {
	// Len is the number of float32 elements.
	Len() int
	// Device is the device that owns the memory.
	Device() Device
}

// Mat is a row-major matrix view into a Buffer: element (i, j) lives at
// Buf[Off + i*Stride + j]. Views are cheap values; they never own memory.
type Mat struct {
	Buf    Buffer
	Off    int // element offset of (0, 0)
	Rows   int
	Cols   int
	Stride int // elements between the starts of consecutive rows, >= Cols
}

// NewMat views the start of b as a dense rows x cols matrix.
func NewMat(b Buffer, rows, cols int) Mat {
	return Mat{Buf: b, Rows: rows, Cols: cols, Stride: cols}
}

// Rowsl returns rows [r0, r1) of m.
func (m Mat) Rowsl(r0, r1 int) Mat {
	return Mat{Buf: m.Buf, Off: m.Off + r0*m.Stride, Rows: r1 - r0, Cols: m.Cols, Stride: m.Stride}
}

// Colsl returns columns [c0, c1) of m (a strided view).
func (m Mat) Colsl(c0, c1 int) Mat {
	return Mat{Buf: m.Buf, Off: m.Off + c0, Rows: m.Rows, Cols: c1 - c0, Stride: m.Stride}
}

// Reshape views the same dense memory as rows x cols; m must be dense
// (Stride == Cols) and hold exactly rows*cols elements.
func (m Mat) Reshape(rows, cols int) Mat {
	return Mat{Buf: m.Buf, Off: m.Off, Rows: rows, Cols: cols, Stride: cols}
}

// IsZero reports whether m views no buffer.
func (m Mat) IsZero() bool { return m.Buf == nil }

// Activation names an elementwise nonlinearity.
type Activation uint8

const (
	ActNone Activation = iota
	ActReLU
	ActGELU     // exact: x * Phi(x), with erf
	ActGELUTanh // tanh approximation
	ActTanh
)

// Segment is one group of consecutive rows in a segmented GEMM, multiplied by
// its own weight matrix. A segment whose W.IsZero() contributes nothing (a
// zero adapter): its output rows become beta*y, so beta = 1 leaves them
// untouched and beta = 0 sets them to zero.
type Segment struct {
	Rows int
	W    Mat
}

// Device is a compute device: its memory, GEMMs and the kernels a transformer
// needs. All matrices are float32 row-major views (Mat) into the device's own
// buffers. A Device is used by one goroutine at a time (its owner: the device
// actor, a benchmark, a CLI command); implementations parallelise internally
// and own their thread budget, so callers never add goroutines of their own.
//
// Methods return an error wrapping ErrShape for inconsistent dimensions,
// ErrForeignBuffer for a buffer of another device, ErrOutOfRange for a bad
// index, and ErrOutOfMemory when an allocation cannot be served.
type Device interface {
	// Name identifies the backend, e.g. "cpu/openblas", "cpu/purego", "cuda:0".
	Name() string
	// Threads is the number of OS threads the device computes with.
	Threads() int

	Alloc(n int) (Buffer, error)
	Free(b Buffer)
	// Upload copies src (row-major, dst.Rows*dst.Cols elements) into dst.
	Upload(dst Mat, src []float32) error
	// Download copies src into dst (row-major, src.Rows*src.Cols elements).
	Download(dst []float32, src Mat) error
	// Copy copies src into dst (same shape).
	Copy(dst, src Mat) error
	// Sync waits for queued work to finish (a no-op on synchronous devices).
	Sync(ctx context.Context) error

	// Gemm computes C = alpha*op(A)*op(B) + beta*C, where op(X) is X or its
	// transpose as tA/tB say. A, B and C are given as stored.
	Gemm(tA, tB bool, alpha float32, a, b Mat, beta float32, c Mat) error
	// GemmStridedBatched runs batch GEMMs; matrix i of each operand starts
	// i*stride elements after the operand's view (whose Rows/Cols/Stride
	// describe every matrix of the batch).
	GemmStridedBatched(tA, tB bool, alpha float32, a Mat, strideA int, b Mat, strideB int,
		beta float32, c Mat, strideC int, batch int) error
	// GemmSegmented multiplies consecutive row groups of x by their own
	// weights: y[seg] = alpha*x[seg]*op(W_seg) + beta*y[seg], where a zero
	// W_seg counts as a zero product (y[seg] = beta*y[seg]; with beta = 0,
	// y is not read). The segments' Rows must add up to x.Rows. This is how
	// each vPLM's rows in a mixed batch meet their own adapter.
	GemmSegmented(tB bool, alpha float32, x Mat, segs []Segment, beta float32, y Mat) error

	// Gather sets dst row i to table row ids[i] (accumulate: adds it).
	Gather(dst, table Mat, ids []int32, accumulate bool) error
	// AddBias adds the 1 x Cols bias to every row of x, then applies act.
	AddBias(x, bias Mat, act Activation) error
	// Activate applies act to every element of x in place.
	Activate(x Mat, act Activation) error
	// Add sets dst = a + b elementwise (dst may alias a or b).
	Add(dst, a, b Mat) error
	// Scale multiplies every element of x by alpha.
	Scale(x Mat, alpha float32) error
	// LayerNorm normalises each row of x over its columns:
	// dst = (x-mean)/sqrt(var+eps)*gamma + beta; gamma/beta are 1 x Cols.
	LayerNorm(dst, x, gamma, beta Mat, eps float32) error
	// Softmax applies a row-wise softmax to x in place. With valid != nil only
	// the first valid[i] columns of row i take part; the rest are set to 0.
	Softmax(x Mat, valid []int32) error
	// L2Normalize scales each row to unit length: x / sqrt(max(sum x^2, eps)).
	L2Normalize(x Mat, eps float32) error
	// MeanPool sets dst row s to the mean of x's rows [offsets[s], offsets[s+1]),
	// dividing by max(count, 1) so an empty segment gives zeros.
	MeanPool(dst, x Mat, offsets []int) error
	// Attention is packed (ragged) multi-head scaled dot-product attention:
	// sequence s owns rows [offsets[s], offsets[s+1]) of q, k, v and out; each
	// of the heads uses Cols/heads consecutive columns. Rows attend only to
	// rows of their own sequence: no padding is ever computed.
	// out = softmax(scale * q k^T) v per sequence and head.
	Attention(out, q, k, v Mat, heads int, offsets []int, scale float32) error
}
