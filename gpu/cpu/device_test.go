package cpu

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/smile-vplm/smile/gpu"
)

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{DefaultConfig(), true},
		{SingleThreadConfig(), true},
		{Config{}, true},
		{Config{Threads: 2, Backend: BackendPureGo}, true},
		{Config{Threads: -1}, false},
		{Config{Threads: MaxThreads + 1}, false},
		{Config{Backend: "cuda"}, false},
		{Config{MaxBytes: -1}, false},
	} {
		err := tc.cfg.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("%+v: Validate = %v", tc.cfg, err)
		}
		if _, err := New(tc.cfg); (err == nil) != tc.ok {
			t.Errorf("%+v: New = %v", tc.cfg, err)
		}
	}
	d, err := New(Config{Backend: BackendOpenBLAS})
	if haveOpenBLAS {
		if err != nil || d.Name() != "cpu/openblas" {
			t.Fatalf("openblas: %v", err)
		}
		d.Close()
	} else if !errors.Is(err, gpu.ErrUnavailable) {
		t.Fatalf("openblas without cgo: got %v, want ErrUnavailable", err)
	}
	d = newTestDevice(t, BackendAuto, 0)
	if want := "cpu/" + Available()[0]; d.Name() != want || d.Threads() < 1 {
		t.Fatalf("auto: %s with %d threads, want %s", d.Name(), d.Threads(), want)
	}
	if d := newTestDevice(t, BackendPureGo, 3); d.Threads() != 3 || d.Name() != "cpu/purego" {
		t.Fatalf("purego: %s with %d threads", d.Name(), d.Threads())
	}
}

func TestMaxBytes(t *testing.T) {
	d, err := New(Config{Threads: 1, Backend: BackendPureGo, MaxBytes: 4000})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a, err := d.Alloc(600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Alloc(401); !errors.Is(err, gpu.ErrOutOfMemory) {
		t.Fatalf("Alloc over MaxBytes: %v", err)
	}
	d.Free(a)
	if d.MemoryInUse() != 0 {
		t.Fatalf("MemoryInUse after Free = %d", d.MemoryInUse())
	}
	if _, err := d.Alloc(1000); err != nil {
		t.Fatalf("Alloc after Free: %v", err)
	}
}

// TestNoGoroutineLeak: helpers exist only between New and Close.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, backend := range Available() {
		d, err := New(Config{Threads: 4, Backend: backend})
		if err != nil {
			t.Fatal(err)
		}
		s := setupAttention(t, d, attnBench{"", 8, 20, 4, 16})
		if err := s.run(d); err != nil {
			t.Fatal(err)
		}
		d.Close()
		d.Close()
		if err := s.run(d); err != nil { // still works, on the caller alone
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
}

// TestNoAllocs: after a warm-up call, the methods allocate nothing, on the
// single-threaded and the parallel paths.
func TestNoAllocs(t *testing.T) {
	for _, backend := range Available() {
		for _, threads := range []int{1, 2} {
			d := newTestDevice(t, backend, threads)
			x := benchMat(t, d, 96, 256)
			w := benchMat(t, d, 256, 192)
			y := benchMat(t, d, 96, 192)
			small := benchMat(t, d, 4, 8)
			bias := benchMat(t, d, 1, 192)
			ids := make([]int32, 96)
			for i := range ids {
				ids[i] = int32(i * 7 % 96)
			}
			offsets := []int{0, 20, 20, 50, 96}
			pooled := benchMat(t, d, 4, 192)
			segs := []gpu.Segment{{Rows: 40, W: w}, {Rows: 16}, {Rows: 40, W: w}}
			att := setupAttention(t, d, attnBench{"", 6, 16, 4, 16})
			valid := make([]int32, 96)
			for i := range valid {
				valid[i] = int32(i % 193)
			}
			table := benchMat(t, d, 300, 192)
			x2 := benchMat(t, d, 96, 192)
			for name, f := range map[string]func() error{
				"Gemm": func() error { return d.Gemm(false, false, 1, x, w, 0, y) },
				"GemmTT": func() error {
					return d.Gemm(true, true, 1, x.Rowsl(0, 8).Colsl(0, 96), x.Colsl(0, 8), 0.5, y.Colsl(0, 96))
				},
				"GemmSmall": func() error { return d.Gemm(false, true, 0.5, small, small, 1, pooled.Colsl(0, 4)) },
				"Batched": func() error {
					return d.GemmStridedBatched(false, false, 1, x.Rowsl(0, 8), 8*256, w, 0, 0, y.Rowsl(0, 8), 8*192, 12)
				},
				"Segmented":   func() error { return d.GemmSegmented(false, 1, x, segs, 1, y) },
				"Gather":      func() error { return d.Gather(y, table, ids, false) },
				"GatherAcc":   func() error { return d.Gather(y, table, ids, true) },
				"AddBias":     func() error { return d.AddBias(y, bias, gpu.ActGELU) },
				"Activate":    func() error { return d.Activate(y, gpu.ActTanh) },
				"Add":         func() error { return d.Add(y, y, x2) },
				"Scale":       func() error { return d.Scale(y, 0.5) },
				"LayerNorm":   func() error { return d.LayerNorm(y, y, bias, bias, 1e-5) },
				"Softmax":     func() error { return d.Softmax(y, valid) },
				"L2Normalize": func() error { return d.L2Normalize(y, 1e-12) },
				"MeanPool":    func() error { return d.MeanPool(pooled, y, offsets) },
				"Attention":   func() error { return att.run(d) },
			} {
				if err := f(); err != nil { // warm up: scratch grows here
					t.Fatalf("%s: %v", name, err)
				}
				allocs := testing.AllocsPerRun(5, func() {
					if err := f(); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
				})
				if allocs > 0 {
					t.Errorf("%s/threads=%d: %s allocates %.1f times per call", backend, threads, name, allocs)
				}
			}
		}
	}
}

// Example multiplies two small matrices on the default CPU device.
func Example() {
	dev, err := New(DefaultConfig())
	if err != nil {
		panic(err)
	}
	defer dev.Close()
	mat := func(rows, cols int, vals ...float32) gpu.Mat {
		b, err := dev.Alloc(rows * cols)
		if err != nil {
			panic(err)
		}
		m := gpu.NewMat(b, rows, cols)
		if err := dev.Upload(m, vals); err != nil {
			panic(err)
		}
		return m
	}
	a := mat(2, 3, 1, 2, 3, 4, 5, 6)
	b := mat(3, 2, 1, 0, 0, 1, 1, 1)
	c := mat(2, 2, 0, 0, 0, 0)
	if err := dev.Gemm(false, false, 1, a, b, 0, c); err != nil {
		panic(err)
	}
	out := make([]float32, 4)
	if err := dev.Download(out, c); err != nil {
		panic(err)
	}
	fmt.Println(out)
	// A bad id is an error, not a panic.
	err = dev.Gather(c, a.Colsl(0, 2), []int32{0, 7}, false)
	fmt.Println(errors.Is(err, gpu.ErrOutOfRange))
	// Output:
	// [4 5 10 11]
	// true
}
