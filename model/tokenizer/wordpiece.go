package tokenizer

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"unicode/utf8"
)

// AccentMode says whether WordPiece strips accents (NFD, then drop the
// nonspacing marks), as transformers' strip_accents: None, True, False.
type AccentMode int

const (
	// AccentsFollowLowerCase strips accents exactly when lower-casing
	// (strip_accents=None, the default).
	AccentsFollowLowerCase AccentMode = iota
	// AccentsStrip always strips accents.
	AccentsStrip
	// AccentsKeep never strips accents.
	AccentsKeep
)

// WordPieceConfig configures a BERT WordPiece tokenizer. Start from
// DefaultWordPieceConfig or CasedWordPieceConfig.
type WordPieceConfig struct {
	DoLowerCase          bool
	StripAccents         AccentMode
	TokenizeChineseChars bool
	// MaxInputCharsPerWord: a longer word (in code points) becomes UNK.
	MaxInputCharsPerWord int

	UnkToken, ClsToken, SepToken, PadToken, MaskToken string
}

// DefaultWordPieceConfig is bert-base-uncased: lower-case, strip accents,
// split CJK ideographs, words up to 100 characters.
func DefaultWordPieceConfig() WordPieceConfig {
	return WordPieceConfig{
		DoLowerCase:          true,
		StripAccents:         AccentsFollowLowerCase,
		TokenizeChineseChars: true,
		MaxInputCharsPerWord: 100,
		UnkToken:             "[UNK]",
		ClsToken:             "[CLS]",
		SepToken:             "[SEP]",
		PadToken:             "[PAD]",
		MaskToken:            "[MASK]",
	}
}

// CasedWordPieceConfig is bert-base-cased: the default without
// lower-casing, hence without accent stripping.
func CasedWordPieceConfig() WordPieceConfig {
	c := DefaultWordPieceConfig()
	c.DoLowerCase = false
	return c
}

// Validate reports a configuration that cannot be used, wrapping ErrBadConfig.
func (c WordPieceConfig) Validate() error {
	if c.MaxInputCharsPerWord <= 0 {
		return fmt.Errorf("%w: MaxInputCharsPerWord %d, want > 0", ErrBadConfig, c.MaxInputCharsPerWord)
	}
	if c.StripAccents < AccentsFollowLowerCase || c.StripAccents > AccentsKeep {
		return fmt.Errorf("%w: StripAccents %d", ErrBadConfig, c.StripAccents)
	}
	for _, t := range []struct{ name, tok string }{
		{"UnkToken", c.UnkToken}, {"ClsToken", c.ClsToken}, {"SepToken", c.SepToken},
		{"PadToken", c.PadToken}, {"MaskToken", c.MaskToken},
	} {
		if t.tok == "" {
			return fmt.Errorf("%w: empty %s", ErrBadConfig, t.name)
		}
	}
	return nil
}

// SpecialIDs are the ids of a WordPiece vocabulary's special tokens.
type SpecialIDs struct {
	CLS, SEP, PAD, UNK, MASK int32
}

// WordPiece is a BERT tokenizer with the semantics of Hugging Face
// transformers' BertTokenizer (the Python one): basic tokenization (clean,
// split CJK, NFC, lower-case and strip accents if configured, split on
// whitespace and punctuation), then greedy longest-match-first WordPiece
// with "##" continuations. Special tokens written in the text are not
// recognised: "[CLS]" in a text is split like any other word, so user
// text cannot inject them (transformers' split_special_tokens=True). It is
// safe for concurrent use.
type WordPiece struct {
	cfg          WordPieceConfig
	stripAccents bool
	vocab        map[string]int32
	tokens       []string // by id; a duplicate line keeps its text, the map its last id
	special      SpecialIDs
	pool         sync.Pool
}

// wpState holds one Encode's buffers; reused through a sync.Pool.
type wpState struct {
	clean, nfc, lower, strip, toks, key []byte
	ends                                []int
}

