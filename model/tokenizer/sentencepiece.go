package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// SentencePiece is the unigram tokenizer of Universal Sentence Encoder Lite,
// a port of the reference JS tokenizer (@energetic-ai/embeddings 0.2.0)
// that gives the same ids for every valid UTF-8 text, quirks included
// (shared/USE-LITE.md and doc.go list them). It is safe for concurrent use.
type SentencePiece struct {
	pieces []string
	scores []float64
	// step[id] is how far the reference's backtracking moves back from the
	// end of piece id: the UTF-16 length of its string, at least 1.
	step      []int32
	trie      *runeTrie
	spaceCode int32 // code of '▁', what every ASCII space becomes
	pool      sync.Pool
}

// SentencePieceReserved is the number of leading vocabulary entries that
// are never matched (id 0 is the unknown piece, 1-5 are control pieces).
const SentencePieceReserved = 6

// spaceMark is U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's word boundary.
const spaceMark = '\u2581'

// maxPooledLen bounds the buffers a pooled encoder keeps, so one huge text
// does not pin its lattice for the life of the process.
const maxPooledLen = 1 << 16

// spState holds one Encode's buffers; reused through a sync.Pool.
type spState struct {
	norm  []byte
	codes []int32
	best  []float64
	words []int32
	back  []int32
}

// LoadSentencePieceJSON reads a vocabulary in the reference's vocab.json
// form: a JSON array of [piece, score] pairs, the index being the id; a
// null score counts as 0, as in the reference. Anything else (other JSON,
// other entry shapes, a piece that is not a string, a score that is not a
// number or null, an empty array, trailing data) is an error wrapping
// ErrBadVocab that names the entry.
func LoadSentencePieceJSON(r io.Reader) (*SentencePiece, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%w: reading: %v", ErrBadVocab, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var entries []json.RawMessage
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("%w: not a JSON array of entries: %v", ErrBadVocab, err)
	}
	if entries == nil {
		return nil, fmt.Errorf("%w: not a JSON array of entries (null)", ErrBadVocab)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the array", ErrBadVocab)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: empty vocabulary", ErrBadVocab)
	}
	if len(entries) > 1<<31-1 {
		return nil, fmt.Errorf("%w: %d entries do not fit int32 ids", ErrBadVocab, len(entries))
	}
	pieces := make([]string, len(entries))
	scores := make([]float64, len(entries))
	for i, raw := range entries {
		var pair []json.RawMessage
		if err := json.Unmarshal(raw, &pair); err != nil || pair == nil {
			return nil, fmt.Errorf("%w: entry %d: want [piece, score], got %.40s", ErrBadVocab, i, raw)
		}
		if len(pair) != 2 {
			return nil, fmt.Errorf("%w: entry %d: want [piece, score], got %d elements", ErrBadVocab, i, len(pair))
		}
		if err := json.Unmarshal(pair[0], &pieces[i]); err != nil || pair[0][0] != '"' {
			return nil, fmt.Errorf("%w: entry %d: piece is not a string: %.40s", ErrBadVocab, i, pair[0])
		}
		switch s := string(pair[1]); {
		case s == "null":
			scores[i] = 0
		case len(s) > 0 && (s[0] == '-' || (s[0] >= '0' && s[0] <= '9')):
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: entry %d: score %.40s: %v", ErrBadVocab, i, s, err)
			}
			scores[i] = f
		default:
			return nil, fmt.Errorf("%w: entry %d: score is not a number: %.40s", ErrBadVocab, i, s)
		}
	}
	return NewSentencePiece(pieces, scores)
}

// NewSentencePiece builds the tokenizer from pieces and their scores (same
// length, index = id). The first SentencePieceReserved ids are never
// matched; id 0 is the unknown piece. A piece that appears twice is matched
// as its last id, as in the reference.
func NewSentencePiece(pieces []string, scores []float64) (*SentencePiece, error) {
	if len(pieces) == 0 {
		return nil, fmt.Errorf("%w: empty vocabulary", ErrBadVocab)
	}
	if len(pieces) != len(scores) {
		return nil, fmt.Errorf("%w: %d pieces but %d scores", ErrBadVocab, len(pieces), len(scores))
	}
	sp := &SentencePiece{
		pieces: append([]string(nil), pieces...),
		scores: append([]float64(nil), scores...),
		step:   make([]int32, len(pieces)),
	}
	var entries []trieEntry
	for i, p := range pieces {
		if !utf8.ValidString(p) {
			return nil, fmt.Errorf("%w: entry %d: piece is not valid UTF-8", ErrBadVocab, i)
		}
		// The reference steps back by the piece's String.length (UTF-16
		// units) though its lattice counts code points; only pieces with
		// characters beyond the BMP tell the two apart. A step of 0 would
		// hang the reference; we take 1.
		n := 0
		for _, r := range p {
			n += utf16.RuneLen(r)
		}
		sp.step[i] = int32(max(n, 1))
		if i >= SentencePieceReserved {
			entries = append(entries, trieEntry{piece: p, id: int32(i)})
		}
	}
	sp.trie = buildTrie(entries)
	sp.spaceCode = sp.trie.code(spaceMark)
	sp.pool.New = func() any { return new(spState) }
	return sp, nil
}

