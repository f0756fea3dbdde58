// Package cpu is the default gpu.Device: it computes on the host CPU, with
// OpenBLAS (through cgo) for GEMM when it is compiled in and a pure-Go GEMM
// otherwise. Both are always built into a cgo binary, so one binary can
// benchmark them side by side; under the `purego` build tag or with
// CGO_ENABLED=0 only pure Go is built, and asking for "openblas" fails with
// gpu.ErrUnavailable.
//
//	dev, err := cpu.New(cpu.DefaultConfig()) // "cpu/openblas" or "cpu/purego"
//	defer dev.Close()
//
// # Memory
//
// A Buffer is a []float32 owned by its Device. Free drops the slice, so a
// freed buffer, like a buffer of another device, is refused with
// gpu.ErrForeignBuffer rather than read. Every method checks its views
// against their buffers (shapes, strides, bounds, outputs that overlap
// inputs) before it writes anything, and returns an error wrapping
// gpu.ErrShape, gpu.ErrOutOfRange or gpu.ErrForeignBuffer instead of
// panicking. Config.MaxBytes (default: physical memory) turns an
// impossible Alloc into gpu.ErrOutOfMemory.
//
// # Threads
//
// The device owns a budget of Config.Threads threads (default: every core
// the process may use) and never runs more than that at once, because the
// machines SMILE targets have few cores and share them with the rest of
// the process (actors, gossip, storage):
//
//   - OpenBLAS gets Threads threads for one big GEMM at a time, while our
//     own helpers are parked.
//   - Our kernels run on a pool of the calling goroutine plus Threads-1
//     long-lived helper goroutines, parked on a channel between calls. No
//     call ever starts a goroutine, let alone one per row or per token.
//   - Work is split only when it is big enough to pay for waking a helper
//     (a few µs): GEMMs from 2^18 multiply-adds, row kernels from about 64K
//     element operations. Smaller calls run on the calling goroutine.
//     Chunks are handed out dynamically, about four per participant, so a
//     helper that another process delays (the cores are shared) does less
//     instead of holding everyone up.
//   - Many small independent GEMMs (a strided batch, the segments of a
//     segmented GEMM, the (sequence, head) blocks of attention) run side by
//     side, one per participant, each on a single thread. For OpenBLAS this
//     means its thread count is held at 1 for the duration of the call
//     (unless every item is below OpenBLAS's own threading threshold, where
//     it runs single-threaded anyway), so OpenBLAS threads are never
//     started from two goroutines at once and never compete with ours. Few
//     or big items run one after the other, each using every thread.
//
// # OpenBLAS's thread count
//
// OpenBLAS keeps its thread count (openblas_set_num_threads) in one
// process-wide variable and reads it at the start of every GEMM big enough
// to thread, so several CPU devices used at once (one device actor per
// device and backbone) must not change it under each other's calls. The
// rule: every stretch of code that makes such a call, or that runs BLAS
// calls on several goroutines at once and so relies on a count of 1, holds
// a process-wide lease for the count it needs (blasLease in blaslease.go),
// from before the first call to after the last; the lease alone sets the
// count. Stretches that need the same count run at the same time (two
// devices with equal Threads, or two attention calls at 1); one that needs
// another count waits for them to finish, and newcomers queue behind it. A
// stretch never takes the lease twice. Calls under OpenBLAS's threading
// threshold (65536·4 multiply-adds) run on the calling thread whatever the
// count and need no lease. A single device pays one uncontended lock per
// threaded GEMM and per attention call; the count changes only when a
// device switches between a big GEMM and side-by-side items.
//
// Devices that compute at the same time should have Threads that add up to
// the cores: OpenBLAS runs one threaded GEMM at a time in the whole
// process (it serialises them itself), so such GEMMs of two devices take
// turns, while their Go kernels and single-threaded items overlap.
// OpenBLAS's idle threads spin (yielding) for a while after a
// multi-threaded call before they sleep; OPENBLAS_THREAD_TIMEOUT=4 in the
// environment makes them sleep almost at once, which helps when other
// work follows a GEMM on the same cores.
//
// Steady-state calls do not allocate: scratch (packing buffers, attention
// scores) is kept per participant and grown only when a call needs more
// than any before it, and per-call state lives in task structs inside the
// Device.
//
// # Pure-Go GEMM
//
// The pure-Go GEMM packs B into six-column slivers and runs a 1x6
// register-blocked micro-kernel over rows of A (see sgemm.go for why that
// shape). Go compiles float32 arithmetic to scalar SSE without FMA, so it
// reaches about 12 GFLOP/s per core here, against ~100 for OpenBLAS's
// AVX-512 kernels; it is the fallback for builds without cgo.
//
// # Accuracy
//
// GEMMs accumulate in float32. LayerNorm (two-pass), L2Normalize, MeanPool
// and softmax accumulate in float64. Exp and tanh are short float64
// approximations accurate to well under a float32 ulp or two; exact GELU
// is x·Φ(x) with the normal CDF Φ from a table of degree-5 Taylor
// polynomials (1.2e-7 relative), and the tanh form is x·sigmoid(2u): both
// keep their relative accuracy in the negative tail.
package cpu
