package cpu

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/smile-vplm/smile/gpu"
)

// threadCPU is the calling thread's CPU time (Linux): unlike wall time it
// does not count the time other processes hold the core.
func threadCPU() time.Duration {
	var ts syscall.Timespec
	const clockThreadCPUTimeID = 3
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}

// bestCPU is bestOf in thread CPU time, for single-threaded code. (On a
// virtual machine whose host is oversubscribed, stolen time still counts.)
func bestCPU(n int, f func()) time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	best := time.Duration(1 << 62)
	for i := 0; i < n; i++ {
		t := threadCPU()
		f()
		best = min(best, threadCPU()-t)
	}
	return best
}

// bestOf returns the fastest of n runs of f: on cores shared with other
// work the minimum is the figure that reflects the code, not the neighbours.
func bestOf(n int, f func()) time.Duration {
	best := time.Duration(1 << 62)
	for i := 0; i < n; i++ {
		t := time.Now()
		f()
		best = min(best, time.Since(t))
	}
	return best
}

// TestTune prints best-of timings for tuning; it runs only with SMILE_TUNE=1.
//
//	SMILE_TUNE=1 go test -run Tune -v ./gpu/cpu
func TestTune(t *testing.T) {
	if os.Getenv("SMILE_TUNE") == "" {
		t.Skip("set SMILE_TUNE=1")
	}
	for _, backend := range Available() {
		for _, threads := range []int{1, 2} {
			d := newTestDevice(t, backend, threads)
			for _, s := range bertShapes {
				m, n, k := s[0], s[1], s[2]
				x, w, y := benchMat(t, d, m, k), benchMat(t, d, k, n), benchMat(t, d, m, n)
				best := bestOf(40, func() { d.Gemm(false, false, 1, x, w, 0, y) })
				fmt.Printf("gemm %-8s threads=%d %dx%dx%d: %.1f GFLOP/s\n", backend, threads, m, k, n, 2*float64(m*n*k)/best.Seconds()/1e9)
			}
		}
	}
}

// TestTuneAttention compares, for the OpenBLAS backend, attention with every
// GEMM in Go against every GEMM in OpenBLAS, to place attnBLASMinMNK.
func TestTuneAttention(t *testing.T) {
	if os.Getenv("SMILE_TUNE") == "" {
		t.Skip("set SMILE_TUNE=1")
	}
	defer func(v int) { attnBLASMinMNK = v }(attnBLASMinMNK)
	cases := append(attnBenches,
		attnBench{"l2_256x2_h12_d64", 256, 2, 12, 64},
		attnBench{"l4_128x4_h12_d64", 128, 4, 12, 64},
		attnBench{"l4_128x4_h4_d16", 128, 4, 4, 16},
		attnBench{"l8_64x8_h12_d64", 64, 8, 12, 64},
		attnBench{"l8_64x8_h8_d16", 64, 8, 8, 16},
		attnBench{"l12_64x12_h12_d64", 64, 12, 12, 64},
		attnBench{"l32_32x32_h12_d64", 32, 32, 12, 64},
		attnBench{"l48_16x48_h12_d64", 16, 48, 12, 64},
		attnBench{"l64_16x64_h12_d64", 16, 64, 12, 64},
		attnBench{"l20_64x20_h12_d32", 64, 20, 12, 32})
	for _, threads := range []int{1} {
		for _, ab := range cases {
			line := fmt.Sprintf("attn threads=%d %-22s", threads, ab.name)
			for _, backend := range Available() {
				d := newTestDevice(t, backend, threads)
				s := setupAttention(t, d, ab)
				for _, lim := range []int{0, 1 << 40} {
					if backend == BackendPureGo && lim == 0 {
						continue
					}
					attnBLASMinMNK = lim
					best := bestOf(20, func() { s.run(d) })
					line += fmt.Sprintf(" %s/blas=%-5v %8.1f µs", backend, lim == 0, float64(best.Nanoseconds())/1e3)
				}
			}
			fmt.Println(line)
		}
	}
}

// TestTuneKernels prints best-of ns per element of the row kernels on
// BERT-base-sized operands (128 tokens).
func TestTuneKernels(t *testing.T) {
	if os.Getenv("SMILE_TUNE") == "" {
		t.Skip("set SMILE_TUNE=1")
	}
	for _, threads := range []int{1, 2} {
		d := newTestDevice(t, BackendPureGo, threads)
		ff := benchMat(t, d, 128, 3072)
		ff0 := benchMat(t, d, 128, 3072)
		h := benchMat(t, d, 128, 768)
		h0 := benchMat(t, d, 128, 768)
		h2 := benchMat(t, d, 128, 768)
		// GELU's inputs over [-6, 6], where its table rows are spread out.
		wide, wide0 := benchMat(t, d, 128, 3072), benchMat(t, d, 128, 3072)
		d.Scale(wide0, 24)
		bias := benchMat(t, d, 1, 3072)
		g := benchMat(t, d, 1, 768)
		for _, k := range []struct {
			name string
			n    int
			f    func() error
		}{
			{"AddBias+GELU 128x3072", 128 * 3072, func() error { return d.AddBias(ff, bias, gpu.ActGELU) }},
			{"Activate GELU wide 128x3072", 128 * 3072, func() error { return d.Activate(wide, gpu.ActGELU) }},
			{"AddBias+GELUTanh 128x3072", 128 * 3072, func() error { return d.AddBias(ff, bias, gpu.ActGELUTanh) }},
			{"Activate Tanh 128x3072", 128 * 3072, func() error { return d.Activate(ff, gpu.ActTanh) }},
			{"Activate ReLU 128x3072", 128 * 3072, func() error { return d.Activate(ff, gpu.ActReLU) }},
			{"AddBias 128x3072", 128 * 3072, func() error { return d.AddBias(ff, bias, gpu.ActNone) }},
			{"Add 128x768", 128 * 768, func() error { return d.Add(h, h, h2) }},
			{"LayerNorm 128x768", 128 * 768, func() error { return d.LayerNorm(h, h, g, g, 1e-5) }},
			{"Softmax 128x768", 128 * 768, func() error { return d.Softmax(h, nil) }},
		} {
			// Each run starts from the same data (in-place kernels applied
			// over and over drift into denormals); the copy is subtracted.
			restore := func() { d.Copy(ff, ff0); d.Copy(h, h0); d.Copy(wide, wide0) }
			best := bestOf(50, func() { restore(); k.f() }) - bestOf(50, restore)
			fmt.Printf("kernel threads=%d %-26s %6.1f µs %5.2f ns/elem\n", threads, k.name,
				float64(best.Nanoseconds())/1e3, float64(best.Nanoseconds())/float64(k.n))
		}
	}
}
