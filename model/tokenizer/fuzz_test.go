package tokenizer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// jsEncode is a line-by-line port of the reference JS tokenizer
// (processInput, Trie.commonPrefixSearch, Tokenizer.encode of
// @energetic-ai/embeddings 0.2.0), slow and plain, used as the fuzzers'
// oracle for the lattice, the trie and the backtracking. Normalisation is
// shared with the real code (nfkcAppend), which the JS case files check.
type jsTrieNode struct {
	end   bool
	score float64
	index int32
}

type jsTokenizer struct {
	vocab  []string
	prefix map[string]*jsTrieNode // every prefix of every piece, by its text
}

func newJSTokenizer(pieces []string, scores []float64) *jsTokenizer {
	t := &jsTokenizer{vocab: pieces, prefix: map[string]*jsTrieNode{}}
	for i := SentencePieceReserved; i < len(pieces); i++ {
		var sb strings.Builder
		for _, r := range pieces[i] {
			sb.WriteRune(r)
			if t.prefix[sb.String()] == nil {
				t.prefix[sb.String()] = &jsTrieNode{}
			}
		}
		if n := t.prefix[pieces[i]]; n != nil {
			n.end, n.score, n.index = true, scores[i], int32(i)
		}
	}
	return t
}

func (t *jsTokenizer) encode(text string) []int32 {
	input := string(nfkcAppend(nil, text))
	if len(input) > 0 {
		input = "\u2581" + strings.ReplaceAll(input, " ", "\u2581")
	}
	symbols := []rune(input)
	type piece struct {
		keyLen int
		score  float64
		index  int32
	}
	nodes := make([]map[int][]piece, len(symbols)+1)
	words := make([]int32, len(symbols)+1)
	best := make([]float64, len(symbols)+1)
	for i := range nodes {
		nodes[i] = map[int][]piece{}
	}
	for i := range symbols {
		var matches []piece
		for l := 1; i+l <= len(symbols); l++ {
			n := t.prefix[string(symbols[i:i+l])]
			if n == nil {
				break
			}
			if n.end {
				matches = append(matches, piece{l, n.score, n.index})
			}
		}
		if len(matches) == 0 {
			matches = append(matches, piece{1, 0, 0})
		}
		for _, m := range matches {
			nodes[i+m.keyLen][i] = append(nodes[i+m.keyLen][i], m)
		}
	}
	for end := 0; end <= len(symbols); end++ {
		starts := make([]int, 0, len(nodes[end]))
		for s := range nodes[end] {
			starts = append(starts, s)
		}
		slices.Sort(starts) // for...in over integer keys: ascending
		for _, s := range starts {
			for _, w := range nodes[end][s] {
				score := w.score + best[end-w.keyLen]
				if best[end] == 0 || score >= best[end] {
					best[end], words[end] = score, w.index
				}
			}
		}
	}
	var results []int32
	for iter := len(words) - 1; iter > 0; {
		results = append(results, words[iter])
		iter -= max(len(utf16.Encode([]rune(t.vocab[words[iter]]))), 1)
	}
	merged := []int32{}
	prevUnk := false
	for _, id := range results {
		if !(prevUnk && id == 0) {
			merged = append(merged, id)
		}
		prevUnk = id == 0
	}
	slices.Reverse(merged)
	return merged
}

func spSeeds(f *testing.F) {
	for _, s := range []string{
		"", " ", "Hello world", " :) ", "://:00", "\u201d5", "\t\n\u2028", "\U0001F600\U0001F600 hi", "中文",
		"cafe\u0301", "e" + strings.Repeat("\u0301", 40), "\ufb01ne ＡＢＣ ①", "\U0001CCD6", "\xff", "ok \xc3\x28",
		"a😀b cde xy ﬁ", strings.Repeat("supercalifragilistic", 10),
	} {
		f.Add(s)
	}
}

