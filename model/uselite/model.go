package uselite

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/tokenizer"
)

// TensorSource yields named float32 tensors of a checked shape; both a
// backbone file and a freshly converted graph provide one.
type TensorSource interface {
	Float32(name string, shape ...int) ([]float32, error)
}

// Tensors adapts converted tensors to a TensorSource.
type Tensors []Tensor

// Float32 returns the named tensor if its shape is exactly shape.
func (ts Tensors) Float32(name string, shape ...int) ([]float32, error) {
	for _, t := range ts {
		if t.Name != name {
			continue
		}
		if !slices.Equal(t.Shape, shape) {
			return nil, fmt.Errorf("%w: tensor %q has shape %v, want %v", model.ErrBadModelFile, name, t.Shape, shape)
		}
		return t.Data, nil
	}
	return nil, fmt.Errorf("%w: tensor %q is missing", model.ErrBadModelFile, name)
}

type layerWeights struct {
	cfg                LayerConfig
	ln1G, ln1B         gpu.Mat
	qkvW, qkvB         gpu.Mat
	outW, outB         gpu.Mat // outB already includes the residual projection's bias
	resW               gpu.Mat // zero unless cfg.ResidualProj
	ln2G, ln2B         gpu.Mat
	f1W, f1B, f2W, f2B gpu.Mat
}

// Model is USE-Lite on a device. It implements model.Backbone.
type Model struct {
	cfg    Config
	dev    gpu.Device
	tok    *tokenizer.SentencePiece
	bufs   []gpu.Buffer
	emb    gpu.Mat // [vocab, embed]
	timing gpu.Mat // [maxLen, embed]: sin | cos of position * inv_timescale
	layers []layerWeights
	poolW  gpu.Mat
	poolB  gpu.Mat
	// Layer 0's residual projection of x0 = s*E[id] + T[pos] is linear, so
	// it is precomputed per vocabulary row and per position: two row
	// gathers replace a [tokens x 256]·[256 x 512] GEMM per batch.
	resE, resT gpu.Mat
	width      int // widest residual state (layer input or output)
	wQKV       int // widest qkv projection
	wAtt       int // widest attention output
	wFFN       int // widest feed-forward inner state
	free       []*workspace
	states     map[*model.State]*workspace // live states and their memory
	closed     bool
}

// workspace is the device memory of one live State, reused across calls.
type workspace struct {
	capTok, capSeq int
	bufs           []gpu.Buffer
	x, y           gpu.Mat // residual streams [capTok, width]
	h              gpu.Mat // layer-norm output
	qkv            gpu.Mat
	att            gpu.Mat
	ffn            gpu.Mat
	pooled, out    gpu.Mat // [capSeq, ...]
	pooledF        gpu.Mat // [capSeq, widest FFN]: RunPool's pooled feed-forward states
	ids, pos       []int32
	embedded       bool // the state holds Embed's output (layer 0 input) untouched
}

