package tokenizer

import (
	"bytes"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// NFKC as the reference computes it: ECMAScript's String.prototype.normalize
// in Node 20 (ICU 78, Unicode 17). golang.org/x/text/unicode/norm differs
// in ways that change token ids, all repaired here:
//
//   - its tables are Unicode 15.0 under Go 1.26. Of the characters added
//     since, 37 have compatibility decompositions onto letters and digits
//     the vocabulary knows (U+A7F1 and the outlined letters and digits
//     U+1CCD6..U+1CCF9): they are mapped before normalising. 46 are
//     combining marks with a non-zero combining class that x/text takes
//     for starters, and 20 are canonical composites x/text neither
//     decomposes nor composes; both change how the marks around them
//     reorder and compose, so texts with one go through normExact, which
//     knows them. (The lists come from comparing every code point under
//     both.)
//   - it writes Stream-Safe Text (UAX #15): after 30 non-starters in a row
//     it inserts U+034F COMBINING GRAPHEME JOINER, and it reorders marks
//     only within such a segment. ICU does neither. When U+034F shows up in
//     the output, the text is normalised again by normExact, a direct
//     implementation of the UAX #15 algorithm with no such limit.
//
// Every other character new since Unicode 15.0 is a starter without
// decomposition or composes only with other new characters; none is in the
// vocabulary, so either way it is an unknown piece with the same ids.

// nfkcAppend appends the NFKC form of s to dst.
func nfkcAppend(dst []byte, s string) []byte {
	if isASCII(s) {
		return append(dst, s...) // ASCII is NFKC-stable
	}
	patch, exact := scanNewChars(s)
	if patch {
		s = patchNewCompat(s)
	}
	start := len(dst)
	if !exact {
		dst = norm.NFKC.AppendString(dst, s)
		if !bytes.Contains(dst[start:], []byte("\u034F")) {
			return dst
		}
		dst = dst[:start]
	}
	return append(dst, normExact(s, norm.NFKD, true)...)
}

// nfcAppend appends the NFC form of s to dst, with the same repair of
// x/text's stream-safe limit (Python's unicodedata has none either).
func nfcAppend(dst []byte, s string) []byte {
	if isASCII(s) {
		return append(dst, s...)
	}
	start := len(dst)
	dst = norm.NFC.AppendString(dst, s)
	if bytes.Contains(dst[start:], []byte("\u034F")) {
		dst = append(dst[:start], normExact(s, norm.NFD, false)...)
	}
	return dst
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// scanNewChars reports whether s holds a character that newCompat maps
// (patch) or one that newCCC knows (exact). Only lead bytes E0, E1, EA and
// F0 can start one, so most text is skipped byte by byte.
func scanNewChars(s string) (patch, exact bool) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case 0xE0, 0xE1, 0xEA, 0xF0:
			r, _ := utf8.DecodeRuneInString(s[i:])
			if _, ok := newCompat(r); ok {
				patch = true
			} else if newCCC(r) != 0 || newStarters[r] {
				exact = true
			}
		}
	}
	return patch, exact
}

// newCompat maps the characters added after Unicode 15.0 whose NFKC form
// in Unicode 17 is a different string.
func newCompat(r rune) (rune, bool) {
	switch {
	case r == 0xA7F1: // MODIFIER LETTER CAPITAL S (Unicode 17)
		return 'S', true
	case r >= 0x1CCD6 && r <= 0x1CCEF: // OUTLINED LATIN CAPITAL LETTER A..Z (Unicode 16)
		return 'A' + (r - 0x1CCD6), true
	case r >= 0x1CCF0 && r <= 0x1CCF9: // OUTLINED DIGIT ZERO..NINE (Unicode 16)
		return '0' + (r - 0x1CCF0), true
	}
	return 0, false
}

// newCCC is the canonical combining class, in Unicode 17, of the marks
// added after Unicode 15.0 that have one; 0 for every other rune.
func newCCC(r rune) uint8 {
	switch {
	case r == 0x0897, r >= 0x1ACF && r <= 0x1ADC, r >= 0x1AE0 && r <= 0x1AE5, r >= 0x1AE7 && r <= 0x1AEA,
		r >= 0x10D69 && r <= 0x10D6D, r == 0x1E5EE,
		r == 0x1E6E3, r == 0x1E6E6, r == 0x1E6EE, r == 0x1E6EF, r == 0x1E6F5:
		return 230
	case r == 0x1ADD, r == 0x1AE6, r == 0x10EFA, r == 0x10EFB, r == 0x1E5EF:
		return 220
	case r == 0x1AEB:
		return 234
	case r >= 0x113CE && r <= 0x113D0, r == 0x1612F:
		return 9
	}
	return 0
}

