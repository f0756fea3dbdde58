package uselite_test

import (
	"context"
	"slices"
	"testing"

	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/benchdata"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/model"
)

// BenchmarkEmbedIMDB embeds the 1,000 imdb sentences (tokenizer included)
// in batches of 32 length-sorted texts, as `smile bench forward` does, and
// reports sequences per second.
func BenchmarkEmbedIMDB(b *testing.B) {
	z := testenv.UseLite(b)
	dev, err := cpu.New(cpu.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	bb, err := z.Load(dev, zoo.DefaultModel)
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
	texts := benchdata.IMDB()
	slices.SortStableFunc(texts, func(x, y string) int { return len(x) - len(y) })
	ctx := context.Background()
	opts := model.DefaultEmbedOptions()
	b.ResetTimer()
	for b.Loop() {
		for i := 0; i < len(texts); i += 32 {
			ids, err := model.Tokenize(bb, texts[i:min(i+32, len(texts))], opts)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := model.EmbedIDs(ctx, bb, ids, 1<<30); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(texts)*b.N)/b.Elapsed().Seconds(), "seq/s")
}