// Load uploads the weights to dev once. vocab is the vocab.json bytes.
func Load(dev gpu.Device, cfg Config, src TensorSource, vocab []byte) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tok, err := tokenizer.LoadSentencePieceJSON(bytes.NewReader(vocab))
	if err != nil {
		return nil, fmt.Errorf("%w: tokenizer vocabulary: %w", model.ErrBadModelFile, err)
	}
	if tok.VocabSize() > cfg.Vocab {
		return nil, fmt.Errorf("%w: vocabulary has %d pieces, the embedding table %d rows", model.ErrBadModelFile, tok.VocabSize(), cfg.Vocab)
	}
	m := &Model{cfg: cfg, dev: dev, tok: tok, states: map[*model.State]*workspace{}}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	up := func(name string, rows, cols int, shape ...int) (gpu.Mat, error) {
		data, err := src.Float32(name, shape...)
		if err != nil {
			return gpu.Mat{}, err
		}
		return m.upload(data, rows, cols)
	}
	vec := func(name string, n int) (gpu.Mat, error) { return up(name, 1, n, n) }
	emb, err := src.Float32("embeddings", cfg.Vocab, cfg.EmbedDim)
	if err != nil {
		return nil, err
	}
	if cfg.EmbedScale != 1 {
		emb = append([]float32(nil), emb...)
		for i := range emb {
			emb[i] *= cfg.EmbedScale
		}
	}
	if m.emb, err = m.upload(emb, cfg.Vocab, cfg.EmbedDim); err != nil {
		return nil, err
	}
	inv, err := src.Float32("timing.inv_timescales", cfg.TimingDims)
	if err != nil {
		return nil, err
	}
	// The graph computes sin/cos of float32(pos)*inv in float32; the table
	// holds the same values for every position of the window.
	table := make([]float32, cfg.MaxLen*cfg.EmbedDim)
	for p := 0; p < cfg.MaxLen; p++ {
		row := table[p*cfg.EmbedDim:]
		for i, f := range inv {
			a := float64(float32(p) * f)
			row[i] = float32(math.Sin(a))
			row[cfg.TimingDims+i] = float32(math.Cos(a))
		}
	}
	if m.timing, err = m.upload(table, cfg.MaxLen, cfg.EmbedDim); err != nil {
		return nil, err
	}
	for l, lc := range cfg.Layers {
		n := func(s string) string { return fmt.Sprintf("layer.%d.%s", l, s) }
		lw := layerWeights{cfg: lc}
		a3 := 3 * lc.Attention
		steps := []struct {
			dst        *gpu.Mat
			name       string
			rows, cols int
		}{
			{&lw.ln1G, "ln1.gamma", 1, lc.In}, {&lw.ln1B, "ln1.beta", 1, lc.In},
			{&lw.qkvW, "qkv.weight", lc.In, a3}, {&lw.qkvB, "qkv.bias", 1, a3},
			{&lw.outW, "out.weight", lc.Attention, lc.Out},
			{&lw.ln2G, "ln2.gamma", 1, lc.Out}, {&lw.ln2B, "ln2.beta", 1, lc.Out},
			{&lw.f1W, "ffn1.weight", lc.Out, lc.FFN}, {&lw.f1B, "ffn1.bias", 1, lc.FFN},
			{&lw.f2W, "ffn2.weight", lc.FFN, lc.Out}, {&lw.f2B, "ffn2.bias", 1, lc.Out},
		}
		if lc.ResidualProj {
			steps = append(steps, struct {
				dst        *gpu.Mat
				name       string
				rows, cols int
			}{&lw.resW, "residual.weight", lc.In, lc.Out})
		}
		for _, s := range steps {
			shape := []int{s.rows, s.cols}
			if s.rows == 1 {
				shape = shape[1:]
			}
			if *s.dst, err = up(n(s.name), s.rows, s.cols, shape...); err != nil {
				return nil, err
			}
		}
		// Both the attention output and the residual projection add a bias
		// to the same rows: fold them into one.
		ob, err := src.Float32(n("out.bias"), lc.Out)
		if err != nil {
			return nil, err
		}
		ob = append([]float32(nil), ob...)
		if lc.ResidualProj {
			rb, err := src.Float32(n("residual.bias"), lc.Out)
			if err != nil {
				return nil, err
			}
			for i := range ob {
				ob[i] += rb[i]
			}
		}
		if lw.outB, err = m.upload(ob, 1, lc.Out); err != nil {
			return nil, err
		}
		m.layers = append(m.layers, lw)
		m.width = max(m.width, lc.In, lc.Out)
		m.wQKV, m.wAtt, m.wFFN = max(m.wQKV, a3), max(m.wAtt, lc.Attention), max(m.wFFN, lc.FFN)
	}
	if lw := m.layers[0]; lw.cfg.ResidualProj {
		if m.resE, err = m.project(m.emb, lw.resW); err != nil {
			return nil, err
		}
		if m.resT, err = m.project(m.timing, lw.resW); err != nil {
			return nil, err
		}
	}
	last := cfg.Layers[len(cfg.Layers)-1].Out
	if m.poolW, err = up("pool.weight", last, cfg.OutputDim, last, cfg.OutputDim); err != nil {
		return nil, err
	}
	if m.poolB, err = vec("pool.bias", cfg.OutputDim); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// project computes table·w once, on the device, into a new weight buffer.
func (m *Model) project(table, w gpu.Mat) (gpu.Mat, error) {
	b, err := m.dev.Alloc(table.Rows * w.Cols)
	if err != nil {
		return gpu.Mat{}, err
	}
	m.bufs = append(m.bufs, b)
	out := gpu.NewMat(b, table.Rows, w.Cols)
	return out, m.dev.Gemm(false, false, 1, table, w, 0, out)
}

func (m *Model) upload(data []float32, rows, cols int) (gpu.Mat, error) {
	b, err := m.dev.Alloc(rows * cols)
	if err != nil {
		return gpu.Mat{}, err
	}
	m.bufs = append(m.bufs, b)
	mat := gpu.NewMat(b, rows, cols)
	return mat, m.dev.Upload(mat, data)
}

