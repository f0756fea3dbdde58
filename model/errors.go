package model

import "errors"

// Errors of the model packages; wrapped with detail naming the file, tensor,
// field or text at fault; test with errors.Is.
var (
	// ErrBadModelFile: a model file that cannot be parsed (bad JSON, truncated
	// data, wrong tensor shape or dtype, missing tensor or field).
	ErrBadModelFile = errors.New("model: bad model file")
	// ErrEmptyText: a text that yields no tokens (empty, or only removed characters).
	ErrEmptyText = errors.New("model: empty text")
	// ErrTextTooLong: a text longer than the configured byte limit.
	ErrTextTooLong = errors.New("model: text too long")
	// ErrBadInput: any other invalid argument (no texts, bad layer range, ...).
	ErrBadInput = errors.New("model: bad input")
	// ErrBadParams: a vPLM's params (adapter and head) that cannot be used:
	// a malformed or corrupt blob, or params that do not fit the backbone.
	ErrBadParams = errors.New("model: bad vplm params")
)
