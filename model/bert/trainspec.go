package bert

import (
	"fmt"
	"math"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model"
)

// TrainSpec describes the model for the trainer: host copies of every
// weight, post-LN blocks and the [CLS] tanh pooler (model.Trainable).
func (m *Model) TrainSpec() (*model.TrainSpec, error) {
	if m.weights == nil {
		return nil, fmt.Errorf("%w: bert: model closed", model.ErrBadInput)
	}
	var err error
	dl := func(x gpu.Mat) []float32 {
		v := make([]float32, x.Rows*x.Cols)
		if err == nil {
			err = m.dev.Download(v, x)
		}
		return v
	}
	c := m.cfg
	H := c.Hidden
	eps := float32(c.LayerNormEps)
	s := &model.TrainSpec{
		Info: m.info,
		Embedding: model.EmbeddingSpec{
			Vocab: c.VocabSize, Width: H, Table: dl(m.word),
			MaxPositions: c.MaxPositions, Positions: dl(m.posType),
			LNGamma: dl(m.embG), LNBeta: dl(m.embB), LNEps: eps,
		},
		Pool: model.PoolSpec{Mode: model.PoolFirst, In: H, Out: H, W: dl(m.poolW), B: dl(m.poolB), Act: gpu.ActTanh},
	}
	for _, l := range m.layers {
		s.Blocks = append(s.Blocks, model.BlockSpec{
			In: H, Attention: H, Out: H, Heads: c.Heads, FFN: c.Intermediate,
			QueryScale: float32(1 / math.Sqrt(float64(H/c.Heads))), Act: c.act(), LNEps: eps,
			LN1G: dl(l.ln1G), LN1B: dl(l.ln1B),
			QKVW: dl(l.qkvW), QKVB: dl(l.qkvB), OutW: dl(l.outW), OutB: dl(l.outB),
			LN2G: dl(l.ln2G), LN2B: dl(l.ln2B),
			F1W: dl(l.ffnInW), F1B: dl(l.ffnInB), F2W: dl(l.ffnOutW), F2B: dl(l.ffnOutB),
		})
	}
	if err != nil {
		return nil, fmt.Errorf("bert: train spec: %w", err)
	}
	return s, s.Validate()
}

var _ model.Trainable = (*Model)(nil)
