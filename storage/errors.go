package storage

import "errors"

// Errors of the storage package; wrapped with detail, test with errors.Is.
var (
	// ErrNotFound: no blob with that digest, or no reference with that name.
	ErrNotFound = errors.New("storage: not found")
	// ErrCorrupt: stored bytes whose hash no longer matches their digest.
	ErrCorrupt = errors.New("storage: corrupt blob")
	// ErrBadDigest: a digest or reference name that is not well formed.
	ErrBadDigest = errors.New("storage: bad digest or name")
	// ErrDigestMismatch: content whose hash is not the one the caller expected.
	ErrDigestMismatch = errors.New("storage: digest mismatch")
)
