package cpu

import (
	"fmt"
	"runtime"
)

// Backend names accepted by Config.Backend.
const (
	BackendAuto     = "auto"     // OpenBLAS when compiled in, else pure Go
	BackendOpenBLAS = "openblas" // cgo + libopenblas; ErrUnavailable without cgo or under `purego`
	BackendPureGo   = "purego"   // the pure-Go kernels, always compiled in
)

// MaxThreads bounds Config.Threads.
const MaxThreads = 256

// Config configures a CPU device.
type Config struct {
	// Threads is the number of OS threads the device computes with: OpenBLAS's
	// thread count and the most goroutines our own kernels split work over.
	// 0 means runtime.NumCPU(), capped by GOMAXPROCS.
	Threads int
	// Backend selects the GEMM engine: "auto" (or ""), "openblas" or "purego".
	Backend string
	// MaxBytes caps the memory the device hands out; beyond it Alloc fails
	// with gpu.ErrOutOfMemory. 0 means the machine's physical memory.
	MaxBytes int64
}

// DefaultConfig uses every core with the best backend compiled in.
func DefaultConfig() Config {
	return Config{Threads: 0, Backend: BackendAuto}
}

// SingleThreadConfig is for processes that run one device per core (or tests
// that must not compete for cores).
func SingleThreadConfig() Config {
	return Config{Threads: 1, Backend: BackendAuto}
}

// Validate checks the fields; it does not check that the backend is
// compiled in (New does, returning gpu.ErrUnavailable).
func (c Config) Validate() error {
	if c.Threads < 0 || c.Threads > MaxThreads {
		return fmt.Errorf("%w: Threads = %d, want 0..%d", ErrConfig, c.Threads, MaxThreads)
	}
	switch c.Backend {
	case "", BackendAuto, BackendOpenBLAS, BackendPureGo:
	default:
		return fmt.Errorf("%w: Backend = %q, want %q, %q or %q",
			ErrConfig, c.Backend, BackendAuto, BackendOpenBLAS, BackendPureGo)
	}
	if c.MaxBytes < 0 {
		return fmt.Errorf("%w: MaxBytes = %d", ErrConfig, c.MaxBytes)
	}
	return nil
}

// threads resolves Threads = 0.
func (c Config) threads() int {
	if c.Threads > 0 {
		return c.Threads
	}
	return max(1, min(runtime.NumCPU(), runtime.GOMAXPROCS(0)))
}

// Available lists the backends compiled into this binary, best first.
func Available() []string {
	if haveOpenBLAS {
		return []string{BackendOpenBLAS, BackendPureGo}
	}
	return []string{BackendPureGo}
}
