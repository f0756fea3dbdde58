package train

import (
	"context"
	"errors"
	"fmt"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model"
)

// ComputeInputs runs the frozen part of bb over prepared ids and returns
// what an engine whose Input() is (kind, layer) takes: the hidden states at
// layer boundary layer (InputStates), the pooled output (InputPooled) or
// the ids themselves (InputIDs). It uses bb's device, so it runs on the
// goroutine that owns it (a device actor's work item, a benchmark).
func ComputeInputs(ctx context.Context, bb model.Backbone, kind InputKind, layer int, ids [][]int32) (*Inputs, error) {
	if kind == InputIDs {
		return &Inputs{IDs: ids}, nil
	}
	if kind != InputStates && kind != InputPooled && kind != InputAttended {
		return nil, fmt.Errorf("%w: train: input kind %d", model.ErrBadInput, kind)
	}
	return computeFrom(ctx, bb, nil, kind, layer, ids)
}

// ComputeInputsLower is ComputeInputs for a vPLM in plot mode: the states
// at lower.Cut() come from lower (a PLOT table) instead of the backbone's
// layers 1..Cut(), and only the layers above run. A nil lower is
// ComputeInputs. InputIDs, or an input below the cut (states before layer
// Cut(), or the attention output of a layer at or below it), is an error
// wrapping model.ErrBadInput: that part of the backbone never runs in plot
// mode.
func ComputeInputsLower(ctx context.Context, bb model.Backbone, lower model.Lower, kind InputKind, layer int, ids [][]int32) (*Inputs, error) {
	if lower == nil {
		return ComputeInputs(ctx, bb, kind, layer, ids)
	}
	cut := lower.Cut()
	switch {
	case cut < 1 || cut >= bb.Info().Layers:
		return nil, fmt.Errorf("%w: train: plot cut %d of %d layers", model.ErrBadInput, cut, bb.Info().Layers)
	case kind == InputIDs:
		return nil, fmt.Errorf("%w: train: a plot-mode run cannot train the layers below its cut (%d)", model.ErrBadInput, cut)
	case kind == InputStates && layer < cut, kind == InputAttended && layer <= cut:
		return nil, fmt.Errorf("%w: train: input at layer %d lies below the plot cut %d", model.ErrBadInput, layer, cut)
	case kind != InputStates && kind != InputPooled && kind != InputAttended:
		return nil, fmt.Errorf("%w: train: input kind %d", model.ErrBadInput, kind)
	}
	return computeFrom(ctx, bb, lower, kind, layer, ids)
}

// computeFrom runs the frozen part from the embeddings (lower nil) or from
// lower's states at its cut.
func computeFrom(ctx context.Context, bb model.Backbone, lower model.Lower, kind InputKind, layer int, ids [][]int32) (*Inputs, error) {
	var st *model.State
	var err error
	if lower == nil {
		st, err = bb.Embed(ctx, ids)
	} else {
		st, err = lowerState(ctx, bb, lower, ids)
	}
	if err != nil {
		return nil, err
	}
	defer bb.Release(st)
	if kind == InputAttended {
		return attended(ctx, bb, st, layer)
	}
	if kind == InputPooled {
		h := make([]float32, len(ids)*bb.Info().OutputDim)
		if pr, ok := bb.(model.PoolRunner); ok {
			err = pr.RunPool(ctx, st, h)
		} else if err = bb.RunLayers(ctx, st, bb.Info().Layers, nil); err == nil {
			err = bb.Pool(ctx, st, h)
		}
		if err != nil {
			return nil, err
		}
		return &Inputs{H: h}, nil
	}
	if err := bb.RunLayers(ctx, st, layer, nil); err != nil {
		return nil, err
	}
	h := make([]float32, st.H.Rows*st.H.Cols)
	if err := bb.Device().Download(h, st.H); err != nil {
		return nil, err
	}
	return &Inputs{Offsets: st.Offsets, H: h}, nil
}

// lowerState builds the states at lower's cut for ids.
func lowerState(ctx context.Context, bb model.Backbone, lower model.Lower, ids [][]int32) (*model.State, error) {
	cut := lower.Cut()
	w := bb.StateWidth(cut)
	offsets := make([]int, len(ids)+1)
	for i, s := range ids {
		if len(s) == 0 {
			return nil, fmt.Errorf("%w: train: sequence %d is empty", model.ErrBadInput, i)
		}
		offsets[i+1] = offsets[i] + len(s)
	}
	h := make([]float32, offsets[len(ids)]*w)
	for i, s := range ids {
		if err := lower.Lower(s, h[offsets[i]*w:offsets[i+1]*w]); err != nil {
			return nil, fmt.Errorf("train: plot states of sequence %d: %w", i, err)
		}
	}
	return bb.Restore(ctx, offsets, cut, h)
}