// LoadWordPiece reads a BERT vocab.txt: one token a line, the line number
// (from 0) its id, lines ended by \n, \r\n or \r as Python's universal
// newlines read them. A token on two lines maps to the later id, as in
// transformers. The file must be UTF-8, non-empty and hold the five
// special tokens of cfg; otherwise the error wraps ErrBadVocab (or
// ErrBadConfig for cfg).
func LoadWordPiece(r io.Reader, cfg WordPieceConfig) (*WordPiece, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%w: reading: %v", ErrBadVocab, err)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty vocabulary", ErrBadVocab)
	}
	var tokens []string
	for line := 0; len(data) > 0; line++ {
		i := bytes.IndexAny(data, "\r\n")
		tok, rest := data, []byte(nil)
		if i >= 0 {
			tok, rest = data[:i], data[i+1:]
			if data[i] == '\r' && len(rest) > 0 && rest[0] == '\n' {
				rest = rest[1:]
			}
		}
		if !utf8.Valid(tok) {
			return nil, fmt.Errorf("%w: line %d is not valid UTF-8", ErrBadVocab, line+1)
		}
		tokens = append(tokens, string(tok))
		data = rest
	}
	if len(tokens) > 1<<31-1 {
		return nil, fmt.Errorf("%w: %d tokens do not fit int32 ids", ErrBadVocab, len(tokens))
	}
	return NewWordPiece(tokens, cfg)
}

// NewWordPiece builds the tokenizer from its tokens, the index being the id.
func NewWordPiece(tokens []string, cfg WordPieceConfig) (*WordPiece, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%w: empty vocabulary", ErrBadVocab)
	}
	w := &WordPiece{
		cfg:    cfg,
		vocab:  make(map[string]int32, len(tokens)),
		tokens: append([]string(nil), tokens...),
	}
	switch cfg.StripAccents {
	case AccentsFollowLowerCase:
		w.stripAccents = cfg.DoLowerCase
	case AccentsStrip:
		w.stripAccents = true
	}
	for i, t := range tokens {
		w.vocab[t] = int32(i)
	}
	for _, s := range []struct {
		tok string
		id  *int32
	}{
		{cfg.ClsToken, &w.special.CLS}, {cfg.SepToken, &w.special.SEP}, {cfg.PadToken, &w.special.PAD},
		{cfg.UnkToken, &w.special.UNK}, {cfg.MaskToken, &w.special.MASK},
	} {
		id, ok := w.vocab[s.tok]
		if !ok {
			return nil, fmt.Errorf("%w: special token %q is missing", ErrBadVocab, s.tok)
		}
		*s.id = id
	}
	w.pool.New = func() any { return new(wpState) }
	return w, nil
}

// VocabSize is the number of vocabulary lines; every id is below it.
func (w *WordPiece) VocabSize() int { return len(w.tokens) }

// SpecialIDs returns the ids of [CLS], [SEP], [PAD], [UNK] and [MASK].
func (w *WordPiece) SpecialIDs() SpecialIDs { return w.special }

// Config returns the configuration the tokenizer was built with.
func (w *WordPiece) Config() WordPieceConfig { return w.cfg }

// Token returns the text of id, or "" and false when id is out of range.
func (w *WordPiece) Token(id int32) (string, bool) {
	if id < 0 || int(id) >= len(w.tokens) {
		return "", false
	}
	return w.tokens[id], true
}

// Encode returns the ids of text without special tokens, never truncated.
// Invalid UTF-8 gives ErrInvalidUTF8.
func (w *WordPiece) Encode(text string) ([]int32, error) {
	return w.AppendEncode(nil, text)
}

// AppendEncode appends the ids of text (no special tokens) to dst.
func (w *WordPiece) AppendEncode(dst []int32, text string) ([]int32, error) {
	if err := checkUTF8(text); err != nil {
		return dst, err
	}
	if dst == nil {
		dst = []int32{}
	}
	st := w.pool.Get().(*wpState)
	dst = w.encode(st, dst, text)
	if cap(st.clean) <= 4*maxPooledLen {
		w.pool.Put(st)
	}
	return dst, nil
}

