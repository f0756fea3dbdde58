package bert

import (
	"bytes"
	"fmt"

	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/tokenizer"
)

// newTokenizer builds the WordPiece tokenizer of a vocab.txt and checks that
// every id it can produce has a row in the embedding table.
func newTokenizer(vocab []byte, cfg Config) (*tokenizer.WordPiece, error) {
	wc := tokenizer.DefaultWordPieceConfig()
	wc.DoLowerCase = cfg.DoLowerCase
	wc.StripAccents = cfg.StripAccents.mode()
	wc.TokenizeChineseChars = cfg.TokenizeChineseChars
	wp, err := tokenizer.LoadWordPiece(bytes.NewReader(vocab), wc)
	if err != nil {
		return nil, fmt.Errorf("%w: bert: vocabulary: %w", model.ErrBadModelFile, err)
	}
	if wp.VocabSize() > cfg.VocabSize {
		return nil, fmt.Errorf("%w: bert: vocabulary has %d tokens, more than vocab_size %d",
			model.ErrBadModelFile, wp.VocabSize(), cfg.VocabSize)
	}
	return wp, nil
}
