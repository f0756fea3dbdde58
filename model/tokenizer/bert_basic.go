package tokenizer

import (
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// The BERT "basic tokenizer" of Hugging Face transformers
// (models/bert/tokenization_bert.py, BasicTokenizer, as of 4.3x), with
// Python's str and unicodedata semantics where they differ from Go's:
// str.lower() is the full lowercase mapping (U+0130 and the final sigma),
// "control" is any category C* (unassigned code points included) and
// str.split() also splits on U+2028 and U+2029.

// basicTokens appends to buf the tokens of text, each a run of bytes; ends
// receives the end offset of each token in buf. text must be valid UTF-8.
func (w *WordPiece) basicTokens(st *wpState, text string) {
	// 1. Clean: drop NUL, U+FFFD and controls, whitespace -> ' '; put spaces
	//    around CJK ideographs.
	clean := st.clean[:0]
	for i := 0; i < len(text); {
		r, size := rune(text[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(text[i:])
		}
		i += size
		switch {
		case r == 0 || r == utf8.RuneError || isBertControl(r):
			continue
		case isBertWhitespace(r):
			clean = append(clean, ' ')
		case w.cfg.TokenizeChineseChars && isCJK(r):
			clean = append(clean, ' ')
			clean = utf8.AppendRune(clean, r)
			clean = append(clean, ' ')
		default:
			clean = utf8.AppendRune(clean, r)
		}
	}
	st.clean = clean
	// 2. NFC, so one character written two ways is one token.
	st.nfc = nfcAppend(st.nfc[:0], string(clean))

	// 3. Split on whitespace; lowercase and strip accents each word; split
	//    it on punctuation.
	st.toks, st.ends = st.toks[:0], st.ends[:0]
	b := st.nfc
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if isPySpace(r) {
			b = b[size:]
			continue
		}
		end := 0
		for end < len(b) {
			r, size := utf8.DecodeRune(b[end:])
			if isPySpace(r) {
				break
			}
			end += size
		}
		word := b[:end]
		b = b[end:]
		if w.cfg.DoLowerCase {
			st.lower = pyLower(st.lower[:0], word)
			word = st.lower
		}
		if w.stripAccents {
			st.strip = stripAccents(st.strip[:0], word)
			word = st.strip
		}
		w.splitPunct(st, word)
	}
}

// splitPunct appends the tokens of word: every punctuation character alone,
// the runs between them as they are.
func (w *WordPiece) splitPunct(st *wpState, word []byte) {
	start := len(st.toks)
	for i := 0; i < len(word); {
		r, size := utf8.DecodeRune(word[i:])
		if isBertPunct(r) {
			if len(st.toks) > start {
				st.ends = append(st.ends, len(st.toks))
			}
			st.toks = append(st.toks, word[i:i+size]...)
			st.ends = append(st.ends, len(st.toks))
			start = len(st.toks)
		} else {
			st.toks = append(st.toks, word[i:i+size]...)
		}
		i += size
	}
	if len(st.toks) > start {
		st.ends = append(st.ends, len(st.toks))
	}
}

// isBertControl is transformers' _is_control: category C* but not \t \n \r.
// Unassigned code points (Cn) count, as unicodedata.category gives "Cn".
func isBertControl(r rune) bool {
	if r == '\t' || r == '\n' || r == '\r' {
		return false
	}
	if r < 0x80 {
		return r < 0x20 || r == 0x7f
	}
	// Every code point not in L, M, N, P, S or Z is in C (Cc Cf Co Cs Cn).
	return !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z)
}

// isBertWhitespace is transformers' _is_whitespace: space, \t, \n, \r, Zs.
func isBertWhitespace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || (r >= 0x80 && unicode.Is(unicode.Zs, r))
}

// isPySpace is Python's str.isspace as str.split() uses it.
func isPySpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}

// isBertPunct is transformers' _is_punctuation: ASCII symbols count too.
func isBertPunct(r rune) bool {
	if r < 0x80 {
		return (r >= 33 && r <= 47) || (r >= 58 && r <= 64) || (r >= 91 && r <= 96) || (r >= 123 && r <= 126)
	}
	return unicode.IsPunct(r)
}

// isCJK is transformers' _is_chinese_char: the CJK Unified Ideographs
// blocks, not Hangul, Hiragana or Katakana.
func isCJK(r rune) bool {
	return (r >= 0x4E00 && r <= 0x9FFF) ||
		(r >= 0x3400 && r <= 0x4DBF) ||
		(r >= 0x20000 && r <= 0x2A6DF) ||
		(r >= 0x2A700 && r <= 0x2B73F) ||
		(r >= 0x2B740 && r <= 0x2B81F) ||
		(r >= 0x2B820 && r <= 0x2CEAF) ||
		(r >= 0xF900 && r <= 0xFAFF) ||
		(r >= 0x2F800 && r <= 0x2FA1F)
}

// pyLower appends Python's str.lower() of word: the simple lowercase
// mapping except U+0130, which becomes "i\u0307", and capital sigma, which
// becomes final sigma at the end of a word (Unicode's Final_Sigma context).
func pyLower(dst, word []byte) []byte {
	for i := 0; i < len(word); {
		r, size := rune(word[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(word[i:])
		}
		switch {
		case r < utf8.RuneSelf:
			if 'A' <= r && r <= 'Z' {
				r += 'a' - 'A'
			}
			dst = append(dst, byte(r))
		case r == 0x130:
			dst = append(dst, "i\u0307"...)
		case r == 0x3A3:
			if finalSigma(word, i, i+size) {
				dst = utf8.AppendRune(dst, 0x3C2)
			} else {
				dst = utf8.AppendRune(dst, 0x3C3)
			}
		default:
			dst = utf8.AppendRune(dst, unicode.ToLower(r))
		}
		i += size
	}
	return dst
}

// finalSigma reports whether the sigma at word[at:next] is in the
// Final_Sigma context: preceded by a cased letter and not followed by one,
// case-ignorable characters skipped (CPython's handle_capital_sigma).
func finalSigma(word []byte, at, next int) bool {
	before := false
	for j := at; j > 0; {
		c, size := utf8.DecodeLastRune(word[:j])
		if !isCaseIgnorable(c) {
			before = isCased(c)
			break
		}
		j -= size
	}
	if !before {
		return false
	}
	for k := next; k < len(word); {
		c, size := utf8.DecodeRune(word[k:])
		if !isCaseIgnorable(c) {
			return !isCased(c)
		}
		k += size
	}
	return true
}

func isCased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) ||
		unicode.In(r, unicode.Other_Lowercase, unicode.Other_Uppercase)
}

// isCaseIgnorable is Unicode's Case_Ignorable: Mn, Me, Cf, Lm, Sk and the
// Word_Break classes MidLetter, MidNumLet and Single_Quote.
func isCaseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', 0xB7, 0x387, 0x55F, 0x5F4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// stripAccents appends word in NFD without its nonspacing marks (Mn).
func stripAccents(dst, word []byte) []byte {
	start := len(dst)
	if isASCII(string(word)) {
		return append(dst, word...)
	}
	// x/text's stream-safe CGJ after 30 marks is itself Mn and goes too.
	dst = norm.NFD.Append(dst, word...)
	out := dst[:start]
	for i := start; i < len(dst); {
		r, size := utf8.DecodeRune(dst[i:])
		if !unicode.Is(unicode.Mn, r) {
			out = append(out, dst[i:i+size]...)
		}
		i += size
	}
	return out
}
