package cpu

import "errors"

// Errors of this package; device errors are the gpu package's sentinels.
var (
	// ErrConfig: a Config that does not validate.
	ErrConfig = errors.New("cpu: invalid config")
)