// Config is the model's configuration.
func (m *Model) Config() Config { return m.cfg }

// Info describes the geometry.
func (m *Model) Info() model.Info { return m.cfg.Info() }

// Device is the device holding the weights.
func (m *Model) Device() gpu.Device { return m.dev }

// Tokenizer is the SentencePiece tokenizer of the model.
func (m *Model) Tokenizer() tokenizer.Tokenizer { return m.tok }

// Prepare keeps the first MaxLen ids: the graph drops positions past its
// window, so a longer text embeds exactly as its first MaxLen ids.
func (m *Model) Prepare(ids []int32) []int32 {
	if len(ids) > m.cfg.MaxLen {
		return ids[:m.cfg.MaxLen]
	}
	return ids
}

func (m *Model) workspace(tokens, seqs int) (*workspace, error) {
	for i, w := range m.free {
		if w.capTok >= tokens && w.capSeq >= seqs {
			m.free = append(m.free[:i], m.free[i+1:]...)
			return w, nil
		}
	}
	if len(m.free) > 0 { // too small: grow the most recently used one
		w := m.free[len(m.free)-1]
		m.free = m.free[:len(m.free)-1]
		m.freeWorkspace(w)
	}
	// Round up so slowly growing batches do not reallocate every time.
	capTok := max(256, 1<<bitsLen(tokens))
	capSeq := max(32, 1<<bitsLen(seqs))
	w := &workspace{capTok: capTok, capSeq: capSeq}
	alloc := func(rows, cols int) (gpu.Mat, error) {
		b, err := m.dev.Alloc(rows * cols)
		if err != nil {
			return gpu.Mat{}, err
		}
		w.bufs = append(w.bufs, b)
		return gpu.NewMat(b, rows, cols), nil
	}
	var err error
	for _, d := range []struct {
		m    *gpu.Mat
		cols int
	}{{&w.x, m.width}, {&w.y, m.width}, {&w.h, m.width}, {&w.qkv, m.wQKV}, {&w.att, m.wAtt}, {&w.ffn, m.wFFN}} {
		if *d.m, err = alloc(capTok, d.cols); err != nil {
			m.freeWorkspace(w)
			return nil, err
		}
	}
	last := m.cfg.Layers[len(m.cfg.Layers)-1].Out
	if w.pooled, err = alloc(capSeq, last); err != nil {
		m.freeWorkspace(w)
		return nil, err
	}
	if w.out, err = alloc(capSeq, m.cfg.OutputDim); err != nil {
		m.freeWorkspace(w)
		return nil, err
	}
	if w.pooledF, err = alloc(capSeq, m.wFFN); err != nil {
		m.freeWorkspace(w)
		return nil, err
	}
	w.ids = make([]int32, 0, capTok)
	w.pos = make([]int32, 0, capTok)
	return w, nil
}

func bitsLen(n int) int {
	b := 0
	for (1 << b) < n {
		b++
	}
	return b
}

func (m *Model) freeWorkspace(w *workspace) {
	for _, b := range w.bufs {
		m.dev.Free(b)
	}
	w.bufs = nil
}

// dense views the first rows rows of buffer matrix b as rows x cols.
func dense(b gpu.Mat, rows, cols int) gpu.Mat {
	return gpu.Mat{Buf: b.Buf, Off: b.Off, Rows: rows, Cols: cols, Stride: cols}
}

