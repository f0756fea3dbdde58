package bert_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/model/backbonefile"
	"github.com/smile-vplm/smile/model/bert"
)

// Convert a Hugging Face directory, load it on the CPU device and embed two
// id sequences of different lengths in one packed batch.
func Example() {
	dir, _ := os.MkdirTemp("", "bert-example")
	defer os.RemoveAll(dir)
	hf := filepath.Join(dir, "tiny-bert")
	if err := bert.WriteHFDir(hf, bert.TinyConfig(), 1); err != nil { // a random BERT in HF layout
		panic(err)
	}
	var buf bytes.Buffer
	if err := bert.ConvertHF(hf, &buf); err != nil {
		panic(err)
	}
	f, err := backbonefile.Parse("tiny-bert.smile", buf.Bytes())
	if err != nil {
		panic(err)
	}
	dev, err := cpu.New(cpu.DefaultConfig())
	if err != nil {
		panic(err)
	}
	m, err := bert.Load(dev, f)
	if err != nil {
		panic(err)
	}
	defer m.Close()

	ctx := context.Background()
	ids := [][]int32{m.Prepare([]int32{40, 41, 12}), m.Prepare([]int32{60})}
	st, err := m.Embed(ctx, ids)
	if err != nil {
		panic(err)
	}
	defer m.Release(st)
	if err := m.RunLayers(ctx, st, m.Info().Layers, nil); err != nil {
		panic(err)
	}
	pooled := make([]float32, st.Seqs()*m.Info().OutputDim)
	if err := m.Pool(ctx, st, pooled); err != nil {
		panic(err)
	}
	fmt.Println(m.Info().Family, m.Info().Layers, "layers,", st.Tokens(), "token rows,", len(pooled)/m.Info().OutputDim, "pooled rows")
	// Output: bert 3 layers, 8 token rows, 2 pooled rows
}
