// Package plot is lower-layer skipping (PLOT, after SkipBERT): a table of
// the backbone's lower-layer states for short token n-grams, computed once
// per backbone, replaces layers 1..cut at serving and training time.
//
// An entry is the output of layers 1..cut for one n-gram (1 to 3 prepared
// token ids) run through the backbone as its own short sequence: one state
// row per position, stored as fp16 with a CRC32-C over the n-gram and the
// values (EncodeEntry, DecodeEntry).
//
// A sequence's states at the cut are merged from entries (Merger): every
// position i has a window, the n-gram ids[i-1..i+1] clipped to the
// sequence. The window's entry is looked up whole, else its left bigram
// ids[i-1..i], else its right bigram ids[i..i+1], else the unigram ids[i],
// else nothing. Every entry found adds its rows to the positions it covers
// (so position i gets the centre row of its own trigram and the side rows of
// its neighbours' trigrams, as in SkipBERT); a position's state is the mean
// of what it got, then the backbone's normalisation at the cut: a post-LN
// backbone's output layer norm, or for a pre-LN backbone whose positions are
// added to the embeddings, the position signal moved from the n-gram slots
// to the real position. A position that got nothing is zero before that
// step.
//
// Package plot is pure computation over the model package; where entries
// live (Badger) is its caller's business, behind Source.
package plot
