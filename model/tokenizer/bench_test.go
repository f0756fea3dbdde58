package tokenizer

import (
	"path/filepath"
	"testing"
)

// benchTexts returns the review sentences (imdb, yelp, amazon) or the long
// texts (spam, brown) of the reference file.
func benchTexts(b *testing.B, long bool) []string {
	b.Helper()
	var out []string
	for _, c := range readJSONL(b, filepath.Join("..", "..", "testdata", "use-lite", "reference_tokens.jsonl")) {
		switch c.Source {
		case "imdb", "yelp", "amazon":
			if !long {
				out = append(out, c.Text)
			}
		case "spam", "brown":
			if long {
				out = append(out, c.Text)
			}
		}
	}
	if len(out) == 0 {
		b.Fatal("no benchmark texts")
	}
	return out
}

// BenchmarkSentencePiece encodes realistic texts with the USE-Lite
// vocabulary; texts/s is the figure to compare with the reference JS
// tokenizer (about 12,000 sentences/s on this machine kind).
func BenchmarkSentencePiece(b *testing.B) {
	sp := loadUSELite(b)
	for _, bc := range []struct {
		name string
		long bool
	}{{"sentences", false}, {"long", true}} {
		texts := benchTexts(b, bc.long)
		var bytes int
		for _, s := range texts {
			bytes += len(s)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(bytes / len(texts)))
			b.ReportAllocs()
			tokens := 0
			n := 0
			for b.Loop() {
				ids, err := sp.Encode(texts[n%len(texts)])
				if err != nil {
					b.Fatal(err)
				}
				tokens += len(ids)
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "texts/s")
			b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.SetBytes(int64(bytes / len(texts)))
			b.RunParallel(func(pb *testing.PB) {
				dst := make([]int32, 0, 1024)
				i := 0
				for pb.Next() {
					dst, _ = sp.AppendEncode(dst[:0], texts[i%len(texts)])
					i++
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "texts/s")
		})
	}
}

func BenchmarkLoadSentencePieceJSON(b *testing.B) {
	for b.Loop() {
		if _, err := loadSPFile(useLiteVocab); err != nil {
			b.Fatal(err)
		}
	}
}
