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
	ctx := context.Background()
	opts := model.DefaultEmbedOptions()
	b.ResetTimer()
	for b.Loop() {
		ids, err := model.Tokenize(bb, texts, opts)
		if err != nil {
			b.Fatal(err)
		}
		slices.SortStableFunc(ids, func(x, y []int32) int { return len(x) - len(y) })
		for i := 0; i < len(ids); i += 32 {
			if _, err := model.EmbedIDs(ctx, bb, ids[i:min(i+32, len(ids))], model.MaxBatchTokensLimit); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(texts)*b.N)/b.Elapsed().Seconds(), "seq/s")
}
