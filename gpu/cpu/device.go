package cpu

import (
	"context"
	"fmt"
	"math"
	"runtime"

	"github.com/smile-vplm/smile/gpu"
)

// Device is a gpu.Device computing on the host CPU. Like every gpu.Device it
// is used by one goroutine at a time; it parallelises internally over at
// most Threads() threads.
type Device struct {
	backend string
	name    string
	threads int
	blas    bool
	pool    *pool
	ws      []workspace // per pool participant
	limit   int64       // bytes
	used    int64

	// Tasks refilled on every call (see task).
	gemmT  gemmTask
	batchT batchTask
	ewT    ewTask
	attnT  attnTask
	items  []gemmArgs
}

var _ gpu.Device = (*Device)(nil)

// New returns a CPU device. Backend "auto" picks OpenBLAS when it is compiled
// in (cgo, no `purego` tag) and pure Go otherwise; asking for "openblas"
// where it is not compiled in fails with an error wrapping
// gpu.ErrUnavailable. Close the device to stop its helper goroutines.
func New(cfg Config) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	backend := cfg.Backend
	switch backend {
	case "", BackendAuto:
		backend = BackendPureGo
		if haveOpenBLAS {
			backend = BackendOpenBLAS
		}
	case BackendOpenBLAS:
		if !haveOpenBLAS {
			return nil, fmt.Errorf("cpu: backend %q: %w (built without cgo or with the purego tag)",
				backend, gpu.ErrUnavailable)
		}
	}
	threads := cfg.threads()
	limit := cfg.MaxBytes
	if limit == 0 {
		limit = physicalMemory()
	}
	if limit <= 0 {
		limit = math.MaxInt64
	}
	d := &Device{
		backend: backend,
		name:    "cpu/" + backend,
		threads: threads,
		blas:    backend == BackendOpenBLAS,
		pool:    newPool(threads),
		ws:      make([]workspace, threads),
		limit:   limit,
	}
	// A device dropped without Close still lets its helpers go.
	runtime.AddCleanup(d, func(p *pool) { p.close() }, d.pool)
	return d, nil
}

// Name is "cpu/openblas" or "cpu/purego".
func (d *Device) Name() string { return d.name }

// Threads is the number of threads the device computes with.
func (d *Device) Threads() int { return d.threads }

// Backend is "openblas" or "purego".
func (d *Device) Backend() string { return d.backend }

// Info describes the GEMM engine (for OpenBLAS its build configuration).
func (d *Device) Info() string {
	if d.blas {
		return blasInfo()
	}
	return fmt.Sprintf("pure Go, %dx%d micro-kernel", 1, nr)
}

// Close stops the helper goroutines. Buffers stay valid; later calls run on
// the calling goroutine alone.
func (d *Device) Close() error {
	d.pool.close()
	return nil
}

// MemoryInUse is the number of bytes currently allocated.
func (d *Device) MemoryInUse() int64 { return d.used }

// buffer is device memory: a slice owned by one Device. Free drops the slice,
// so a freed buffer is recognised (and refused) on any later use.
type buffer struct {
	dev  *Device
	data []float32
}

func (b *buffer) Len() int           { return len(b.data) }
func (b *buffer) Device() gpu.Device { return b.dev }

// Alloc returns n zeroed elements.
func (d *Device) Alloc(n int) (gpu.Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("cpu: Alloc(%d): %w", n, gpu.ErrShape)
	}
	if int64(n) > (d.limit-d.used)/4 {
		return nil, fmt.Errorf("cpu: Alloc(%d): %w: %d of %d bytes in use", n, gpu.ErrOutOfMemory, d.used, d.limit)
	}
	d.used += int64(n) * 4
	return &buffer{dev: d, data: make([]float32, n)}, nil
}

// Free releases b. Freeing a buffer twice, or one of another device, does
// nothing.
func (d *Device) Free(b gpu.Buffer) {
	if bb, ok := b.(*buffer); ok && bb.dev == d && bb.data != nil {
		d.used -= int64(len(bb.data)) * 4
		bb.data = nil
	}
}

