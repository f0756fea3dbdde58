// Package safetensors reads and writes the safetensors format: an 8-byte
// little-endian header length, a JSON header mapping each tensor name to its
// dtype, shape and byte range (plus an optional "__metadata__" map of
// strings), then the raw little-endian tensor data.
//
// The reader is strict: every header field, every byte range and the
// coverage of the data region are checked before any tensor is handed out,
// and every failure wraps model.ErrBadModelFile with the file and the tensor
// or field at fault. Open maps a file read-only so a large backbone is never
// copied into the Go heap; Parse works on bytes already in memory. Write
// produces byte-identical output for identical input (sorted names, header
// padded with spaces to a multiple of 8 bytes as Hugging Face's writer does).
package safetensors
