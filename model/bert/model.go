package bert

import (
	"context"
	"fmt"
	"math"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/backbonefile"
	"github.com/smile-vplm/smile/model/tokenizer"
)

// Family is the backbone family name of BERT files.
const Family = "bert"

// Model is a BERT encoder whose weights live on one device. It implements
// model.Backbone; like its device it is used by one goroutine at a time.
type Model struct {
	cfg  Config
	info model.Info
	dev  gpu.Device
	tok  *tokenizer.WordPiece
	cls  int32
	sep  int32

	weights gpu.Buffer // every weight, one allocation
	word    gpu.Mat    // [vocab, H]
	posType gpu.Mat    // [max_positions, H]: position + token type 0 embeddings
	embG    gpu.Mat
	embB    gpu.Mat
	layers  []layer
	poolW   gpu.Mat
	poolB   gpu.Mat

	ws       gpu.Buffer // scratch for one layer, sized for wsTokens rows
	wsTokens int
	states   map[*model.State]gpu.Buffer // live states and their buffers
	free     []freeBuf                   // buffers of released states, kept for reuse

	// host scratch reused by every call
	ids  []int32
	pos  []int32
	rows []int32
}

type layer struct {
	qkvW, qkvB       gpu.Mat // [H, 3H], [1, 3H]
	outW, outB       gpu.Mat // [H, H]
	ln1G, ln1B       gpu.Mat
	ffnInW, ffnInB   gpu.Mat // [H, I]
	ffnOutW, ffnOutB gpu.Mat // [I, H]
	ln2G, ln2B       gpu.Mat
}

// freeBuf is a released state's buffer. Only buffers are pooled: every
// state handed out is a fresh *model.State, so a stale pointer kept after
// Release can never alias (and a second Release can never free) a live one.
type freeBuf struct {
	buf gpu.Buffer
	cap int // tokens
}

var _ model.Backbone = (*Model)(nil)

// Load uploads the weights of a BERT backbone file to dev. The file may be
// closed afterwards.
func Load(dev gpu.Device, f *backbonefile.File) (*Model, error) {
	if f.Family != Family {
		return nil, fmt.Errorf("%w: bert: %s: family %q, want %q", model.ErrBadModelFile, f.Name(), f.Family, Family)
	}
	cfg, err := ParseConfig(f.Config)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", f.Name(), backbonefile.KeyConfig, err)
	}
	if want := cfg.info(f.Info.Name); f.Info != want {
		return nil, fmt.Errorf("%w: bert: %s: %s %+v disagrees with %s (%+v)",
			model.ErrBadModelFile, f.Name(), backbonefile.KeyInfo, f.Info, backbonefile.KeyConfig, want)
	}
	return build(dev, cfg, f.Info.Name, f.Vocab(), f.CheckFloat32, f.Float32)
}

// build makes a Model from SMILE-layout tensors read through get, once check
// has passed every tensor: nothing sized by the geometry is allocated before
// the source has shown it holds tensors of that geometry.
func build(dev gpu.Device, cfg Config, name string, vocab []byte, check checker, get getter) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tok, err := newTokenizer(vocab, cfg)
	if err != nil {
		return nil, err
	}
	m := &Model{
		cfg: cfg, info: cfg.info(name), dev: dev, tok: tok,
		cls: tok.SpecialIDs().CLS, sep: tok.SpecialIDs().SEP,
		states: map[*model.State]gpu.Buffer{},
	}
	sp := specs(cfg)
	total := 0
	for _, s := range sp {
		if err := check(s.name, s.shape...); err != nil {
			return nil, err
		}
		total += numElems(s.shape)
	}
	if m.weights, err = dev.Alloc(total); err != nil {
		return nil, fmt.Errorf("bert: weights (%d floats): %w", total, err)
	}
	mats := make(map[string]gpu.Mat, len(sp))
	off := 0
	for _, s := range sp {
		v, err := get(s.name, s.shape...)
		if err != nil {
			dev.Free(m.weights)
			return nil, err
		}
		rows, cols := 1, s.shape[0]
		if len(s.shape) == 2 {
			rows, cols = s.shape[0], s.shape[1]
		}
		mat := gpu.Mat{Buf: m.weights, Off: off, Rows: rows, Cols: cols, Stride: cols}
		if s.name == tPosition {
			// Every token has type 0, so its type embedding folds into the
			// position table once here instead of a Gather per call.
			tt, err := get(tTokenType, cfg.TypeVocabSize, cfg.Hidden)
			if err != nil {
				dev.Free(m.weights)
				return nil, err
			}
			for i := range v {
				v[i] += tt[i%cfg.Hidden]
			}
		}
		if err := dev.Upload(mat, v); err != nil {
			dev.Free(m.weights)
			return nil, fmt.Errorf("bert: upload %s: %w", s.name, err)
		}
		mats[s.name] = mat
		off += rows * cols
	}
	m.word, m.posType = mats[tWord], mats[tPosition]
	m.embG, m.embB = mats[tEmbGamma], mats[tEmbBeta]
	m.poolW, m.poolB = mats[tPoolW], mats[tPoolB]
	m.layers = make([]layer, cfg.Layers)
	for l := range m.layers {
		g := func(what string) gpu.Mat { return mats[layerTensor(l, what)] }
		m.layers[l] = layer{
			qkvW: g("qkv.weight"), qkvB: g("qkv.bias"),
			outW: g("attn_out.weight"), outB: g("attn_out.bias"),
			ln1G: g("attn_ln.gamma"), ln1B: g("attn_ln.beta"),
			ffnInW: g("ffn_in.weight"), ffnInB: g("ffn_in.bias"),
			ffnOutW: g("ffn_out.weight"), ffnOutB: g("ffn_out.bias"),
			ln2G: g("ffn_ln.gamma"), ln2B: g("ffn_ln.beta"),
		}
	}
	return m, nil
}