// Embed gathers token embeddings and adds the sinusoidal timing signal, for
// packed sequences (no padding).
func (m *Model) Embed(ctx context.Context, seqs [][]int32) (*model.State, error) {
	if m.closed {
		return nil, fmt.Errorf("%w: use-lite model is closed", model.ErrBadInput)
	}
	if len(seqs) == 0 {
		return nil, fmt.Errorf("%w: no sequences", model.ErrBadInput)
	}
	total := 0
	for i, s := range seqs {
		if len(s) == 0 {
			return nil, fmt.Errorf("%w: sequence %d has no tokens", model.ErrEmptyText, i)
		}
		if len(s) > m.cfg.MaxLen {
			return nil, fmt.Errorf("%w: sequence %d has %d ids, the window is %d (call Prepare)", model.ErrBadInput, i, len(s), m.cfg.MaxLen)
		}
		total += len(s)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ws, err := m.workspace(total, len(seqs))
	if err != nil {
		return nil, err
	}
	st := &model.State{}
	st.Offsets = make([]int, len(seqs)+1)
	ws.ids, ws.pos = ws.ids[:0], ws.pos[:0]
	for i, s := range seqs {
		st.Offsets[i+1] = st.Offsets[i] + len(s)
		for p, id := range s {
			if id < 0 || int(id) >= m.cfg.Vocab {
				m.free = append(m.free, ws)
				return nil, fmt.Errorf("%w: sequence %d position %d: id %d outside the vocabulary of %d", model.ErrBadInput, i, p, id, m.cfg.Vocab)
			}
			ws.ids = append(ws.ids, id)
			ws.pos = append(ws.pos, int32(p))
		}
	}
	ws.embedded = true
	st.H = dense(ws.x, total, m.cfg.EmbedDim)
	if err := m.dev.Gather(st.H, m.emb, ws.ids, false); err != nil {
		m.free = append(m.free, ws)
		return nil, err
	}
	if err := m.dev.Gather(st.H, m.timing, ws.pos, true); err != nil {
		m.free = append(m.free, ws)
		return nil, err
	}
	m.states[st] = ws
	return st, nil
}

func (m *Model) ws(st *model.State) (*workspace, error) {
	if w, ok := m.states[st]; ok && st != nil {
		return w, nil
	}
	return nil, fmt.Errorf("%w: state was not made by this model or was released", model.ErrBadInput)
}

// LayerDims gives layer's widths (layer counts from 1), or zeros outside
// [1, Layers].
func (m *Model) LayerDims(layer int) model.LayerDims {
	if layer < 1 || layer > len(m.cfg.Layers) {
		return model.LayerDims{}
	}
	lc := m.cfg.Layers[layer-1]
	return model.LayerDims{In: lc.In, Attention: lc.Attention, Out: lc.Out}
}

// StateWidth is the width of the states after layer layers (0: the
// embeddings), or 0 outside [0, Layers].
func (m *Model) StateWidth(layer int) int {
	switch {
	case layer == 0:
		return m.cfg.EmbedDim
	case layer > 0 && layer <= len(m.cfg.Layers):
		return m.cfg.Layers[layer-1].Out
	}
	return 0
}

// Restore builds a state at a layer boundary from host states h (see
// model.Backbone). A restored layer-0 state runs layer 0's residual
// projection as a GEMM on h: the precomputed tables only apply to Embed's
// own output.
func (m *Model) Restore(ctx context.Context, offsets []int, layer int, h []float32) (*model.State, error) {
	if m.closed {
		return nil, fmt.Errorf("%w: use-lite model is closed", model.ErrBadInput)
	}
	if layer < 0 || layer > len(m.layers) {
		return nil, fmt.Errorf("%w: restore at layer %d of %d", model.ErrBadInput, layer, len(m.layers))
	}
	if len(offsets) < 2 || offsets[0] != 0 {
		return nil, fmt.Errorf("%w: offsets must start at 0 and name at least one sequence, got %v", model.ErrBadInput, offsets)
	}
	for i := 1; i < len(offsets); i++ {
		if n := offsets[i] - offsets[i-1]; n <= 0 || n > m.cfg.MaxLen {
			return nil, fmt.Errorf("%w: sequence %d has %d rows (want 1..%d)", model.ErrBadInput, i-1, n, m.cfg.MaxLen)
		}
	}
	total, width := offsets[len(offsets)-1], m.StateWidth(layer)
	if len(h) != total*width {
		return nil, fmt.Errorf("%w: %d floats for %d rows of width %d", model.ErrBadInput, len(h), total, width)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ws, err := m.workspace(total, len(offsets)-1)
	if err != nil {
		return nil, err
	}
	ws.embedded = false
	st := &model.State{Offsets: append([]int(nil), offsets...), Layer: layer, H: dense(ws.x, total, width)}
	if err := m.dev.Upload(st.H, h); err != nil {
		m.free = append(m.free, ws)
		return nil, err
	}
	m.states[st] = ws
	return st, nil
}

// RunLayers applies layers st.Layer+1 .. to.
func (m *Model) RunLayers(ctx context.Context, st *model.State, to int, obs model.Observer) error {
	ws, err := m.ws(st)
	if err != nil {
		return err
	}
	if to < st.Layer || to > len(m.layers) {
		return fmt.Errorf("%w: run to layer %d from %d of %d", model.ErrBadInput, to, st.Layer, len(m.layers))
	}
	for st.Layer < to {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := m.layer(ws, st, &m.layers[st.Layer]); err != nil {
			return fmt.Errorf("use-lite layer %d: %w", st.Layer, err)
		}
		st.Layer++
		if obs != nil {
			obs(st.Layer, st.H)
		}
	}
	return nil
}

// layer is one pre-norm transformer layer (attnBlock, then the
// feed-forward block):
//
//	x' = attn(LN1(x)) Wout + (x Wres | x) + b
//	x'' = x' + relu(LN2(x') W1 + b1) W2 + b2
func (m *Model) layer(ws *workspace, st *model.State, lw *layerWeights) error {
	if err := m.attnBlock(ws, st, lw); err != nil {
		return err
	}
	d := m.dev
	out := st.H
	f, err := m.ffnInner(ws, st, lw)
	if err != nil {
		return err
	}
	if err := d.Gemm(false, false, 1, f, lw.f2W, 1, out); err != nil {
		return err
	}
	return d.AddBias(out, lw.f2B, gpu.ActNone)
}

// attnBlock sets st.H to x + attn(LN1(x)) Wout (+ the residual projection),
// calling st.Hooks (when set) on q, v and the attention output.
func (m *Model) attnBlock(ws *workspace, st *model.State, lw *layerWeights) error {
	d := m.dev
	lc := lw.cfg
	T := st.Tokens()
	x := st.H
	h := dense(ws.h, T, lc.In)
	if err := d.LayerNorm(h, x, lw.ln1G, lw.ln1B, m.cfg.LayerNorm); err != nil {
		return err
	}
	qkv := dense(ws.qkv, T, 3*lc.Attention)
	if err := d.Gemm(false, false, 1, h, lw.qkvW, 0, qkv); err != nil {
		return err
	}
	if err := d.AddBias(qkv, lw.qkvB, gpu.ActNone); err != nil {
		return err
	}
	att := dense(ws.att, T, lc.Attention)
	a := lc.Attention
	layer := st.Layer + 1 // hooks count layers from 1
	if st.Hooks != nil {
		if err := st.Hooks.QKV(layer, h, qkv.Colsl(0, a), qkv.Colsl(2*a, 3*a)); err != nil {
			return err
		}
	}
	if err := d.Attention(att, qkv.Colsl(0, a), qkv.Colsl(a, 2*a), qkv.Colsl(2*a, 3*a), lc.Heads, st.Offsets, lc.QueryScale); err != nil {
		return err
	}
	// Residual stream: projected into the other buffer when the width
	// changes, else accumulated in place.
	out := x
	if lc.ResidualProj {
		other := ws.y
		if x.Buf == ws.y.Buf {
			other = ws.x
		}
		out = dense(other, T, lc.Out)
		if ws.embedded && st.Layer == 0 && !m.resE.IsZero() {
			if err := d.Gather(out, m.resE, ws.ids, false); err != nil {
				return err
			}
			if err := d.Gather(out, m.resT, ws.pos, true); err != nil {
				return err
			}
		} else if err := d.Gemm(false, false, 1, x, lw.resW, 0, out); err != nil {
			return err
		}
	}
	if st.Hooks != nil {
		// The hook needs the sublayer's output on its own: compute it into
		// the layer-norm scratch (free once q, k and v exist, and at least
		// Out wide), then add it to the residual stream. outB also carries
		// the residual projection's bias, so z includes it; an adapter sees
		// the same z alone or in a mixed batch, which is what matters.
		z := dense(ws.h, T, lc.Out)
		if err := d.Gemm(false, false, 1, att, lw.outW, 0, z); err != nil {
			return err
		}
		if err := d.AddBias(z, lw.outB, gpu.ActNone); err != nil {
			return err
		}
		if err := st.Hooks.Attended(layer, z); err != nil {
			return err
		}
		if err := d.Add(out, out, z); err != nil {
			return err
		}
	} else {
		if err := d.Gemm(false, false, 1, att, lw.outW, 1, out); err != nil {
			return err
		}
		if err := d.AddBias(out, lw.outB, gpu.ActNone); err != nil {
			return err
		}
	}
	st.H = out
	ws.embedded = false
	return nil
}

// ffnInner computes relu(LN2(x) W1 + b1) for the state's rows: the
// feed-forward block up to its last (linear) map.
func (m *Model) ffnInner(ws *workspace, st *model.State, lw *layerWeights) (gpu.Mat, error) {
	d := m.dev
	lc := lw.cfg
	T := st.Tokens()
	h2 := dense(ws.h, T, lc.Out)
	if err := d.LayerNorm(h2, st.H, lw.ln2G, lw.ln2B, m.cfg.LayerNorm); err != nil {
		return gpu.Mat{}, err
	}
	f := dense(ws.ffn, T, lc.FFN)
	if err := d.Gemm(false, false, 1, h2, lw.f1W, 0, f); err != nil {
		return gpu.Mat{}, err
	}
	return f, d.AddBias(f, lw.f1B, gpu.ActReLU)
}

// Pool averages each sequence's final states, applies the tanh layer and
// L2-normalises: the 512-d sentence embedding.
func (m *Model) Pool(ctx context.Context, st *model.State, dst []float32) error {
	ws, err := m.ws(st)
	if err != nil {
		return err
	}
	if st.Layer != len(m.layers) || st.H.IsZero() {
		return fmt.Errorf("%w: pool needs all %d layers, state has %d", model.ErrBadInput, len(m.layers), st.Layer)
	}
	n := st.Seqs()
	if len(dst) != n*m.cfg.OutputDim {
		return fmt.Errorf("%w: pool output holds %d floats, want %d", model.ErrBadInput, len(dst), n*m.cfg.OutputDim)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	pooled := dense(ws.pooled, n, st.H.Cols)
	if err := m.dev.MeanPool(pooled, st.H, st.Offsets); err != nil {
		return err
	}
	return m.head(ws, pooled, dst)
}

// RunPool runs the remaining layers and pools, moving the last layer's
// final linear map after the mean pool: mean(x + f W2 + b2) =
// mean(x) + mean(f) W2 + b2, so W2 multiplies one row per text instead of
// one per token (about 17% of USE-Lite's FLOPs). Equal to RunLayers + Pool
// up to float rounding (tested).
func (m *Model) RunPool(ctx context.Context, st *model.State, dst []float32) error {
	ws, err := m.ws(st)
	if err != nil {
		return err
	}
	L := len(m.layers)
	n := st.Seqs()
	if len(dst) != n*m.cfg.OutputDim {
		return fmt.Errorf("%w: pool output holds %d floats, want %d", model.ErrBadInput, len(dst), n*m.cfg.OutputDim)
	}
	if st.Layer >= L {
		return m.Pool(ctx, st, dst)
	}
	if err := m.RunLayers(ctx, st, L-1, nil); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	d := m.dev
	lw := &m.layers[L-1]
	if err := m.attnBlock(ws, st, lw); err != nil {
		return err
	}
	f, err := m.ffnInner(ws, st, lw)
	if err != nil {
		return err
	}
	pooled := dense(ws.pooled, n, lw.cfg.Out)
	if err := d.MeanPool(pooled, st.H, st.Offsets); err != nil {
		return err
	}
	pf := dense(ws.pooledF, n, lw.cfg.FFN)
	if err := d.MeanPool(pf, f, st.Offsets); err != nil {
		return err
	}
	if err := d.Gemm(false, false, 1, pf, lw.f2W, 1, pooled); err != nil {
		return err
	}
	if err := d.AddBias(pooled, lw.f2B, gpu.ActNone); err != nil {
		return err
	}
	st.Layer = L
	// st.H now holds the attention block's output, not the last layer's
	// states: mark the state as pooled-only.
	st.H = gpu.Mat{}
	return m.head(ws, pooled, dst)
}

// head maps pooled rows to embeddings: tanh(pooled Wt + bt), L2-normalised.
func (m *Model) head(ws *workspace, pooled gpu.Mat, dst []float32) error {
	d := m.dev
	n := pooled.Rows
	out := dense(ws.out, n, m.cfg.OutputDim)
	if err := d.Gemm(false, false, 1, pooled, m.poolW, 0, out); err != nil {
		return err
	}
	if err := d.AddBias(out, m.poolB, gpu.ActTanh); err != nil {
		return err
	}
	if err := d.L2Normalize(out, m.cfg.L2Eps); err != nil {
		return err
	}
	return d.Download(dst, out)
}

// Release returns the state's device memory for reuse.
func (m *Model) Release(st *model.State) {
	if w, ok := m.states[st]; ok {
		delete(m.states, st)
		m.free = append(m.free, w)
	}
}

// Close frees all device memory of the model.
func (m *Model) Close() error {
	for _, b := range m.bufs {
		m.dev.Free(b)
	}
	m.bufs = nil
	for _, w := range m.free {
		m.freeWorkspace(w)
	}
	for st, w := range m.states {
		m.freeWorkspace(w)
		delete(m.states, st)
	}
	m.free = nil
	m.closed = true
	return nil
}

var _ model.Backbone = (*Model)(nil)
