package model_test

import (
	"context"
	"fmt"

	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/bert"
)

// ExampleRunner serves two vPLMs and the plain backbone in one forward pass.
func ExampleRunner() {
	dev, _ := cpu.New(cpu.SingleThreadConfig())
	bb, _ := bert.NewRandom(dev, bert.TinyConfig(), 1)
	defer bb.Close()
	r := model.NewRunner(bb)
	defer r.Close()

	spam, _ := model.NewParams(bb, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 8,
		Head: model.HeadClassify, Labels: []string{"ham", "spam"}}, 1)
	search, _ := model.NewParams(bb, model.ParamsSpec{Adapter: model.AdapterLoRA, Rank: 4,
		Head: model.HeadEmbed, EmbedDim: 16}, 2)
	// Blobs are what storage keeps; Upload decodes one to the device.
	a, _ := r.Upload(spam.Encode())
	b, _ := r.Upload(search.Encode())
	defer a.Free()
	defer b.Free()

	ids := bb.Prepare([]int32{5, 6, 7})
	out, err := r.Forward(context.Background(), []model.Item{
		{IDs: ids, Params: a}, {IDs: ids, Params: b}, {IDs: ids},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(a.Head().Labels, len(out[0]), len(out[1]), len(out[2]))
	// Output: [ham spam] 2 16 64
}
