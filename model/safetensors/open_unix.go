//go:build unix

package safetensors

import (
	"fmt"
	"os"
	"syscall"
)

// Open maps the file at path read-only and parses it; the tensors point into
// the mapping, so a large model is never copied. Close unmaps it.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: open: %w", err)
	}
	defer fh.Close() // the mapping outlives the descriptor
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: open: %w", err)
	}
	size := st.Size()
	if size < 8 {
		return nil, badFile(path, "%d bytes: too short for the header length", size)
	}
	if size != int64(int(size)) {
		return nil, badFile(path, "%d bytes: too large to map", size)
	}
	data, err := syscall.Mmap(int(fh.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("safetensors: open %s: mmap: %w", path, err)
	}
	f, err := Parse(path, data)
	if err != nil {
		_ = syscall.Munmap(data)
		return nil, err
	}
	f.unmap = func() error { return syscall.Munmap(data) }
	return f, nil
}
