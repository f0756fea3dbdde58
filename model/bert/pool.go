package bert

import (
	"context"
	"fmt"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model"
)

// Pool writes BERT's pooled output, tanh(W h[CLS] + b), one row of Hidden per
// sequence, to dst. The state must have run all layers.
func (m *Model) Pool(ctx context.Context, st *model.State, dst []float32) error {
	out, err := m.poolPrepare(ctx, st, dst)
	if err != nil {
		return err
	}
	S, H := st.Seqs(), m.cfg.Hidden
	_, cls, _, _ := m.scratch(S)
	m.rows = m.rows[:0]
	for _, o := range st.Offsets[:S] {
		m.rows = append(m.rows, int32(o))
	}
	d := m.dev
	if err := d.Gather(cls, st.H, m.rows, false); err != nil {
		return fmt.Errorf("bert: pool: %w", err)
	}
	if err := d.Gemm(false, false, 1, cls, m.poolW, 0, out); err != nil {
		return fmt.Errorf("bert: pool: %w", err)
	}
	if err := d.AddBias(out, m.poolB, gpu.ActTanh); err != nil {
		return fmt.Errorf("bert: pool: %w", err)
	}
	return m.download(dst[:S*H], out)
}

// PoolMean writes the mean of each sequence's final states (one row of
// Hidden per sequence) to dst, the pooling sentence-embedding models use.
func (m *Model) PoolMean(ctx context.Context, st *model.State, dst []float32) error {
	out, err := m.poolPrepare(ctx, st, dst)
	if err != nil {
		return err
	}
	if err := m.dev.MeanPool(out, st.H, st.Offsets); err != nil {
		return fmt.Errorf("bert: mean pool: %w", err)
	}
	return m.download(dst, out)
}

// poolPrepare checks a pooling call and returns the [Seqs, Hidden] scratch
// the pooled rows go to.
func (m *Model) poolPrepare(ctx context.Context, st *model.State, dst []float32) (gpu.Mat, error) {
	if err := m.checkState(st); err != nil {
		return gpu.Mat{}, err
	}
	if st.Layer != m.cfg.Layers {
		return gpu.Mat{}, fmt.Errorf("%w: bert: pool a state at layer %d of %d", model.ErrBadInput, st.Layer, m.cfg.Layers)
	}
	if want := st.Seqs() * m.cfg.Hidden; len(dst) != want {
		return gpu.Mat{}, fmt.Errorf("%w: bert: pool: dst has %d floats, want %d sequences x %d",
			model.ErrBadInput, len(dst), st.Seqs(), m.cfg.Hidden)
	}
	if err := ctx.Err(); err != nil {
		return gpu.Mat{}, err
	}
	if err := m.ensureWorkspace(st.Tokens()); err != nil {
		return gpu.Mat{}, err
	}
	_, _, sum, _ := m.scratch(st.Seqs())
	return sum, nil
}

func (m *Model) download(dst []float32, src gpu.Mat) error {
	if err := m.dev.Download(dst, src); err != nil {
		return fmt.Errorf("bert: download: %w", err)
	}
	return nil
}

// Close frees the model's device memory: weights, workspace and every state,
// released or not. The model is unusable afterwards.
func (m *Model) Close() error {
	if m.weights == nil {
		return nil
	}
	for st, buf := range m.states {
		m.dev.Free(buf)
		st.H = gpu.Mat{}
	}
	for _, f := range m.free {
		m.dev.Free(f.buf)
	}
	if m.ws != nil {
		m.dev.Free(m.ws)
	}
	m.dev.Free(m.weights)
	m.weights, m.ws, m.wsTokens, m.states, m.free = nil, nil, 0, map[*model.State]gpu.Buffer{}, nil
	return nil
}
