package bert

import (
	"context"
	"math/rand/v2"
	"testing"
)

// BenchmarkForwardBertBase runs bert-base geometry (random weights) over a
// batch of 32 sequences of 128 tokens: embeddings, 12 layers and the pooler.
// Heavy (about 0.7 TFLOP a pass): run with -benchtime=1x.
//
//	go test ./model/bert -run '^$' -bench ForwardBertBase -benchtime=1x
func BenchmarkForwardBertBase(b *testing.B) {
	const batch, seqLen = 32, 128
	dev := newDevice(b)
	cfg := BaseConfig()
	m, err := NewRandom(dev, cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	r := rand.New(rand.NewPCG(1, 1))
	ids := make([][]int32, batch)
	for s := range ids {
		ids[s] = m.Prepare(randomIDs(r, cfg, seqLen-2)[0])
	}
	dst := make([]float32, batch*cfg.Hidden)
	ctx := context.Background()
	cpu0 := cpuSeconds()
	for b.Loop() {
		if err := forward(ctx, m, ids, dst); err != nil {
			b.Fatal(err)
		}
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	// CPU seconds per pass: on a shared machine, wall time says how busy the
	// neighbours were; this says what the pass cost.
	b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N), "cpu-s/op")
	b.ReportMetric(batch/sec, "seq/s")
	b.ReportMetric(2*float64(batch*seqLen)*float64(cfg.macsPerToken(seqLen))/sec/1e9, "GFLOP/s")
}

// BenchmarkForwardTiny is the tiny geometry over a mixed batch: a quick check
// of per-call overhead (and allocations) of the forward pass.
func BenchmarkForwardTiny(b *testing.B) {
	dev := newDevice(b)
	cfg := TinyConfig()
	m, err := NewRandom(dev, cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ids := randomIDs(rand.New(rand.NewPCG(1, 1)), cfg, 64, 30, 7, 12)
	dst := make([]float32, len(ids)*cfg.Hidden)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := forward(ctx, m, ids, dst); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ids)*b.N)/b.Elapsed().Seconds(), "seq/s")
}
