package storage

import "errors"

// Errors of the storage package; wrapped with detail, test with errors.Is.
var (
	// ErrNotFound: no blob with that digest, no reference with that name, or
	// no vPLM with that id.
	ErrNotFound = errors.New("storage: not found")
	// ErrExists: a create for a vPLM id that is already in the catalog.
	ErrExists = errors.New("storage: already exists")
	// ErrConflict: a NewVersion whose version is not the current one plus one,
	// or a DeleteBlob of a blob that vPLMs still reference.
	ErrConflict = errors.New("storage: conflict")
	// ErrMissingBlob: a catalog command naming a params blob that is not stored.
	ErrMissingBlob = errors.New("storage: missing blob")
	// ErrCorrupt: stored bytes whose hash no longer matches their digest, or a
	// stored record that no longer decodes.
	ErrCorrupt = errors.New("storage: corrupt")
	// ErrBadID: a vPLM id or tenant name that is not well formed (see ValidID).
	ErrBadID = errors.New("storage: bad id")
	// ErrInvalid: a catalog command that is malformed (no command, missing fields).
	ErrInvalid = errors.New("storage: invalid command")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("storage: closed")
	// ErrBadDigest: a digest or reference name that is not well formed.
	ErrBadDigest = errors.New("storage: bad digest or name")
	// ErrDigestMismatch: content whose hash is not the one the caller expected.
	// PutBlobAs wraps it together with ErrCorrupt.
	ErrDigestMismatch = errors.New("storage: digest mismatch")
	// ErrAlreadyApplied: the result of a command of a Raft log entry that
	// ApplyEntries skipped because the catalog's applied position says it
	// was applied before (a replay after a crash or restart).
	ErrAlreadyApplied = errors.New("storage: already applied")
	// ErrQuotaExceeded: a create or new version that would take a tenant
	// beyond its max_vplms or max_bytes; the message names the quota, its
	// limit and the tenant's usage.
	ErrQuotaExceeded = errors.New("storage: quota exceeded")
	// ErrNotEmpty: RestoreBackup into a store whose catalog is not empty.
	ErrNotEmpty = errors.New("storage: catalog not empty")
	// ErrStableKeyNotFound: RaftStore.Get of a key never set. Its message is
	// "not found", without the package prefix, because hashicorp/raft tells
	// a missing term or vote from a failed read by comparing err.Error() with
	// that string (api.go, raft.go); errors.Is(err, ErrNotFound) also holds.
	ErrStableKeyNotFound error = stableKeyNotFound{}
)

type stableKeyNotFound struct{}

func (stableKeyNotFound) Error() string        { return "not found" }
func (stableKeyNotFound) Is(target error) bool { return target == ErrNotFound }
