package tokenizer

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// toyBertVocab is the vocabulary of transformers' BertTokenizer tests,
// with a few pieces added for the cases below.
var toyBertVocab = []string{
	"[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]",
	"want", "##want", "##ed", "wa", "un", "runn", "##ing", ",", "low", "lowest",
	"hello", "world", "!", "?", "how", "are", "you", "##aff", "##able", "h", "##é", "##llo", "中", "文",
	"ος", "οδος", "σ", "i", "##̇", "HeLLo", "Are", "yoU", "##ς",
}

func newToyWordPiece(t testing.TB, cfg WordPieceConfig) *WordPiece {
	t.Helper()
	w, err := LoadWordPiece(strings.NewReader(strings.Join(toyBertVocab, "\n")+"\n"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// basicTokenize returns the basic tokenizer's output alone, as strings.
func basicTokenize(w *WordPiece, text string) []string {
	st := new(wpState)
	w.basicTokens(st, text)
	out := []string{}
	start := 0
	for _, end := range st.ends {
		out = append(out, string(st.toks[start:end]))
		start = end
	}
	return out
}

// Expected outputs are those of transformers' tests/models/bert and of
// Python's str and unicodedata for the Unicode cases.
func TestBertBasicTokenizer(t *testing.T) {
	uncased := DefaultWordPieceConfig()
	cased := CasedWordPieceConfig()
	lowerKeep := DefaultWordPieceConfig()
	lowerKeep.StripAccents = AccentsKeep
	casedStrip := CasedWordPieceConfig()
	casedStrip.StripAccents = AccentsStrip
	noCJK := DefaultWordPieceConfig()
	noCJK.TokenizeChineseChars = false
	hello := " \tHäLLo!how  \n Are yoU?  "

	tests := []struct {
		name string
		cfg  WordPieceConfig
		text string
		want []string
	}{
		{"punctuation", uncased, "Hello, World!", []string{"hello", ",", "world", "!"}},
		{"lower", uncased, " \tHeLLo!how  \n Are yoU?  ", []string{"hello", "!", "how", "are", "you", "?"}},
		{"lower strips accents", uncased, "H\u00E9llo", []string{"hello"}},
		{"lower strips accents 2", uncased, hello, []string{"hallo", "!", "how", "are", "you", "?"}},
		{"lower keeps accents", lowerKeep, hello, []string{"hällo", "!", "how", "are", "you", "?"}},
		{"lower keeps accents 2", lowerKeep, "H\u00E9llo", []string{"h\u00E9llo"}},
		{"cased", cased, " \tHeLLo!how  \n Are yoU?  ", []string{"HeLLo", "!", "how", "Are", "yoU", "?"}},
		{"cased keeps accents", cased, hello, []string{"HäLLo", "!", "how", "Are", "yoU", "?"}},
		{"cased strips accents", casedStrip, hello, []string{"HaLLo", "!", "how", "Are", "yoU", "?"}},
		{"chinese", uncased, "ah\u535A\u63A8zz", []string{"ah", "\u535A", "\u63A8", "zz"}},
		{"chinese off", noCJK, "ah\u535A\u63A8zz", []string{"ah\u535A\u63A8zz"}},
		{"hangul is not split, only decomposed", uncased, "한국어 カタカナ", []string{"\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165", "カタカナ"}},
		{"controls dropped", uncased, "a\x00b\x07c\u200bd\ufffde\u0085f", []string{"abcdef"}},
		{"private use and unassigned dropped", uncased, "a\ue000b\u0378c", []string{"abc"}},
		{"whitespace", uncased, "a\u00a0b\u3000c\td\re\u2028f\u2029g", []string{"a", "b", "c", "d", "e", "f", "g"}},
		{"unicode punctuation", uncased, "«hi»—ok…¿no?", []string{"«", "hi", "»", "—", "ok", "…", "¿", "no", "?"}},
		{"ascii symbols are punctuation", uncased, "a$b^c`d~e+f", []string{"a", "$", "b", "^", "c", "`", "d", "~", "e", "+", "f"}},
		{"NFC before lower-casing", lowerKeep, "cafe\u0301", []string{"caf\u00e9"}},
		{"final sigma", lowerKeep, "ΟΔΟΣ ΣΑΣ. Σ", []string{"οδος", "σας", ".", "σ"}},
		{"dotted capital I", lowerKeep, "İstanbul", []string{"i\u0307stanbul"}},
		{"dotted capital I stripped", uncased, "İstanbul", []string{"istanbul"}},
		{"ligature kept", uncased, "ﬁne", []string{"ﬁne"}},
		{"special tokens are text", uncased, "[CLS] x [SEP]", []string{"[", "cls", "]", "x", "[", "sep", "]"}},
		{"empty", uncased, "", []string{}},
		{"only spaces and controls", uncased, " \t\x00 \u200b ", []string{}},
		{"a word that strips to nothing", uncased, "\u0301 a", []string{"a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newToyWordPiece(t, tc.cfg)
			if got := basicTokenize(w, tc.text); !slices.Equal(got, tc.want) {
				t.Errorf("basic(%q) = %q, want %q", tc.text, got, tc.want)
			}
		})
	}
}

func TestWordPieceTokenize(t *testing.T) {
	w := newToyWordPiece(t, DefaultWordPieceConfig())
	tests := []struct {
		text string
		want []string
	}{
		{"", []string{}},
		{"unwanted running", []string{"un", "##want", "##ed", "runn", "##ing"}},
		{"unwantedX running", []string{"[UNK]", "runn", "##ing"}},
		{"UNwant\u00E9d,running", []string{"un", "##want", "##ed", ",", "runn", "##ing"}},
		{"unaffable", []string{"un", "##aff", "##able"}},
		{"Hello, World!", []string{"hello", ",", "world", "!"}},
		{"lowest low", []string{"lowest", "low"}},
		{"中文字", []string{"中", "文", "[UNK]"}},
		{strings.Repeat("want", 25), append([]string{"want"}, slices.Repeat([]string{"##want"}, 24)...)},
		{strings.Repeat("want", 25) + "x", []string{"[UNK]"}},
		{strings.Repeat("wa", 51), []string{"[UNK]"}}, // 102 > 100 characters
	}
	for _, tc := range tests {
		got, err := w.Tokenize(tc.text)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Tokenize(%.40q) = %q, want %q", tc.text, got, tc.want)
		}
	}
	ids, err := w.Encode("UNwant\u00E9d,running")
	if err != nil || !slices.Equal(ids, []int32{9, 6, 7, 12, 10, 11}) {
		t.Errorf("Encode = %v, %v; want [9 6 7 12 10 11]", ids, err)
	}
	if w.VocabSize() != len(toyBertVocab) {
		t.Errorf("VocabSize = %d", w.VocabSize())
	}
	if tok, ok := w.Token(9); !ok || tok != "un" {
		t.Errorf("Token(9) = %q, %v", tok, ok)
	}
	if _, ok := w.Token(-1); ok {
		t.Error("Token(-1) ok")
	}
}

func TestWordPieceMaxInputChars(t *testing.T) {
	cfg := DefaultWordPieceConfig()
	cfg.MaxInputCharsPerWord = 4
	w := newToyWordPiece(t, cfg)
	got, _ := w.Tokenize("want wanted é中")
	if want := []string{"want", "[UNK]", "[UNK]", "中"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestWordPieceSpecial(t *testing.T) {
	w := newToyWordPiece(t, DefaultWordPieceConfig())
	sp := w.SpecialIDs()
	if sp != (SpecialIDs{CLS: 1, SEP: 2, PAD: 3, UNK: 0, MASK: 4}) {
		t.Fatalf("SpecialIDs = %+v", sp)
	}
	body, _ := w.Encode("unwanted running") // 5 ids
	for _, tc := range []struct {
		maxLen int
		want   []int32
	}{
		{0, append(append([]int32{1}, body...), 2)},
		{100, append(append([]int32{1}, body...), 2)},
		{7, append(append([]int32{1}, body...), 2)},
		{5, append(append([]int32{1}, body[:3]...), 2)},
		{2, []int32{1, 2}},
	} {
		got, err := w.EncodeWithSpecial("unwanted running", tc.maxLen)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("EncodeWithSpecial(maxLen %d) = %v, %v; want %v", tc.maxLen, got, err, tc.want)
		}
	}
	for _, bad := range []int{-1, 1} {
		if _, err := w.EncodeWithSpecial("x", bad); !errors.Is(err, ErrBadConfig) {
			t.Errorf("maxLen %d: %v, want ErrBadConfig", bad, err)
		}
	}
	if _, err := w.EncodeWithSpecial("\xff", 10); !errors.Is(err, ErrInvalidUTF8) {
		t.Errorf("invalid UTF-8: %v", err)
	}

	// Pairs: longest_first cuts the longer text, b on a tie.
	ids, types, err := w.EncodePair("unwanted running", "hello world", 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int32{1, 9, 6, 7, 10, 11, 2, 15, 16, 2}; !slices.Equal(ids, want) {
		t.Errorf("EncodePair ids = %v, want %v", ids, want)
	}
	if want := []int32{0, 0, 0, 0, 0, 0, 0, 1, 1, 1}; !slices.Equal(types, want) {
		t.Errorf("EncodePair types = %v, want %v", types, want)
	}
	ids, types, _ = w.EncodePair("unwanted running", "hello world", 7) // 5+2 -> 2+2
	if want := []int32{1, 9, 6, 2, 15, 16, 2}; !slices.Equal(ids, want) || len(types) != len(ids) {
		t.Errorf("EncodePair(7) = %v %v, want %v", ids, types, want)
	}
	ids, _, _ = w.EncodePair("hello world", "how are", 6) // tie: b first
	if want := []int32{1, 15, 16, 2, 19, 2}; !slices.Equal(ids, want) {
		t.Errorf("EncodePair(6) = %v, want %v", ids, want)
	}
	if _, _, err := w.EncodePair("a", "b", 2); !errors.Is(err, ErrBadConfig) {
		t.Errorf("EncodePair maxLen 2: %v", err)
	}
}

func TestLoadWordPieceErrors(t *testing.T) {
	cfg := DefaultWordPieceConfig()
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "empty vocabulary"},
		{"missing MASK", "[UNK]\n[CLS]\n[SEP]\n[PAD]\n", `"[MASK]" is missing`},
		{"missing UNK", "[CLS]\n[SEP]\n[PAD]\n[MASK]\n", `"[UNK]" is missing`},
		{"bad UTF-8", "[UNK]\n[CLS]\n\xff\n", "line 3"},
	} {
		if _, err := LoadWordPiece(strings.NewReader(tc.in), cfg); !errors.Is(err, ErrBadVocab) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrBadVocab with %q", tc.name, err, tc.want)
		}
	}
	bad := cfg
	bad.MaxInputCharsPerWord = 0
	if _, err := LoadWordPiece(strings.NewReader("x"), bad); !errors.Is(err, ErrBadConfig) {
		t.Errorf("MaxInputCharsPerWord 0: %v", err)
	}
	bad = cfg
	bad.SepToken = ""
	if err := bad.Validate(); !errors.Is(err, ErrBadConfig) {
		t.Errorf("empty SepToken: %v", err)
	}
	bad = cfg
	bad.StripAccents = 7
	if err := bad.Validate(); !errors.Is(err, ErrBadConfig) {
		t.Errorf("StripAccents 7: %v", err)
	}
}

func TestLoadWordPieceLines(t *testing.T) {
	// \r\n and \r end lines as in Python's universal newlines; a duplicate
	// token maps to its last line; an empty line is a token too.
	in := "[UNK]\r\n[CLS]\r[SEP]\n\n[PAD]\n[MASK]\nx\nx"
	w, err := LoadWordPiece(strings.NewReader(in), DefaultWordPieceConfig())
	if err != nil {
		t.Fatal(err)
	}
	if w.VocabSize() != 8 {
		t.Errorf("VocabSize = %d, want 8", w.VocabSize())
	}
	if sp := w.SpecialIDs(); sp != (SpecialIDs{UNK: 0, CLS: 1, SEP: 2, PAD: 4, MASK: 5}) {
		t.Errorf("SpecialIDs = %+v", sp)
	}
	if ids, _ := w.Encode("x"); !slices.Equal(ids, []int32{7}) {
		t.Errorf("Encode(x) = %v, want [7]", ids)
	}
}

func TestWordPieceConcurrent(t *testing.T) {
	w := newToyWordPiece(t, DefaultWordPieceConfig())
	texts := []string{"unwanted running", "Hello, World!", "中文", strings.Repeat("unaffable ", 100), ""}
	checkConcurrent(t, w, texts)
}