// FuzzSentencePiece: any input; never panics; invalid UTF-8 is
// ErrInvalidUTF8; otherwise ids are in range, not reserved (1-5), never two
// unknowns in a row, deterministic, and equal to the plain JS port's, under
// the real vocabulary and under the toy one with the reference's quirks.
func FuzzSentencePiece(f *testing.F) {
	spSeeds(f)
	lite := loadUSELite(f)
	toy, err := loadSPFile(filepath.Join("testdata", "sp_toy_vocab.json"))
	if err != nil {
		f.Fatal(err)
	}
	oracles := map[*SentencePiece]*jsTokenizer{
		lite: newJSTokenizer(lite.pieces, lite.scores),
		toy:  newJSTokenizer(toy.pieces, toy.scores),
	}
	f.Fuzz(func(t *testing.T, text string) {
		if utf8.ValidString(text) {
			// The fast normaliser and the by-the-book one agree.
			if fast, exact := string(nfkcAppend(nil, text)), normExact(patchNewCompat(text), norm.NFKD, true); fast != exact {
				t.Fatalf("NFKC(%+q): nfkcAppend %+q, normExact %+q", text, fast, exact)
			}
		}
		for sp, js := range oracles {
			ids, err := sp.Encode(text)
			if !utf8.ValidString(text) {
				if !errors.Is(err, ErrInvalidUTF8) {
					t.Fatalf("Encode(%q): err %v, want ErrInvalidUTF8", text, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("Encode(%q): %v", text, err)
			}
			for i, id := range ids {
				if id < 0 || int(id) >= sp.VocabSize() || (id > 0 && id < SentencePieceReserved) {
					t.Fatalf("Encode(%q): id %d out of range", text, id)
				}
				if i > 0 && id == 0 && ids[i-1] == 0 {
					t.Fatalf("Encode(%q) = %v: unknowns not merged", text, ids)
				}
			}
			again, _ := sp.AppendEncode(make([]int32, 0, 4), text)
			if !slices.Equal(ids, again) {
				t.Fatalf("Encode(%q) not deterministic: %v then %v", text, ids, again)
			}
			if want := js.encode(text); !slices.Equal(ids, want) {
				t.Fatalf("Encode(%q) = %v, JS port gives %v", text, ids, want)
			}
		}
	})
}

// FuzzSentencePieceVocab: the vocab.json parser on any bytes never panics,
// fails only with ErrBadVocab, and a vocabulary it accepts encodes like the
// JS port.
func FuzzSentencePieceVocab(f *testing.F) {
	f.Add([]byte(`[["<unk>",0],["<s>",0],["</s>",0],["a",0],["b",0],["c",0],["\u2581",-1],["a",-1],["ab",null],["\u2581a",-2.5]]`))
	f.Add([]byte(`[["x",1e999]]`))
	f.Add([]byte(`[["x",null],[1,2],["y"]]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[["\ud83d\ude00",-1],["",0],["",0],["",0],["",0],["",0],["\ud83d\ude00b",-1],["b",-1]] `))
	if data, err := os.ReadFile(filepath.Join("testdata", "sp_toy_vocab.json")); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sp, err := LoadSentencePieceJSON(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrBadVocab) {
				t.Fatalf("error %v does not wrap ErrBadVocab", err)
			}
			return
		}
		js := newJSTokenizer(sp.pieces, sp.scores)
		for _, text := range []string{"", " ", "ab a😀b", "x y:)", string(data[:min(len(data), 64)])} {
			if !utf8.ValidString(text) {
				continue
			}
			ids, err := sp.Encode(text)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				if id < 0 || int(id) >= sp.VocabSize() {
					t.Fatalf("id %d out of range %d", id, sp.VocabSize())
				}
			}
			if want := js.encode(text); !slices.Equal(ids, want) {
				t.Fatalf("Encode(%q) = %v, JS port gives %v", text, ids, want)
			}
		}
	})
}

// FuzzWordPiece: any input; never panics; invalid UTF-8 is ErrInvalidUTF8;
// otherwise ids are in range and deterministic, and EncodeWithSpecial
// frames them.
func FuzzWordPiece(f *testing.F) {
	for _, s := range []string{"", "Hello, World!", "unaffable", "UNwant\u00E9d,running", "中文字", "ΟΔΟΣ İ", "a\x00b\u200b",
		strings.Repeat("want", 30), "e" + strings.Repeat("\u0301", 40), "\xff"} {
		f.Add(s)
	}
	ws := []*WordPiece{newToyWordPiece(f, DefaultWordPieceConfig()), newToyWordPiece(f, CasedWordPieceConfig())}
	f.Fuzz(func(t *testing.T, text string) {
		for _, w := range ws {
			ids, err := w.Encode(text)
			if !utf8.ValidString(text) {
				if !errors.Is(err, ErrInvalidUTF8) {
					t.Fatalf("Encode(%q): err %v, want ErrInvalidUTF8", text, err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				if id < 0 || int(id) >= w.VocabSize() {
					t.Fatalf("Encode(%q): id %d out of range", text, id)
				}
			}
			again, _ := w.Encode(text)
			if !slices.Equal(ids, again) {
				t.Fatalf("Encode(%q) not deterministic", text)
			}
			framed, err := w.EncodeWithSpecial(text, 16)
			sp := w.SpecialIDs()
			if err != nil || len(framed) > 16 || framed[0] != sp.CLS || framed[len(framed)-1] != sp.SEP ||
				!slices.Equal(framed[1:len(framed)-1], ids[:min(len(ids), 14)]) {
				t.Fatalf("EncodeWithSpecial(%q) = %v, %v; body %v", text, framed, err, ids)
			}
		}
	})
}

// FuzzWordPieceVocab: the vocab.txt parser on any bytes never panics, fails
// only with ErrBadVocab, and a vocabulary it accepts encodes in range.
func FuzzWordPieceVocab(f *testing.F) {
	f.Add([]byte(strings.Join(toyBertVocab, "\n")))
	f.Add([]byte("[UNK]\r\n[CLS]\r[SEP]\n\n[PAD]\n[MASK]\nx\nx"))
	f.Add([]byte("[UNK]\n[CLS]\n\xff\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := LoadWordPiece(bytes.NewReader(data), DefaultWordPieceConfig())
		if err != nil {
			if !errors.Is(err, ErrBadVocab) {
				t.Fatalf("error %v does not wrap ErrBadVocab", err)
			}
			return
		}
		for _, text := range []string{"", "[UNK] x", "Hello, World! ##x", string(data[:min(len(data), 64)])} {
			if !utf8.ValidString(text) {
				continue
			}
			ids, err := w.Encode(text)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				if id < 0 || int(id) >= w.VocabSize() {
					t.Fatalf("id %d out of range %d", id, w.VocabSize())
				}
			}
		}
	})
}