// attended runs st through layer and returns the states entering it and
// its attention sublayer's output z (through the backbone's hooks, as an
// adapter would see it).
func attended(ctx context.Context, bb model.Backbone, st *model.State, layer int) (*Inputs, error) {
	dev := bb.Device()
	in := &Inputs{Offsets: st.Offsets}
	download := func(m gpu.Mat) ([]float32, error) {
		h := make([]float32, m.Rows*m.Cols)
		return h, dev.Download(h, m)
	}
	if err := bb.RunLayers(ctx, st, layer-1, nil); err != nil {
		return nil, err
	}
	var err error
	if in.H, err = download(st.H); err != nil {
		return nil, err
	}
	hook := &captureZ{layer: layer, download: download}
	st.Hooks = hook
	err = bb.RunLayers(ctx, st, layer, nil)
	st.Hooks = nil
	// The hook stops the layer once z is copied: the rest of it (its
	// feed-forward block) is not needed.
	if err != nil && !errors.Is(err, errCaptured) {
		return nil, err
	}
	if hook.err != nil || hook.z == nil {
		return nil, fmt.Errorf("%w: train: layer %d's attention output was not captured: %v", model.ErrBadInput, layer, hook.err)
	}
	in.Z = hook.z
	return in, nil
}

// captureZ is a model.Hooks that copies one layer's attention output.
type captureZ struct {
	layer    int
	download func(gpu.Mat) ([]float32, error)
	z        []float32
	err      error
}

func (c *captureZ) QKV(int, gpu.Mat, gpu.Mat, gpu.Mat) error { return nil }

// errCaptured ends a capture run early; the state is left half-computed
// (it is only released).
var errCaptured = errors.New("train: attention output captured")

func (c *captureZ) Attended(layer int, z gpu.Mat) error {
	if layer != c.layer {
		return nil
	}
	if c.z, c.err = c.download(z); c.err != nil {
		return c.err
	}
	return errCaptured
}

// Texts is a tokenized labelled dataset: prepared ids and label indices.
type Texts struct {
	IDs    [][]int32
	Labels []int
}

// Len is the number of examples.
func (t *Texts) Len() int { return len(t.IDs) }

// Subset returns the examples idx, in order (views, not copies).
func (t *Texts) Subset(idx []int) *Texts {
	s := &Texts{IDs: make([][]int32, len(idx)), Labels: make([]int, len(idx))}
	for i, j := range idx {
		s.IDs[i], s.Labels[i] = t.IDs[j], t.Labels[j]
	}
	return s
}

// Uncached is a Dataset that computes every batch's inputs through the
// backbone on every Load: what training costs without the representation
// cache (the benchmark's baseline).
func Uncached(bb model.Backbone, kind InputKind, layer int, texts *Texts) Dataset {
	return &uncached{bb: bb, kind: kind, layer: layer, texts: texts}
}

type uncached struct {
	bb    model.Backbone
	kind  InputKind
	layer int
	texts *Texts
}

func (u *uncached) Len() int { return u.texts.Len() }

func (u *uncached) Load(ctx context.Context, idx []int) (*Inputs, []int, error) {
	sub := u.texts.Subset(idx)
	in, err := ComputeInputs(ctx, u.bb, u.kind, u.layer, sub.IDs)
	if err != nil {
		return nil, nil, err
	}
	return in, sub.Labels, nil
}

// Memory is a Dataset of precomputed inputs held in memory as fp16 (the
// precision of the stored representation cache).
type Memory struct {
	kind   InputKind
	width  int
	rows   [][]byte // per example: its rows as fp16
	zrows  [][]byte // InputAttended: per example, its attention outputs as fp16
	zwidth int
	ids    [][]int32 // InputIDs
	labels []int
}

// maxBatchTokens bounds one Precompute batch (as a device batch is).
const maxBatchTokens = 4096

// Precompute computes every example's inputs once, in batches of at most
// 64 texts or 4,096 tokens, each batch run through exec (nil: inline).
func Precompute(ctx context.Context, bb model.Backbone, kind InputKind, layer int, texts *Texts,
	exec func(ctx context.Context, tokens int, work func() error) error) (*Memory, error) {
	return PrecomputeLower(ctx, bb, nil, kind, layer, texts, exec)
}

