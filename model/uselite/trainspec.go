package uselite

import (
	"fmt"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model"
)

// TrainSpec describes the model for the trainer: host copies of every
// weight, pre-LN blocks and the mean-pool, tanh, L2 head (model.Trainable).
func (m *Model) TrainSpec() (*model.TrainSpec, error) {
	if m.closed {
		return nil, fmt.Errorf("%w: use-lite model is closed", model.ErrBadInput)
	}
	var err error
	dl := func(x gpu.Mat) []float32 {
		if x.IsZero() {
			return nil
		}
		v := make([]float32, x.Rows*x.Cols)
		if err == nil {
			err = m.dev.Download(v, x)
		}
		return v
	}
	c := m.cfg
	s := &model.TrainSpec{
		Info: m.Info(),
		Embedding: model.EmbeddingSpec{
			Vocab: c.Vocab, Width: c.EmbedDim, Table: dl(m.emb),
			MaxPositions: c.MaxLen, Positions: dl(m.timing),
		},
	}
	for _, lw := range m.layers {
		lc := lw.cfg
		b := model.BlockSpec{
			PreLN: true, In: lc.In, Attention: lc.Attention, Out: lc.Out, Heads: lc.Heads, FFN: lc.FFN,
			QueryScale: lc.QueryScale, Act: gpu.ActReLU, LNEps: c.LayerNorm,
			LN1G: dl(lw.ln1G), LN1B: dl(lw.ln1B),
			QKVW: dl(lw.qkvW), QKVB: dl(lw.qkvB), OutW: dl(lw.outW), OutB: dl(lw.outB),
			LN2G: dl(lw.ln2G), LN2B: dl(lw.ln2B),
			F1W: dl(lw.f1W), F1B: dl(lw.f1B), F2W: dl(lw.f2W), F2B: dl(lw.f2B),
		}
		if lc.ResidualProj {
			b.ResW = dl(lw.resW)
		}
		s.Blocks = append(s.Blocks, b)
	}
	last := c.Layers[len(c.Layers)-1].Out
	s.Pool = model.PoolSpec{Mode: model.PoolMean, In: last, Out: c.OutputDim, W: dl(m.poolW), B: dl(m.poolB),
		Act: gpu.ActTanh, L2: true, L2Eps: c.L2Eps}
	if err != nil {
		return nil, fmt.Errorf("use-lite: train spec: %w", err)
	}
	return s, s.Validate()
}

var _ model.Trainable = (*Model)(nil)
