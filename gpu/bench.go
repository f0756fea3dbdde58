package gpu

import (
	"context"
	"fmt"
	"time"
)

// BenchGemm measures dev's GEMM throughput on C[m,n] = A[m,k]·B[k,n]: it
// allocates the operands once, warms up, then repeats the multiplication
// until minTime has passed and returns 2mnk/time in GFLOP/s. It returns
// ctx's error if ctx ends first.
func BenchGemm(ctx context.Context, dev Device, m, n, k int, minTime time.Duration) (gflops float64, err error) {
	if m <= 0 || n <= 0 || k <= 0 {
		return 0, fmt.Errorf("gpu: BenchGemm: %w: %dx%dx%d", ErrShape, m, n, k)
	}
	var bufs []Buffer
	defer func() {
		for _, b := range bufs {
			dev.Free(b)
		}
	}()
	mat := func(rows, cols int) (Mat, error) {
		b, err := dev.Alloc(rows * cols)
		if err != nil {
			return Mat{}, err
		}
		bufs = append(bufs, b)
		x := NewMat(b, rows, cols)
		host := make([]float32, rows*cols)
		for i := range host {
			// Small, varied, exactly representable values: no denormals, no overflow.
			host[i] = float32(int(uint(i)*2654435761%17)-8) / 16
		}
		return x, dev.Upload(x, host)
	}
	a, err := mat(m, k)
	if err != nil {
		return 0, err
	}
	b, err := mat(k, n)
	if err != nil {
		return 0, err
	}
	c, err := mat(m, n)
	if err != nil {
		return 0, err
	}
	run := func() error { return dev.Gemm(false, false, 1, a, b, 0, c) }
	// Warm up: caches, scratch buffers, thread pools, clocks.
	warm := time.Now()
	for i := 0; i < 2 || time.Since(warm) < minTime/10; i++ {
		if err := run(); err != nil {
			return 0, err
		}
	}
	if err := dev.Sync(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	iters := 0
	for iters == 0 || time.Since(start) < minTime {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := run(); err != nil {
			return 0, err
		}
		iters++
		if iters%8 == 0 {
			if err := dev.Sync(ctx); err != nil {
				return 0, err
			}
		}
	}
	if err := dev.Sync(ctx); err != nil {
		return 0, err
	}
	el := time.Since(start).Seconds()
	return 2 * float64(m) * float64(n) * float64(k) * float64(iters) / el / 1e9, nil
}
