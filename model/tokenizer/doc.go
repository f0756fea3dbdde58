// Package tokenizer turns text into the token ids of a backbone's
// vocabulary. Two tokenizers implement Tokenizer; both are safe for
// concurrent use, reuse their buffers through a sync.Pool, never truncate in
// Encode, and reject invalid UTF-8 with ErrInvalidUTF8 (naming the byte
// offset).
//
// # SentencePiece (Universal Sentence Encoder Lite)
//
// SentencePiece, loaded from the reference's vocab.json by
// LoadSentencePieceJSON, is a port of the unigram tokenizer of the JS
// library @energetic-ai/embeddings 0.2.0 and gives the same ids for every
// valid UTF-8 text. shared/USE-LITE.md lists the rules; in short: NFKC,
// "▁" in front and for every ASCII space, Viterbi over code points with
// ids 0-5 never matched, a code point no piece starts becomes id 0, ties
// and the "0 means unset" initialisation as in the reference, null scores
// count as 0, runs of id 0 merged. The lattice walks a double-array trie
// over dense rune codes; with AppendEncode and a reused slice, encoding
// allocates nothing.
//
// Behaviour of the reference that the port keeps, beyond USE-LITE.md (the
// toy vocabulary testdata/sp_toy_vocab.json exercises the first three; the
// real vocabulary cannot trigger them):
//
//   - A position that no piece ends at keeps best = 0 (unset) and word 0.
//     A path through it scores as if it started there from 0, which beats
//     any real path, and backtracking that lands there emits id 0 and steps
//     back by the length of piece 0. With pieces "cd" and "de" but no "c"
//     or "d", "cde" gives [▁, 0, de]; "cd" gives [▁, 0].
//   - Backtracking steps back by a piece's UTF-16 length while the lattice
//     counts code points, so a piece with a character beyond the BMP eats
//     its left neighbour: with a piece "😀", the text "😀" gives only its id.
//   - A piece that appears twice is matched as its last id.
//   - A piece 0 with an empty string would make the reference loop forever;
//     the port steps back by 1.
//   - NFKC is that of the JS runtime's ICU: Node 20.20 has Unicode 17,
//     golang.org/x/text has 15.0 under Go 1.26. The port reproduces
//     Unicode 17 for every character that can change ids (nfkc.go: 37 new
//     compatibility mappings such as U+1CCD6 → "A", 46 new combining
//     classes, 20 new composites) and also undoes x/text's Stream-Safe
//     limit (a U+034F inserted after 30 combining marks), which ICU does
//     not have. The ids of such texts depend on the reference's Node
//     version; the reference files were made with Node 20.20.
//
// # WordPiece (BERT)
//
// WordPiece, loaded from a BERT vocab.txt by LoadWordPiece, follows Hugging
// Face transformers' Python BertTokenizer: clean the text (drop NUL, U+FFFD
// and every category C* code point; whitespace becomes a space), put spaces
// around CJK ideographs, NFC, split on whitespace, lower-case with Python's
// str.lower (U+0130 → "i̇", final sigma) and strip accents (NFD, drop Mn)
// as configured, split on punctuation (ASCII symbols and Unicode P*), then
// greedy longest-match-first with "##" continuations; a word with no match
// or longer than MaxInputCharsPerWord becomes [UNK]. Special tokens written
// in the text are plain text. Encode gives the ids without special tokens;
// EncodeWithSpecial and EncodePair frame and truncate them as BERT expects.
// Character classes use Go's Unicode 15.0 tables where Python uses its own
// unicodedata version; the two agree on every code point both assign.
//
// # Tests
//
// The parity tests read testdata/use-lite/reference_tokens.jsonl (made by
// scripts/reference/gen.js from the JS library) and testdata/sp_js_cases.jsonl
// here (made by testdata/gen_sp_cases.js from the same library, with tricky
// and random texts under the real and the toy vocabulary). The fuzz targets
// FuzzSentencePiece, FuzzSentencePieceVocab, FuzzWordPiece and
// FuzzWordPieceVocab check, besides the absence of panics, that the
// SentencePiece lattice equals a line-by-line Go transcription of the JS.
package tokenizer