func numElems(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Config is the model's geometry.
func (m *Model) Config() Config { return m.cfg }

// Info describes the model.
func (m *Model) Info() model.Info { return m.info }

// Device is the device holding the weights.
func (m *Model) Device() gpu.Device { return m.dev }

// Tokenizer is the model's WordPiece tokenizer.
func (m *Model) Tokenizer() tokenizer.Tokenizer { return m.tok }

// WordPiece is the model's tokenizer with its BERT-specific methods.
func (m *Model) WordPiece() *tokenizer.WordPiece { return m.tok }

// Prepare returns [CLS] + ids + [SEP], with ids cut so the whole fits in
// max_position_embeddings.
func (m *Model) Prepare(ids []int32) []int32 {
	n := min(len(ids), m.cfg.MaxPositions-2)
	out := make([]int32, 0, n+2)
	out = append(out, m.cls)
	out = append(out, ids[:n]...)
	return append(out, m.sep)
}

// Embed builds layer-0 states: word + position + token-type-0 embeddings
// followed by LayerNorm, for all sequences packed into one matrix.
func (m *Model) Embed(ctx context.Context, ids [][]int32) (*model.State, error) {
	if m.weights == nil {
		return nil, fmt.Errorf("%w: bert: model closed", model.ErrBadInput)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: bert: embed: no sequences", model.ErrBadInput)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tokens := 0
	for s, seq := range ids {
		if len(seq) == 0 {
			return nil, fmt.Errorf("%w: bert: embed: sequence %d is empty", model.ErrBadInput, s)
		}
		if len(seq) > m.cfg.MaxPositions {
			return nil, fmt.Errorf("%w: bert: embed: sequence %d has %d ids, more than max_position_embeddings %d",
				model.ErrBadInput, s, len(seq), m.cfg.MaxPositions)
		}
		for i, id := range seq {
			if id < 0 || int(id) >= m.cfg.VocabSize {
				return nil, fmt.Errorf("%w: bert: embed: sequence %d position %d: id %d outside the vocabulary [0, %d)",
					model.ErrBadInput, s, i, id, m.cfg.VocabSize)
			}
		}
		tokens += len(seq)
	}
	st, err := m.newState(len(ids), tokens)
	if err != nil {
		return nil, err
	}
	m.ids, m.pos = m.ids[:0], m.pos[:0]
	for s, seq := range ids {
		st.Offsets[s+1] = st.Offsets[s] + len(seq)
		m.ids = append(m.ids, seq...)
		for i := range seq {
			m.pos = append(m.pos, int32(i))
		}
	}
	h := st.H
	if err := m.dev.Gather(h, m.word, m.ids, false); err != nil {
		m.Release(st)
		return nil, fmt.Errorf("bert: embed: %w", err)
	}
	if err := m.dev.Gather(h, m.posType, m.pos, true); err != nil {
		m.Release(st)
		return nil, fmt.Errorf("bert: embed: %w", err)
	}
	if err := m.dev.LayerNorm(h, h, m.embG, m.embB, float32(m.cfg.LayerNormEps)); err != nil {
		m.Release(st)
		return nil, fmt.Errorf("bert: embed: %w", err)
	}
	return st, nil
}

// LayerDims gives every layer's widths: BERT is Hidden wide throughout.
func (m *Model) LayerDims(layer int) model.LayerDims {
	H := m.cfg.Hidden
	return model.LayerDims{In: H, Attention: H, Out: H}
}

// StateWidth is the width of BERT's hidden states, Hidden after every layer.
func (m *Model) StateWidth(layer int) int { return m.cfg.Hidden }

// Restore builds a state at layer boundary layer (0: embeddings) from host
// hidden states h, offsets[len(offsets)-1] rows of Hidden floats packed as in
// model.State. Bad arguments wrap model.ErrBadInput.
func (m *Model) Restore(ctx context.Context, offsets []int, layer int, h []float32) (*model.State, error) {
	if m.weights == nil {
		return nil, fmt.Errorf("%w: bert: model closed", model.ErrBadInput)
	}
	if layer < 0 || layer > m.cfg.Layers {
		return nil, fmt.Errorf("%w: bert: restore at layer %d, want 0..%d", model.ErrBadInput, layer, m.cfg.Layers)
	}
	if len(offsets) < 2 {
		return nil, fmt.Errorf("%w: bert: restore: %d offsets, want at least 2 (one sequence)", model.ErrBadInput, len(offsets))
	}
	if offsets[0] != 0 {
		return nil, fmt.Errorf("%w: bert: restore: offsets start at %d, want 0", model.ErrBadInput, offsets[0])
	}
	for s := range len(offsets) - 1 {
		// n > 0 also rules out decreasing offsets; checking each length
		// against the window bounds the total, so nothing below overflows.
		if n := offsets[s+1] - offsets[s]; n <= 0 || n > m.cfg.MaxPositions {
			return nil, fmt.Errorf("%w: bert: restore: sequence %d has %d rows (offsets %d..%d), want 1..%d",
				model.ErrBadInput, s, n, offsets[s], offsets[s+1], m.cfg.MaxPositions)
		}
	}
	tokens := offsets[len(offsets)-1]
	if want := tokens * m.cfg.Hidden; len(h) != want {
		return nil, fmt.Errorf("%w: bert: restore: %d floats, want %d rows x %d",
			model.ErrBadInput, len(h), tokens, m.cfg.Hidden)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := m.newState(len(offsets)-1, tokens)
	if err != nil {
		return nil, err
	}
	copy(st.Offsets, offsets)
	st.Layer = layer
	if err := m.dev.Upload(st.H, h); err != nil {
		m.Release(st)
		return nil, fmt.Errorf("bert: restore: %w", err)
	}
	return st, nil
}

// newState returns a fresh state for seqs sequences and tokens rows at
// layer 0, reusing the smallest released buffer that is large enough.
func (m *Model) newState(seqs, tokens int) (*model.State, error) {
	best := -1
	for i, f := range m.free {
		if f.cap >= tokens && (best < 0 || f.cap < m.free[best].cap) {
			best = i
		}
	}
	var f freeBuf
	if best >= 0 {
		f = m.free[best]
		m.free[best] = m.free[len(m.free)-1]
		m.free = m.free[:len(m.free)-1]
	} else {
		if n := len(m.free); n > 0 {
			// Replace the largest free buffer rather than adding one, so
			// the pool grows to the largest batch instead of multiplying.
			big := 0
			for i := range m.free {
				if m.free[i].cap > m.free[big].cap {
					big = i
				}
			}
			m.dev.Free(m.free[big].buf)
			m.free[big] = m.free[n-1]
			m.free = m.free[:n-1]
		}
		c := roundTokens(tokens)
		buf, err := m.dev.Alloc(c * m.cfg.Hidden)
		if err != nil {
			return nil, fmt.Errorf("bert: state for %d tokens: %w", tokens, err)
		}
		f = freeBuf{buf: buf, cap: c}
	}
	st := &model.State{Offsets: make([]int, seqs+1), H: gpu.NewMat(f.buf, tokens, m.cfg.Hidden)}
	m.states[st] = f.buf
	return st, nil
}

// roundTokens rounds a row count up so that batches of similar size share
// buffers.
func roundTokens(n int) int { return (n + 63) &^ 63 }

// Release returns a state's buffer to the model's pool. Releasing a state
// twice, or one of another model, does nothing.
func (m *Model) Release(st *model.State) {
	buf, ok := m.states[st]
	if !ok {
		return
	}
	delete(m.states, st)
	m.free = append(m.free, freeBuf{buf: buf, cap: buf.Len() / m.cfg.Hidden})
	// Clear the view so a stale use fails loudly instead of reading reused
	// memory.
	st.H = gpu.Mat{}
}

// ensureWorkspace grows the layer scratch to hold tokens rows.
func (m *Model) ensureWorkspace(tokens int) error {
	if tokens <= m.wsTokens {
		return nil
	}
	c := roundTokens(tokens)
	buf, err := m.dev.Alloc(c * m.wsRowFloats())
	if err != nil {
		return fmt.Errorf("bert: workspace for %d tokens: %w", tokens, err)
	}
	if m.ws != nil {
		m.dev.Free(m.ws)
	}
	m.ws, m.wsTokens = buf, c
	return nil
}

// wsRowFloats is the scratch per token: fused QKV (3H), attention context
// (H), a residual sum (H) and the FFN's intermediate (I).
func (m *Model) wsRowFloats() int { return 5*m.cfg.Hidden + m.cfg.Intermediate }

// scratch views the workspace for t rows.
func (m *Model) scratch(t int) (qkv, ctxm, sum, ffn gpu.Mat) {
	H, I, c := m.cfg.Hidden, m.cfg.Intermediate, m.wsTokens
	qkv = gpu.Mat{Buf: m.ws, Rows: t, Cols: 3 * H, Stride: 3 * H}
	off := c * 3 * H
	ctxm = gpu.Mat{Buf: m.ws, Off: off, Rows: t, Cols: H, Stride: H}
	off += c * H
	sum = gpu.Mat{Buf: m.ws, Off: off, Rows: t, Cols: H, Stride: H}
	off += c * H
	ffn = gpu.Mat{Buf: m.ws, Off: off, Rows: t, Cols: I, Stride: I}
	return
}

func (m *Model) checkState(st *model.State) error {
	if st == nil {
		return fmt.Errorf("%w: bert: nil state", model.ErrBadInput)
	}
	if _, ok := m.states[st]; !ok {
		return fmt.Errorf("%w: bert: state not owned by this model (released or foreign)", model.ErrBadInput)
	}
	return nil
}

// RunLayers applies layers st.Layer+1 .. to in place, calling obs after each.
func (m *Model) RunLayers(ctx context.Context, st *model.State, to int, obs model.Observer) error {
	if err := m.checkState(st); err != nil {
		return err
	}
	if to < st.Layer || to > m.cfg.Layers {
		return fmt.Errorf("%w: bert: run layers %d..%d of a state at layer %d (model has %d)",
			model.ErrBadInput, st.Layer+1, to, st.Layer, m.cfg.Layers)
	}
	if err := m.ensureWorkspace(st.Tokens()); err != nil {
		return err
	}
	for l := st.Layer; l < to; l++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := m.layer(l+1, &m.layers[l], st); err != nil {
			return fmt.Errorf("bert: layer %d: %w", l+1, err)
		}
		st.Layer = l + 1
		if obs != nil {
			obs(st.Layer, st.H)
		}
	}
	return nil
}

// layer is one post-LN encoder layer over all packed rows:
//
//	h = LN(h + Attn(h) Wo + bo);  h = LN(h + act(h Wi + bi) Wo2 + bo2)
//
// With st.Hooks set, the hooks see q and v after the QKV projection and the
// attention output before its residual add; lnum counts from 1.
func (m *Model) layer(lnum int, w *layer, st *model.State) error {
	d := m.dev
	H := m.cfg.Hidden
	h := st.H
	qkv, ctxm, sum, ffn := m.scratch(h.Rows)
	eps := float32(m.cfg.LayerNormEps)
	scale := float32(1 / math.Sqrt(float64(H/m.cfg.Heads)))
	if err := d.Gemm(false, false, 1, h, w.qkvW, 0, qkv); err != nil {
		return err
	}
	if err := d.AddBias(qkv, w.qkvB, gpu.ActNone); err != nil {
		return err
	}
	if st.Hooks != nil {
		if err := st.Hooks.QKV(lnum, h, qkv.Colsl(0, H), qkv.Colsl(2*H, 3*H)); err != nil {
			return err
		}
	}
	if err := d.Attention(ctxm, qkv.Colsl(0, H), qkv.Colsl(H, 2*H), qkv.Colsl(2*H, 3*H), m.cfg.Heads, st.Offsets, scale); err != nil {
		return err
	}
	if err := d.Gemm(false, false, 1, ctxm, w.outW, 0, sum); err != nil {
		return err
	}
	if err := d.AddBias(sum, w.outB, gpu.ActNone); err != nil {
		return err
	}
	if st.Hooks != nil {
		if err := st.Hooks.Attended(lnum, sum); err != nil {
			return err
		}
	}
	if err := d.Add(sum, sum, h); err != nil {
		return err
	}
	if err := d.LayerNorm(h, sum, w.ln1G, w.ln1B, eps); err != nil {
		return err
	}
	if err := d.Gemm(false, false, 1, h, w.ffnInW, 0, ffn); err != nil {
		return err
	}
	if err := d.AddBias(ffn, w.ffnInB, m.cfg.act()); err != nil {
		return err
	}
	if err := d.Gemm(false, false, 1, ffn, w.ffnOutW, 0, sum); err != nil {
		return err
	}
	if err := d.AddBias(sum, w.ffnOutB, gpu.ActNone); err != nil {
		return err
	}
	if err := d.Add(sum, sum, h); err != nil {
		return err
	}
	if err := d.LayerNorm(h, sum, w.ln2G, w.ln2B, eps); err != nil {
		return err
	}
	return nil
}
