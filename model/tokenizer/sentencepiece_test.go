package tokenizer

import (
	"bufio"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// useLiteVocab is the real vocabulary of Universal Sentence Encoder Lite.
var useLiteVocab = filepath.Join("..", "..", "testdata", "use-lite", "vocab.json")

var (
	useLiteOnce sync.Once
	useLiteSP   *SentencePiece
	useLiteErr  error
)

func loadUSELite(tb testing.TB) *SentencePiece {
	tb.Helper()
	useLiteOnce.Do(func() { useLiteSP, useLiteErr = loadSPFile(useLiteVocab) })
	if useLiteErr != nil {
		tb.Fatal(useLiteErr)
	}
	return useLiteSP
}

func loadSPFile(path string) (*SentencePiece, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return LoadSentencePieceJSON(f)
}

// Expected ids come from the reference JS tokenizer.
func TestSentencePieceTable(t *testing.T) {
	sp := loadUSELite(t)
	if got := sp.VocabSize(); got != 8000 {
		t.Fatalf("VocabSize = %d, want 8000", got)
	}
	tests := []struct {
		name, text string
		want       []int32
	}{
		{"empty", "", []int32{}},
		{"one space", " ", []int32{30, 30}},
		{"spaces are not collapsed", "   ", []int32{30, 30, 30, 30}},
		{"dot", ".", []int32{30, 6}},
		{"null score colon wins over ▁:", ":", []int32{30, 57}},
		{"smiley after prefix", ":)", []int32{30, 57, 52}},
		{"smiley after space", " :)", []int32{30, 658}},
		{"null score ://", "://", []int32{30, 255}},
		{"zero score :00", ":00", []int32{30, 5920}},
		{"duplicate piece takes last id", "\u201d5", []int32{30, 4464}},
		{"plain", "Hello world", []int32{341, 4125, 311}},
		{"leading space", " leading", []int32{30, 2428}},
		{"trailing space", "trailing ", []int32{5578, 23, 30}},
		{"double space", "a  b", []int32{11, 30, 464}},
		{"tab newline unknown and merged", "\t\n", []int32{30, 0}},
		{"line separator unknown", "a\u2028b", []int32{11, 0, 151}},
		{"NBSP is NFKC space", "\u00a0", []int32{30, 30}},
		{"ideographic space", "\u3000x", []int32{30, 649}},
		{"emoji", "\U0001F600", []int32{30, 0}},
		{"emoji run merged", "\U0001F600\U0001F600 hi", []int32{30, 0, 2038}},
		{"trailing emoji", "I love it \U0001F600\U0001F44D", []int32{16, 241, 21, 30, 0}},
		{"CJK", "中文", []int32{30, 0}},
		{"precomposed accent", "caf\u00e9", []int32{976, 209, 1133}},
		{"combining accent composes", "cafe\u0301", []int32{976, 209, 1133}},
		{"ligature fi", "\ufb01ne", []int32{839}},
		{"full width", "ＡＢＣ", []int32{74, 2512}},
		{"circled digit", "①", []int32{207}},
		{"Unicode 16 outlined letter", "\U0001CCD6", []int32{74}},
		{"long word", "pneumonoultramicroscopicsilicovolcanoconiosis",
			[]int32{581, 296, 400, 175, 102, 474, 933, 2056, 310, 7, 359, 2893, 7, 233, 4971, 3239, 2269, 102, 804, 1055, 2630}},
		{"41 combining marks in a row", "e" + strings.Repeat("\u0301", 40),
			append([]int32{30, 1133}, slices.Repeat([]int32{7934}, 39)...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sp.Encode(tc.text)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Encode(%q) = %v, want %v", tc.text, got, tc.want)
			}
		})
	}
}

type jsCase struct {
	Source string  `json:"source"`
	Vocab  string  `json:"vocab"`
	Text   string  `json:"text"`
	IDs    []int32 `json:"ids"`
}

func readJSONL(tb testing.TB, path string) []jsCase {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("reference file: %v", err)
	}
	defer f.Close()
	var cases []jsCase
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for line := 1; sc.Scan(); line++ {
		var c jsCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			tb.Fatalf("%s:%d: %v", path, line, err)
		}
		if c.IDs == nil {
			tb.Fatalf("%s:%d: no ids", path, line)
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(cases) == 0 {
		tb.Fatalf("%s: no cases", path)
	}
	return cases
}