// newPairs are the primary composites added after Unicode 15.0 with their
// canonical decompositions (Todhri, Tulu-Tigalari, Gurung Khema, Kirat Rai).
var newPairs = [...]struct{ a, b, c rune }{
	{0x105D2, 0x0307, 0x105C9}, {0x105DA, 0x0307, 0x105E4},
	{0x11382, 0x113C9, 0x11383}, {0x11384, 0x113BB, 0x11385}, {0x1138B, 0x113C2, 0x1138E},
	{0x11390, 0x113C9, 0x11391}, {0x113C2, 0x113C2, 0x113C5}, {0x113C2, 0x113B8, 0x113C7},
	{0x113C2, 0x113C9, 0x113C8},
	{0x1611E, 0x1611E, 0x16121}, {0x1611E, 0x16129, 0x16122}, {0x1611E, 0x1611F, 0x16123},
	{0x16129, 0x1611F, 0x16124}, {0x1611E, 0x16120, 0x16125}, {0x16121, 0x1611F, 0x16126},
	{0x16122, 0x1611F, 0x16127}, {0x16121, 0x16120, 0x16128},
	{0x16D67, 0x16D67, 0x16D68}, {0x16D63, 0x16D67, 0x16D69}, {0x16D69, 0x16D67, 0x16D6A},
}

// newStarters holds the composites of newPairs and their first halves:
// a text with one needs normExact.
var newStarters = func() map[rune]bool {
	m := map[rune]bool{}
	for _, p := range newPairs {
		m[p.a], m[p.c] = true, true
	}
	return m
}()

// newDecompose appends the full canonical decomposition of a composite of
// newPairs, or r itself.
func newDecompose(dst []rune, r rune) []rune {
	for _, p := range newPairs {
		if p.c == r {
			return append(newDecompose(dst, p.a), p.b)
		}
	}
	return append(dst, r)
}

func patchNewCompat(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if m, ok := newCompat(r); ok {
			r = m
		}
		b.WriteRune(r)
	}
	return b.String()
}

// normExact is NFKC (decompose = norm.NFKD) or NFC (norm.NFD) by the book
// (UAX #15 sections 3.11 and 3.7): full decomposition, canonical ordering
// of every run of non-starters however long, canonical composition. It
// takes the decompositions, combining classes and primary composites from
// x/text one character or pair at a time, where its stream-safe limit
// cannot bite, and with icu17 the classes of newCCC. It is slow and only
// used for rare texts (very long runs of marks, marks new since 15.0).
func normExact(s string, decompose norm.Form, icu17 bool) string {
	var seq []rune
	var ccc []uint8
	var parts []rune
	for _, r := range s {
		for _, d := range decompose.String(string(r)) {
			parts = append(parts[:0], d)
			if icu17 {
				parts = newDecompose(parts[:0], d)
			}
			for _, d := range parts {
				c := norm.NFD.PropertiesString(string(d)).CCC()
				if icu17 && c == 0 {
					c = newCCC(d)
				}
				seq = append(seq, d)
				ccc = append(ccc, c)
			}
		}
	}
	// Canonical ordering: a stable sort of each run of non-starters by class.
	for i := 0; i < len(seq); {
		if ccc[i] == 0 {
			i++
			continue
		}
		j := i
		for j < len(seq) && ccc[j] != 0 {
			j++
		}
		idx := make([]int, j-i)
		for k := range idx {
			idx[k] = i + k
		}
		slices.SortStableFunc(idx, func(a, b int) int { return int(ccc[a]) - int(ccc[b]) })
		rs, cs := make([]rune, len(idx)), make([]uint8, len(idx))
		for k, x := range idx {
			rs[k], cs[k] = seq[x], ccc[x]
		}
		copy(seq[i:j], rs)
		copy(ccc[i:j], cs)
		i = j
	}
	// Canonical composition.
	out := make([]rune, 0, len(seq))
	starter := -1  // index in out of the last starter
	var last uint8 // class of the last character kept after that starter
	for i, r := range seq {
		c := ccc[i]
		if starter >= 0 {
			adjacent := starter == len(out)-1
			if adjacent || (last != 0 && last < c) {
				if p, ok := primaryComposite(out[starter], r, icu17); ok {
					out[starter] = p
					continue
				}
			}
		}
		if c == 0 {
			starter, last = len(out), 0
		} else {
			last = c
		}
		out = append(out, r)
	}
	return string(out)
}

// primaryComposite reports the primary composite of a starter a and a
// following character b, if there is one: NFC of the pair is a single
// character exactly then (a is itself a composite built the same way, or a
// character without decomposition). With icu17, newPairs count too.
func primaryComposite(a, b rune, icu17 bool) (rune, bool) {
	if icu17 {
		for _, p := range newPairs {
			if p.a == a && p.b == b {
				return p.c, true
			}
		}
	}
	var buf [2 * utf8.UTFMax]byte
	p := utf8.AppendRune(buf[:0], a)
	p = utf8.AppendRune(p, b)
	out := norm.NFC.Append(nil, p...)
	r, n := utf8.DecodeRune(out)
	if n != len(out) || r == a {
		return 0, false
	}
	return r, true
}
