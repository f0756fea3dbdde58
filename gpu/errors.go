package gpu

import "errors"

// Errors returned by devices. Each is wrapped with detail (%w); test with errors.Is.
var (
	// ErrShape: operand dimensions do not fit together or exceed their buffer.
	ErrShape = errors.New("gpu: shape mismatch")
	// ErrForeignBuffer: a buffer that belongs to another device (or was freed).
	ErrForeignBuffer = errors.New("gpu: buffer of another device")
	// ErrOutOfRange: an index (token id, offset) outside its table.
	ErrOutOfRange = errors.New("gpu: index out of range")
	// ErrOutOfMemory: an allocation the device cannot serve.
	ErrOutOfMemory = errors.New("gpu: out of memory")
	// ErrUnavailable: the requested backend is not compiled in or not present.
	ErrUnavailable = errors.New("gpu: backend unavailable")
)