func checkCases(t *testing.T, sp *SentencePiece, cases []jsCase, path string) {
	t.Helper()
	bad := 0
	for i, c := range cases {
		got, err := sp.Encode(c.Text)
		if err != nil {
			t.Errorf("%s:%d: Encode(%q): %v", path, i+1, c.Text, err)
			continue
		}
		if !slices.Equal(got, c.IDs) {
			if bad++; bad <= 10 {
				t.Errorf("%s:%d (%s): Encode(%.80q)\n got %v\nwant %v", path, i+1, c.Source, c.Text, got, c.IDs)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d texts differ from the reference", bad, len(cases))
	}
}

// TestSentencePieceReference checks every text of the reference file made
// by the JS library (scripts/reference/gen.js); the file is part of the
// repository, so its absence is a failure.
func TestSentencePieceReference(t *testing.T) {
	path := filepath.Join("..", "..", "testdata", "use-lite", "reference_tokens.jsonl")
	checkCases(t, loadUSELite(t), readJSONL(t, path), path)
}

// TestSentencePieceJSCases checks the tricky and random texts of
// testdata/gen_sp_cases.js, also under a toy vocabulary that exercises the
// reference's quirks the real one never triggers (pieces beyond the BMP,
// positions no path reaches).
func TestSentencePieceJSCases(t *testing.T) {
	path := filepath.Join("testdata", "sp_js_cases.jsonl")
	toy, err := loadSPFile(filepath.Join("testdata", "sp_toy_vocab.json"))
	if err != nil {
		t.Fatal(err)
	}
	byVocab := map[string][]jsCase{}
	for _, c := range readJSONL(t, path) {
		byVocab[c.Vocab] = append(byVocab[c.Vocab], c)
	}
	for name, sp := range map[string]*SentencePiece{"use-lite": loadUSELite(t), "toy": toy} {
		if len(byVocab[name]) == 0 {
			t.Fatalf("no cases for vocabulary %q", name)
		}
		t.Run(name, func(t *testing.T) { checkCases(t, sp, byVocab[name], path) })
	}
}

func TestSentencePieceInvalidUTF8(t *testing.T) {
	sp := loadUSELite(t)
	for _, tc := range []struct {
		text   string
		offset string
	}{
		{"\xff", "byte offset 0"},
		{"ok \xc3\x28", "byte offset 3"},
		{"caf\u00e9\xed\xa0\x80", "byte offset 5"}, // an encoded surrogate
	} {
		ids, err := sp.Encode(tc.text)
		if !errors.Is(err, ErrInvalidUTF8) || !strings.Contains(err.Error(), tc.offset) {
			t.Errorf("Encode(%q) = %v, %v; want ErrInvalidUTF8 at %s", tc.text, ids, err, tc.offset)
		}
	}
}

func TestLoadSentencePieceJSONErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty input", ``, "not a JSON array"},
		{"not JSON", `[["a", 1]`, "not a JSON array"},
		{"object", `{"a": 1}`, "not a JSON array"},
		{"null", `null`, "not a JSON array"},
		{"empty array", `[]`, "empty vocabulary"},
		{"trailing data", `[["a", 1]] x`, "data after"},
		{"entry not array", `[["a", 1], "b"]`, "entry 1"},
		{"entry null", `[null]`, "entry 0"},
		{"short entry", `[["a", 1], ["b"]]`, "entry 1"},
		{"long entry", `[["a", 1, 2]]`, "entry 0"},
		{"piece number", `[["a", 1], [2, 1]]`, "entry 1: piece"},
		{"piece null", `[[null, 1]]`, "entry 0: piece"},
		{"score string", `[["a", "1"]]`, "entry 0: score"},
		{"score bool", `[["a", 1], ["b", true]]`, "entry 1: score"},
		{"score out of range", `[["a", 1e999]]`, "entry 0: score"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sp, err := LoadSentencePieceJSON(strings.NewReader(tc.in))
			if !errors.Is(err, ErrBadVocab) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, %v; want ErrBadVocab mentioning %q", sp, err, tc.want)
			}
		})
	}
	if _, err := NewSentencePiece([]string{"a"}, nil); !errors.Is(err, ErrBadVocab) {
		t.Errorf("mismatched lengths: %v", err)
	}
	if _, err := NewSentencePiece(nil, nil); !errors.Is(err, ErrBadVocab) {
		t.Errorf("empty: %v", err)
	}
}

