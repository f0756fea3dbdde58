// Package prof wraps a gpu.Device to account the wall time of each call by
// kind (GEMM, attention, other kernels), for benchmarks that report how much
// of a forward pass is GEMM. It is meant for synchronous devices (the CPU
// backend); on an asynchronous device the caller must Sync inside the timed
// region for the figures to mean anything.
package prof

import (
	"context"
	"time"

	"github.com/smile-vplm/smile/gpu"
)

// Times is accumulated wall time per kind of call.
type Times struct {
	Gemm      time.Duration // Gemm, GemmStridedBatched, GemmSegmented
	Attention time.Duration // Attention (its inner products are GEMMs too)
	Other     time.Duration // every other kernel and memory call
	GemmFlops float64       // floating-point operations issued through GEMM calls
}

// Total is the time spent inside the device.
func (t Times) Total() time.Duration { return t.Gemm + t.Attention + t.Other }

// Device is a gpu.Device that times every call of the one it wraps.
type Device struct {
	gpu.Device
	T Times
}

// Wrap returns a timing wrapper around dev.
func Wrap(dev gpu.Device) *Device { return &Device{Device: dev} }

// Reset clears the accumulated times.
func (d *Device) Reset() { d.T = Times{} }

func (d *Device) other(start time.Time) { d.T.Other += time.Since(start) }

func opDims(t bool, m gpu.Mat) (rows, cols int) {
	if t {
		return m.Cols, m.Rows
	}
	return m.Rows, m.Cols
}

func (d *Device) Gemm(tA, tB bool, alpha float32, a, b gpu.Mat, beta float32, c gpu.Mat) error {
	start := time.Now()
	err := d.Device.Gemm(tA, tB, alpha, a, b, beta, c)
	d.T.Gemm += time.Since(start)
	m, k := opDims(tA, a)
	_, n := opDims(tB, b)
	d.T.GemmFlops += 2 * float64(m) * float64(n) * float64(k)
	return err
}

func (d *Device) GemmStridedBatched(tA, tB bool, alpha float32, a gpu.Mat, strideA int, b gpu.Mat, strideB int,
	beta float32, c gpu.Mat, strideC int, batch int) error {
	start := time.Now()
	err := d.Device.GemmStridedBatched(tA, tB, alpha, a, strideA, b, strideB, beta, c, strideC, batch)
	d.T.Gemm += time.Since(start)
	m, k := opDims(tA, a)
	_, n := opDims(tB, b)
	d.T.GemmFlops += 2 * float64(m) * float64(n) * float64(k) * float64(batch)
	return err
}

func (d *Device) GemmSegmented(tB bool, alpha float32, x gpu.Mat, segs []gpu.Segment, beta float32, y gpu.Mat) error {
	start := time.Now()
	err := d.Device.GemmSegmented(tB, alpha, x, segs, beta, y)
	d.T.Gemm += time.Since(start)
	for _, s := range segs {
		if !s.W.IsZero() {
			_, n := opDims(tB, s.W)
			d.T.GemmFlops += 2 * float64(s.Rows) * float64(n) * float64(x.Cols)
		}
	}
	return err
}

func (d *Device) Attention(out, q, k, v gpu.Mat, heads int, offsets []int, scale float32) error {
	start := time.Now()
	err := d.Device.Attention(out, q, k, v, heads, offsets, scale)
	d.T.Attention += time.Since(start)
	return err
}

func (d *Device) Upload(dst gpu.Mat, src []float32) error {
	defer d.other(time.Now())
	return d.Device.Upload(dst, src)
}

func (d *Device) Download(dst []float32, src gpu.Mat) error {
	defer d.other(time.Now())
	return d.Device.Download(dst, src)
}

func (d *Device) Copy(dst, src gpu.Mat) error {
	defer d.other(time.Now())
	return d.Device.Copy(dst, src)
}

func (d *Device) Sync(ctx context.Context) error {
	defer d.other(time.Now())
	return d.Device.Sync(ctx)
}

func (d *Device) Gather(dst, table gpu.Mat, ids []int32, accumulate bool) error {
	defer d.other(time.Now())
	return d.Device.Gather(dst, table, ids, accumulate)
}

func (d *Device) AddBias(x, bias gpu.Mat, act gpu.Activation) error {
	defer d.other(time.Now())
	return d.Device.AddBias(x, bias, act)
}

func (d *Device) Activate(x gpu.Mat, act gpu.Activation) error {
	defer d.other(time.Now())
	return d.Device.Activate(x, act)
}

func (d *Device) Add(dst, a, b gpu.Mat) error {
	defer d.other(time.Now())
	return d.Device.Add(dst, a, b)
}

func (d *Device) Scale(x gpu.Mat, alpha float32) error {
	defer d.other(time.Now())
	return d.Device.Scale(x, alpha)
}

func (d *Device) LayerNorm(dst, x, gamma, beta gpu.Mat, eps float32) error {
	defer d.other(time.Now())
	return d.Device.LayerNorm(dst, x, gamma, beta, eps)
}

func (d *Device) Softmax(x gpu.Mat, valid []int32) error {
	defer d.other(time.Now())
	return d.Device.Softmax(x, valid)
}

func (d *Device) L2Normalize(x gpu.Mat, eps float32) error {
	defer d.other(time.Now())
	return d.Device.L2Normalize(x, eps)
}

func (d *Device) MeanPool(dst, x gpu.Mat, offsets []int) error {
	defer d.other(time.Now())
	return d.Device.MeanPool(dst, x, offsets)
}

var _ gpu.Device = (*Device)(nil)
