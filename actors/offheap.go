package actors

import (
	"fmt"
	"syscall"
)

// The host tier keeps vPLM params outside the Go heap. With 10,000
// resident vPLMs (about 1.3 GB of fp16 params for use-lite) on the heap,
// the collector's default goal (twice the live heap) would let the process
// grow to about 2.6 GB before collecting request garbage; off-heap, the
// heap stays small and RSS stays near what is resident. Each blob gets its
// own anonymous mapping: blobs are ~100 KB+, so page rounding wastes
// under 4%, and eviction returns the memory to the OS at once.

// offHeapCopy returns a copy of b in fresh anonymous memory.
func offHeapCopy(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, nil
	}
	// MAP_POPULATE faults every page in with the mapping: one system call
	// instead of a fault per 4 KiB page in the copy below.
	m, err := syscall.Mmap(-1, 0, len(b), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("%w: mmap %d bytes: %w", ErrOverloaded, len(b), err)
	}
	copy(m, b)
	return m, nil
}

// offHeapFree unmaps memory from offHeapCopy; the slice must not be used after.
func offHeapFree(m []byte) {
	if len(m) > 0 {
		_ = syscall.Munmap(m)
	}
}