// VocabSize is the number of pieces; every id is below it.
func (sp *SentencePiece) VocabSize() int { return len(sp.pieces) }

// Piece returns the string of id, or "" and false when id is out of range.
func (sp *SentencePiece) Piece(id int32) (string, bool) {
	if id < 0 || int(id) >= len(sp.pieces) {
		return "", false
	}
	return sp.pieces[id], true
}

// Encode returns the ids of text, never truncated. Invalid UTF-8 gives an
// error wrapping ErrInvalidUTF8 with the byte offset; a text that
// normalises to nothing gives an empty slice.
func (sp *SentencePiece) Encode(text string) ([]int32, error) {
	return sp.AppendEncode(nil, text)
}

// AppendEncode appends the ids of text to dst and returns the extended
// slice; with a reused dst, encoding allocates nothing.
func (sp *SentencePiece) AppendEncode(dst []int32, text string) ([]int32, error) {
	if err := checkUTF8(text); err != nil {
		return dst, err
	}
	if dst == nil {
		dst = []int32{}
	}
	st := sp.pool.Get().(*spState)
	dst = sp.encode(st, dst, text)
	if cap(st.codes) <= maxPooledLen && cap(st.norm) <= 4*maxPooledLen {
		sp.pool.Put(st)
	}
	return dst, nil
}

// checkUTF8 returns nil for valid UTF-8, else ErrInvalidUTF8 with the
// offset of the first bad byte.
func checkUTF8(text string) error {
	if utf8.ValidString(text) {
		return nil
	}
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		if r == utf8.RuneError && n <= 1 {
			return fmt.Errorf("%w: byte offset %d", ErrInvalidUTF8, i)
		}
		i += n
	}
	return ErrInvalidUTF8 // not reached
}

func (sp *SentencePiece) encode(st *spState, dst []int32, text string) []int32 {
	st.norm = nfkcAppend(st.norm[:0], text)
	if len(st.norm) == 0 {
		return dst
	}
	t := sp.trie
	states := t.states

	// Code points of "▁" + text with every ASCII space made '▁', as codes.
	codes := append(st.codes[:0], sp.spaceCode)
	for b := st.norm; len(b) > 0; {
		r, size := rune(b[0]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(b)
		}
		b = b[size:]
		if r == ' ' {
			codes = append(codes, sp.spaceCode)
		} else {
			codes = append(codes, t.code(r))
		}
	}
	st.codes = codes
	n := len(codes)

	// best[e] and words[e]: score and last piece of the best path to e.
	// 0 means unset, as in the reference, which cannot tell an unset
	// position from a path that scores exactly 0.
	best := grow(st.best, n+1)
	words := grow(st.words, n+1)
	clear(best)
	clear(words)
	st.best, st.words = best, words

	// The reference collects the candidates ending at each position and
	// visits them by ascending start. Walking the starts in order and
	// pushing each candidate to its end gives every end the same sequence
	// of updates, and best[i] is final by the time start i is walked.
	for i := 0; i < n; i++ {
		s, matched := int32(0), false
		for j := i; j < n && j-i < t.depth; j++ {
			c := codes[j]
			if c == 0 {
				break
			}
			next := states[s].base + c
			if uint(next) >= uint(len(states)) || states[next].check != s {
				break
			}
			s = next
			if id := states[s].id; id >= 0 {
				matched = true
				e := j + 1
				score := sp.scores[id] + best[i]
				if best[e] == 0 || score >= best[e] {
					best[e], words[e] = score, id
				}
			}
		}
		if !matched {
			// No piece starts here: this code point alone is unknown, score 0.
			score := best[i]
			if best[i+1] == 0 || score >= best[i+1] {
				best[i+1], words[i+1] = score, 0
			}
		}
	}

	// Backtrack from the end, merging runs of unknown pieces. A position no
	// path reaches has words == 0 and steps back by the unknown piece's
	// length, as in the reference.
	back := st.back[:0]
	prevUnk := false
	for e := n; e > 0; {
		id := words[e]
		if !(prevUnk && id == 0) {
			back = append(back, id)
		}
		prevUnk = id == 0
		e -= int(sp.step[id])
	}
	st.back = back
	dst = slicesGrow(dst, len(back))
	for k := len(back) - 1; k >= 0; k-- {
		dst = append(dst, back[k])
	}
	return dst
}

func grow[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]T, n, max(n, 2*cap(s)))
}

func slicesGrow(s []int32, n int) []int32 {
	if cap(s)-len(s) >= n {
		return s
	}
	out := make([]int32, len(s), len(s)+n)
	copy(out, s)
	return out
}

var _ Tokenizer = (*SentencePiece)(nil)
