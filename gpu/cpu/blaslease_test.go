package cpu

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/smile-vplm/smile/gpu"
)

// TestBLASLease: sections holding the lease for count n see count n (in the
// lease and, with OpenBLAS, in the library) and never overlap a section of
// another count, while sections of one count overlap freely.
func TestBLASLease(t *testing.T) {
	var cur atomic.Int64
	fake := newBLASLease(func(n int) { cur.Store(int64(n)) })
	for _, tc := range []struct {
		name  string
		l     *blasLease
		count func() int
	}{
		{"fake", fake, func() int { return int(cur.Load()) }},
		{"process", blasThreads, blasNumThreads},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.l == blasThreads && !haveOpenBLAS {
				t.Skip("OpenBLAS is not compiled in")
			}
			var holders [4]atomic.Int32
			var overlapped atomic.Bool
			var wg sync.WaitGroup
			for g := range 6 {
				wg.Go(func() {
					for i := range 300 {
						n := 1 + (g+i/7)%3
						tc.l.acquire(n)
						if holders[n].Add(1) > 1 {
							overlapped.Store(true)
						}
						for m := 1; m <= 3; m++ {
							if m != n && holders[m].Load() != 0 {
								t.Errorf("a section with count %d overlaps one with count %d", n, m)
							}
						}
						if got := tc.count(); got != n {
							t.Errorf("count %d inside a section for %d", got, n)
						}
						runtime.Gosched()
						holders[n].Add(-1)
						tc.l.release()
					}
				})
			}
			wg.Wait()
			t.Logf("sections of one count overlapped: %v", overlapped.Load())
		})
	}
}

// TestDevicesConcurrent runs two devices with different thread counts from
// two goroutines at once (one device actor each), each doing threaded
// GEMMs, segmented GEMMs of many small segments and attention (which hold
// OpenBLAS at 1 thread), and checks every result against the same device's
// result computed alone. Run it with -race.
func TestDevicesConcurrent(t *testing.T) {
	backend := Available()[0]
	type work struct {
		d        *Device
		x, w, y  gpu.Mat
		segs     []gpu.Segment
		ys       gpu.Mat
		att      attnSetup
		want     [3][]float32 // Gemm, GemmSegmented, Attention
		download func(gpu.Mat) []float32
	}
	setup := func(threads int) *work {
		d := newTestDevice(t, backend, threads)
		// 64x256x256 is over blasSerialMNK: OpenBLAS threads it.
		x, w, y := benchMat(t, d, 64, 256), benchMat(t, d, 256, 256), benchMat(t, d, 64, 256)
		segs := make([]gpu.Segment, 8) // 8x256x256 each: over blasSerialMNK too
		for i := range segs {
			segs[i] = gpu.Segment{Rows: 8, W: w}
		}
		segs[3].W = gpu.Mat{}
		wk := &work{d: d, x: x, w: w, y: y, segs: segs, ys: benchMat(t, d, 64, 256),
			att: setupAttention(t, d, attnBench{"", 3, 96, 4, 64})} // items of 96x96x64
		wk.download = func(m gpu.Mat) []float32 {
			out := make([]float32, m.Rows*m.Cols)
			if err := d.Download(out, m); err != nil {
				t.Error(err)
			}
			return out
		}
		return wk
	}
	run := func(wk *work) (got [3][]float32, err error) {
		if err := wk.d.Gemm(false, false, 1, wk.x, wk.w, 0, wk.y); err != nil {
			return got, err
		}
		if err := wk.d.GemmSegmented(false, 0.5, wk.x, wk.segs, 0, wk.ys); err != nil {
			return got, err
		}
		if err := wk.att.run(wk.d); err != nil {
			return got, err
		}
		return [3][]float32{wk.download(wk.y), wk.download(wk.ys), wk.download(wk.att.out)}, nil
	}
	devs := []*work{setup(2), setup(1)}
	for _, wk := range devs {
		var err error
		if wk.want, err = run(wk); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for _, wk := range devs {
		wg.Go(func() {
			for iter := range 4 {
				got, err := run(wk)
				if err != nil {
					t.Error(err)
					return
				}
				for op, name := range []string{"Gemm", "GemmSegmented", "Attention"} {
					if err := closeTo(got[op], wk.want[op]); err != nil {
						t.Errorf("%s threads=%d, round %d: %s: %v", wk.d.Name(), wk.d.Threads(), iter, name, err)
					}
				}
			}
		})
	}
	wg.Wait()
}

// closeTo compares with a float32 rounding's slack: the same device gives
// the same result, concurrently or not.
func closeTo(got, want []float32) error {
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); !(d <= 1e-6*(1+math.Abs(float64(want[i])))) {
			return fmt.Errorf("[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	return nil
}

// BenchmarkBLASLease is what a single device pays per threaded GEMM and per
// attention call: an uncontended acquire and release at an unchanged count.
func BenchmarkBLASLease(b *testing.B) {
	l := newBLASLease(func(int) {})
	for b.Loop() {
		l.acquire(2)
		l.release()
	}
}