// PrecomputeLower is Precompute for a vPLM in plot mode: the states at
// lower.Cut() come from lower (see ComputeInputsLower); nil is Precompute.
func PrecomputeLower(ctx context.Context, bb model.Backbone, lower model.Lower, kind InputKind, layer int, texts *Texts,
	exec func(ctx context.Context, tokens int, work func() error) error) (*Memory, error) {
	if exec == nil {
		exec = func(_ context.Context, _ int, work func() error) error { return work() }
	}
	m := &Memory{kind: kind, labels: texts.Labels}
	if kind == InputIDs && lower == nil {
		m.ids = texts.IDs
		return m, nil
	}
	m.rows = make([][]byte, texts.Len())
	if kind == InputAttended {
		m.zrows = make([][]byte, texts.Len())
	}
	for b := 0; b < texts.Len(); {
		e, tokens := b, 0
		for e < texts.Len() && e-b < 64 && (e == b || tokens+len(texts.IDs[e]) <= maxBatchTokens) {
			tokens += len(texts.IDs[e])
			e++
		}
		var in *Inputs
		if err := exec(ctx, tokens, func() error {
			var err error
			in, err = ComputeInputsLower(ctx, bb, lower, kind, layer, texts.IDs[b:e])
			return err
		}); err != nil {
			return nil, err
		}
		n := e - b
		if kind == InputPooled {
			m.width = len(in.H) / n
		} else {
			m.width = len(in.H) / in.Offsets[n]
			m.zwidth = len(in.Z) / in.Offsets[n]
		}
		for i := 0; i < n; i++ {
			r0, r1 := i, i+1
			if kind != InputPooled {
				r0, r1 = in.Offsets[i], in.Offsets[i+1]
			}
			var err error
			if m.rows[b+i], err = halves(in.H[r0*m.width : r1*m.width]); err == nil && m.zrows != nil {
				m.zrows[b+i], err = halves(in.Z[r0*m.zwidth : r1*m.zwidth])
			}
			if err != nil {
				return nil, fmt.Errorf("train: example %d: %w", b+i, err)
			}
		}
		b = e
	}
	return m, nil
}

// halves encodes v as fp16.
func halves(v []float32) ([]byte, error) {
	buf := make([]byte, 2*len(v))
	if bad := model.EncodeHalves(buf, v); bad >= 0 {
		return nil, fmt.Errorf("%w: representation value %g does not fit fp16", model.ErrBadInput, v[bad])
	}
	return buf, nil
}

// Len is the number of examples.
func (m *Memory) Len() int { return len(m.labels) }

// Bytes is the size of the stored representations.
func (m *Memory) Bytes() int64 {
	var n int64
	for i, r := range m.rows {
		n += int64(len(r))
		if m.zrows != nil {
			n += int64(len(m.zrows[i]))
		}
	}
	return n
}

// Load decodes examples idx.
func (m *Memory) Load(_ context.Context, idx []int) (*Inputs, []int, error) {
	labels := make([]int, len(idx))
	for i, j := range idx {
		labels[i] = m.labels[j]
	}
	if m.kind == InputIDs {
		ids := make([][]int32, len(idx))
		for i, j := range idx {
			ids[i] = m.ids[j]
		}
		return &Inputs{IDs: ids}, labels, nil
	}
	total := 0
	for _, j := range idx {
		total += len(m.rows[j]) / 2
	}
	in := &Inputs{H: make([]float32, total)}
	if m.kind != InputPooled {
		in.Offsets = make([]int, 1, len(idx)+1)
	}
	if m.zrows != nil {
		in.Z = make([]float32, total/m.width*m.zwidth)
	}
	off, zoff := 0, 0
	for _, j := range idx {
		n := len(m.rows[j]) / 2
		if err := model.DecodeHalves(in.H[off:off+n], m.rows[j]); err != nil {
			return nil, nil, err
		}
		off += n
		if m.zrows != nil {
			zn := len(m.zrows[j]) / 2
			if err := model.DecodeHalves(in.Z[zoff:zoff+zn], m.zrows[j]); err != nil {
				return nil, nil, err
			}
			zoff += zn
		}
		if m.kind != InputPooled {
			in.Offsets = append(in.Offsets, off/m.width)
		}
	}
	return in, labels, nil
}