func TestSentencePieceNullScores(t *testing.T) {
	sp, err := LoadSentencePieceJSON(strings.NewReader(
		`[["<unk>",0],["r",0],["r",0],["r",0],["r",0],["r",0],["\u2581",-1],["a",-1],["\u2581a",null]]`))
	if err != nil {
		t.Fatal(err)
	}
	// ▁a (null) makes a path that scores exactly 0, which counts as unset,
	// so the later candidate ▁ + a (-2) replaces it: the reference's quirk.
	got, _ := sp.Encode("a")
	if want := []int32{6, 7}; !slices.Equal(got, want) {
		t.Errorf("Encode(a) = %v, want %v", got, want)
	}
	if p, ok := sp.Piece(8); !ok || p != "\u2581a" {
		t.Errorf("Piece(8) = %q, %v", p, ok)
	}
	if _, ok := sp.Piece(9); ok {
		t.Error("Piece(9) out of range reported ok")
	}
}

func TestSentencePieceConcurrent(t *testing.T) {
	sp := loadUSELite(t)
	texts := []string{"Hello world", "", " :) ", "e" + strings.Repeat("\u0301", 40), strings.Repeat("long text ", 500), "中文 \U0001F600"}
	checkConcurrent(t, sp, texts)
}

func TestSentencePieceAppendEncodeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	sp := loadUSELite(t)
	dst := make([]int32, 0, 256)
	for _, text := range []string{"The movie was great, I loved it!", "Très bien, ça marche — 10:00 ☺"} {
		sp.AppendEncode(dst[:0], text) // warm the pool
		allocs := testing.AllocsPerRun(100, func() {
			dst, _ = sp.AppendEncode(dst[:0], text)
		})
		if allocs != 0 {
			t.Errorf("AppendEncode(%q) allocates %.1f times a call, want 0", text, allocs)
		}
	}
}

// TestNormExact checks the slow normaliser against x/text on texts where
// x/text's stream-safe limit does not apply, and that nfkcAppend repairs
// the texts where it does.
func TestNormExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []rune("aeAE \u0301\u0323\u0308\u0316\u0345\u064e\u05b0\u093c\u094d\u0f71\u0f72\u0f80\u1100\u1161\u11a8\uac00\ufb01\u2460\u00c5\u212b\u1e9b\u0344\ufdfa\u3099\u304b\u0915\U0001D15E\U0001D165\u0b47\u0b3e\u0cc6\u0cc2\u0cd5")
	for i := 0; i < 5000; i++ {
		var b strings.Builder
		for n := r.IntN(12); n > 0; n-- {
			b.WriteRune(alphabet[r.IntN(len(alphabet))])
		}
		s := b.String()
		if got, want := normExact(s, norm.NFKD, true), norm.NFKC.String(s); got != want {
			t.Fatalf("NFKC normExact(%+q) = %+q, x/text gives %+q", s, got, want)
		}
		if got, want := normExact(s, norm.NFD, false), norm.NFC.String(s); got != want {
			t.Fatalf("NFC normExact(%+q) = %+q, x/text gives %+q", s, got, want)
		}
	}
	long := "e" + strings.Repeat("\u0301\u0323", 20)
	got := string(nfkcAppend(nil, long))
	want := "\u1eb9" + strings.Repeat("\u0323", 19) + strings.Repeat("\u0301", 20) // ẹ, then marks by class
	if got != want {
		t.Errorf("nfkcAppend(long run) = %+q, want %+q", got, want)
	}
	if !utf8.ValidString(got) || strings.ContainsRune(got, '\u034f') {
		t.Errorf("nfkcAppend left a CGJ: %+q", got)
	}
}

// checkConcurrent encodes texts from 8 goroutines at once and checks every
// result against a sequential encoding (run with -race).
func checkConcurrent(t *testing.T, tok Tokenizer, texts []string) {
	t.Helper()
	want := make([][]int32, len(texts))
	for i, s := range texts {
		want[i], _ = tok.Encode(s)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 200; k++ {
				i := (g + k) % len(texts)
				if got, err := tok.Encode(texts[i]); err != nil || !slices.Equal(got, want[i]) {
					t.Errorf("concurrent Encode(%.20q) = %v, %v", texts[i], got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