// view checks that m belongs to d and lies inside its buffer, and returns
// the elements from m.Off to the end of m's last row.
func (d *Device) view(name string, m gpu.Mat) ([]float32, error) {
	var data []float32
	if m.Buf != nil {
		b, ok := m.Buf.(*buffer)
		if !ok || b == nil || b.dev != d {
			return nil, fmt.Errorf("%w: %s belongs to %s", gpu.ErrForeignBuffer, name, devName(m.Buf))
		}
		if b.data == nil {
			return nil, fmt.Errorf("%w: %s was freed", gpu.ErrForeignBuffer, name)
		}
		data = b.data
	}
	if err := gpu.CheckMat(name, m); err != nil {
		return nil, err
	}
	n := gpu.Span(m)
	if n == 0 {
		return nil, nil
	}
	return data[m.Off : m.Off+n : m.Off+n], nil
}

func devName(b gpu.Buffer) (s string) {
	defer func() {
		if recover() != nil {
			s = "an unknown device"
		}
	}()
	if dev := b.Device(); dev != nil {
		return "another device (" + dev.Name() + ")"
	}
	return "no device"
}

// Upload copies src, row-major with exactly dst.Rows*dst.Cols elements, into dst.
func (d *Device) Upload(dst gpu.Mat, src []float32) error {
	x, err := d.view("dst", dst)
	if err != nil {
		return fmt.Errorf("cpu: Upload: %w", err)
	}
	if len(src) != dst.Rows*dst.Cols {
		return fmt.Errorf("cpu: Upload: %w: %d host elements for a %dx%d matrix", gpu.ErrShape, len(src), dst.Rows, dst.Cols)
	}
	if dst.Cols == 0 {
		return nil
	}
	if dst.Stride == dst.Cols {
		copy(x, src)
		return nil
	}
	for i := 0; i < dst.Rows; i++ {
		copy(x[i*dst.Stride:i*dst.Stride+dst.Cols], src[i*dst.Cols:])
	}
	return nil
}

// Download copies src into dst, row-major with exactly src.Rows*src.Cols elements.
func (d *Device) Download(dst []float32, src gpu.Mat) error {
	x, err := d.view("src", src)
	if err != nil {
		return fmt.Errorf("cpu: Download: %w", err)
	}
	if len(dst) != src.Rows*src.Cols {
		return fmt.Errorf("cpu: Download: %w: %d host elements for a %dx%d matrix", gpu.ErrShape, len(dst), src.Rows, src.Cols)
	}
	if src.Cols == 0 {
		return nil
	}
	if src.Stride == src.Cols {
		copy(dst, x)
		return nil
	}
	for i := 0; i < src.Rows; i++ {
		copy(dst[i*src.Cols:(i+1)*src.Cols], x[i*src.Stride:])
	}
	return nil
}

// Copy copies src into dst (same shape; they must not partly overlap).
func (d *Device) Copy(dst, src gpu.Mat) error {
	x, err := d.view("dst", dst)
	if err != nil {
		return fmt.Errorf("cpu: Copy: %w", err)
	}
	y, err := d.view("src", src)
	if err != nil {
		return fmt.Errorf("cpu: Copy: %w", err)
	}
	if err := gpu.CheckSameShape("dst", dst, "src", src); err != nil {
		return fmt.Errorf("cpu: Copy: %w", err)
	}
	if err := gpu.CheckDisjoint("dst", dst, true, src); err != nil {
		return fmt.Errorf("cpu: Copy: %w", err)
	}
	if dst.Cols == 0 || gpu.Same(dst, src) {
		return nil
	}
	for i := 0; i < dst.Rows; i++ {
		copy(x[i*dst.Stride:i*dst.Stride+dst.Cols], y[i*src.Stride:])
	}
	return nil
}

// Sync returns at once: every method has finished its work when it returns.
func (d *Device) Sync(ctx context.Context) error { return nil }