// Tokenize returns the token strings of text, as transformers' tokenize().
func (w *WordPiece) Tokenize(text string) ([]string, error) {
	ids, err := w.Encode(text)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = w.tokens[id]
	}
	return out, nil
}

// EncodeWithSpecial returns [CLS] + the ids of text + [SEP], the ids of
// text cut to maxLen-2 so that the whole is at most maxLen. maxLen 0 means
// no limit; 1 or a negative one is an ErrBadConfig error.
func (w *WordPiece) EncodeWithSpecial(text string, maxLen int) ([]int32, error) {
	if maxLen < 0 || maxLen == 1 {
		return nil, fmt.Errorf("%w: maxLen %d leaves no room for [CLS] and [SEP]", ErrBadConfig, maxLen)
	}
	ids, err := w.AppendEncode([]int32{w.special.CLS}, text)
	if err != nil {
		return nil, err
	}
	if maxLen > 0 && len(ids) > maxLen-1 {
		ids = ids[:maxLen-1]
	}
	return append(ids, w.special.SEP), nil
}

// EncodePair returns [CLS] a [SEP] b [SEP] and its token type ids (0 up to
// the first [SEP], 1 after). Over maxLen (0: no limit, else at least 3), a
// token is cut from the end of the longer text, of b on a tie, until it
// fits: transformers' "longest_first" truncation.
func (w *WordPiece) EncodePair(a, b string, maxLen int) (ids, typeIDs []int32, err error) {
	if maxLen < 0 || (maxLen > 0 && maxLen < 3) {
		return nil, nil, fmt.Errorf("%w: maxLen %d leaves no room for [CLS] and two [SEP]", ErrBadConfig, maxLen)
	}
	ia, err := w.Encode(a)
	if err != nil {
		return nil, nil, err
	}
	ib, err := w.Encode(b)
	if err != nil {
		return nil, nil, err
	}
	if maxLen > 0 {
		for len(ia)+len(ib) > maxLen-3 {
			if len(ia) > len(ib) {
				ia = ia[:len(ia)-1]
			} else {
				ib = ib[:len(ib)-1]
			}
		}
	}
	n := len(ia) + len(ib) + 3
	ids = make([]int32, 0, n)
	ids = append(ids, w.special.CLS)
	ids = append(ids, ia...)
	ids = append(ids, w.special.SEP)
	ids = append(ids, ib...)
	ids = append(ids, w.special.SEP)
	typeIDs = make([]int32, n)
	for i := len(ia) + 2; i < n; i++ {
		typeIDs[i] = 1
	}
	return ids, typeIDs, nil
}

func (w *WordPiece) encode(st *wpState, dst []int32, text string) []int32 {
	w.basicTokens(st, text)
	start := 0
	for _, end := range st.ends {
		dst = w.wordPiece(st, dst, st.toks[start:end])
		start = end
	}
	return dst
}

// wordPiece appends the pieces of one basic token: greedy longest match
// first, "##" before every piece but the first; no match anywhere, or more
// than MaxInputCharsPerWord code points, gives one [UNK].
func (w *WordPiece) wordPiece(st *wpState, dst []int32, tok []byte) []int32 {
	if utf8.RuneCount(tok) > w.cfg.MaxInputCharsPerWord {
		return append(dst, w.special.UNK)
	}
	mark := len(dst)
	for start := 0; start < len(tok); {
		found := false
		for end := len(tok); end > start; {
			key := st.key[:0]
			if start > 0 {
				key = append(key, "##"...)
			}
			key = append(key, tok[start:end]...)
			st.key = key
			if id, ok := w.vocab[string(key)]; ok {
				dst = append(dst, id)
				start, found = end, true
				break
			}
			_, size := utf8.DecodeLastRune(tok[start:end])
			end -= size
		}
		if !found {
			return append(dst[:mark], w.special.UNK)
		}
	}
	return dst
}

var _ Tokenizer = (*WordPiece)(nil)
