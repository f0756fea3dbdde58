package tokenizer

import "errors"

// Tokenizer turns text into token ids of a backbone's vocabulary.
// Implementations are safe for concurrent use.
type Tokenizer interface {
	// Encode returns the ids of text. It never truncates; truncation to the
	// model's window belongs to the backbone. Invalid UTF-8 gives
	// ErrInvalidUTF8; a text with no tokens gives an empty slice and no error.
	Encode(text string) ([]int32, error)
	// VocabSize is the number of ids the tokenizer can produce.
	VocabSize() int
}

// Errors of this package; wrapped with detail, test with errors.Is.
var (
	// ErrInvalidUTF8: the text is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("tokenizer: invalid UTF-8")
	// ErrBadVocab: a vocabulary file that cannot be parsed or is inconsistent.
	ErrBadVocab = errors.New("tokenizer: bad vocabulary")
	// ErrBadConfig: a configuration or a length limit that cannot be used.
	ErrBadConfig = errors.New("tokenizer: bad configuration")
)
