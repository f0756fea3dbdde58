package plot

import (
	"context"
	"fmt"

	"github.com/smile-vplm/smile/model"
)

// Compute runs each n-gram through bb's layers 1..cut as its own short
// sequence and returns its entry (EncodeEntry), in grams' order. It uses
// bb's device, so it runs on the goroutine that owns it (a device work
// item, a test).
func Compute(ctx context.Context, bb model.Backbone, cut int, grams []Gram) ([][]byte, error) {
	if cut < 1 || cut >= bb.Info().Layers {
		return nil, fmt.Errorf("%w: plot: cut %d of %d layers", model.ErrBadInput, cut, bb.Info().Layers)
	}
	if len(grams) == 0 {
		return nil, nil
	}
	vocab := bb.Info().VocabSize
	seqs := make([][]int32, len(grams))
	for i, g := range grams {
		if g.N < 1 || g.N > MaxN {
			return nil, fmt.Errorf("%w: plot: n-gram of %d ids", model.ErrBadInput, g.N)
		}
		for _, id := range g.IDs() {
			if id < 0 || int(id) >= vocab {
				return nil, fmt.Errorf("%w: plot: n-gram %v: id %d outside the vocabulary [0, %d)", model.ErrBadInput, g, id, vocab)
			}
		}
		seqs[i] = g.T[:g.N:g.N]
	}
	st, err := bb.Embed(ctx, seqs)
	if err != nil {
		return nil, err
	}
	defer bb.Release(st)
	if err := bb.RunLayers(ctx, st, cut, nil); err != nil {
		return nil, err
	}
	w := bb.StateWidth(cut)
	h := make([]float32, st.H.Rows*st.H.Cols)
	if err := bb.Device().Download(h, st.H); err != nil {
		return nil, err
	}
	if st.H.Cols != w {
		return nil, fmt.Errorf("%w: plot: states of width %d at layer %d, want %d", model.ErrBadInput, st.H.Cols, cut, w)
	}
	out := make([][]byte, len(grams))
	for i, g := range grams {
		o := st.Offsets[i]
		if out[i], err = EncodeEntry(g, w, h[o*w:(o+int(g.N))*w]); err != nil {
			return nil, err
		}
	}
	return out, nil
}
