package train

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"github.com/smile-vplm/smile/model"
)

// Defaults are the hyperparameters a zero Config field takes, per method.
func Defaults(m Method) Config {
	c := Config{Epochs: 10, BatchSize: 32, LR: 1e-3, HeadLR: 2e-2, WeightDecay: 0.01, Warmup: 0.06, ClipNorm: 1,
		Seed: 1, Patience: 3, Temperature: 0.05, HeadWarmup: 30}
	switch m {
	case MethodHead:
		c.LR, c.Epochs, c.Patience = c.HeadLR, 30, 5
	case MethodFull:
		c.LR = 1e-4
	}
	return c
}

// withDefaults fills c's zero fields from Defaults(m).
func (c Config) withDefaults(m Method) Config {
	d := Defaults(m)
	if c.Epochs == 0 {
		c.Epochs = d.Epochs
	}
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.LR == 0 {
		c.LR = d.LR
	}
	if c.HeadLR == 0 {
		c.HeadLR = d.HeadLR
		if m == MethodHead {
			c.HeadLR = c.LR // the head is all a linear probe trains
		}
	}
	if c.WeightDecay == 0 {
		c.WeightDecay = d.WeightDecay
	}
	if c.Warmup == 0 {
		c.Warmup = d.Warmup
	}
	if c.ClipNorm == 0 {
		c.ClipNorm = d.ClipNorm
	}
	if c.Seed == 0 {
		c.Seed = d.Seed
	}
	if c.Patience == 0 {
		c.Patience = d.Patience
	}
	if c.Temperature == 0 {
		c.Temperature = d.Temperature
	}
	if c.HeadWarmup == 0 {
		c.HeadWarmup = d.HeadWarmup
	}
	return c
}

// Validate checks a config after defaults are applied.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: train config: %s", model.ErrBadInput, fmt.Sprintf(format, a...))
	}
	finite := func(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }
	switch {
	case c.Epochs < 1 || c.Epochs > 1000:
		return bad("epochs %d: want 1..1000", c.Epochs)
	case c.BatchSize < 1 || c.BatchSize > 4096:
		return bad("batch size %d: want 1..4096", c.BatchSize)
	case !finite(c.LR) || c.LR <= 0 || c.LR > 10:
		return bad("learning rate %g: want > 0 and <= 10", c.LR)
	case !finite(c.HeadLR) || c.HeadLR <= 0 || c.HeadLR > 10:
		return bad("head learning rate %g: want > 0 and <= 10", c.HeadLR)
	case !finite(c.WeightDecay) || c.WeightDecay < 0 || c.WeightDecay >= 1:
		return bad("weight decay %g: want 0 <= wd < 1", c.WeightDecay)
	case !finite(c.Warmup) || c.Warmup < 0 || c.Warmup > 1:
		return bad("warm-up %g: want a fraction in [0, 1]", c.Warmup)
	case !finite(c.ClipNorm):
		return bad("clip norm %g: want a finite value (< 0 disables)", c.ClipNorm)
	case !finite(c.Temperature) || c.Temperature <= 0:
		return bad("temperature %g: want > 0", c.Temperature)
	case c.HeadWarmup > 1000:
		return bad("head warm-up %d epochs: want at most 1000", c.HeadWarmup)
	}
	return nil
}

// Engine trains one vPLM's params (or, for comparison, a private backbone
// copy) from cached inputs. It is used by one goroutine at a time.
type Engine struct {
	spec    *model.TrainSpec
	method  Method
	cfg     Config
	blas    BLAS
	base    *model.Params
	headK   model.HeadKind
	first   int // first layer (from 1) the engine computes; Layers+1 for MethodHead
	blocks  []blockWeights
	ads     []*adapterWeights
	emb     embWeights
	pool    poolWeights
	headW   tensor
	headB   tensor
	params  []*Param // every trained tensor: the body's, then the head's
	body    int      // params[:body] are the body's (adapter or backbone)
	opt     *AdamW   // the body's optimizer
	headOpt *AdamW   // the head's (its own learning rate: HeadLR)
	steps   int
	ar      arena
	total   int       // scheduled steps of the run
	best    []float32 // snapshot of every param value (Fit's best epoch)
	lastErr error
}

type embWeights struct {
	table, pos, lnG, lnB tensor
}

type poolWeights struct {
	w, b tensor
}

// New builds an engine. spec is read, never written (full fine-tuning
// copies what it trains); p is the vPLM's current params, whose adapter and
// head MethodAdapter trains (MethodHead: the head only; MethodFull: the
// backbone copy and the head, the adapter is ignored).
func New(spec *model.TrainSpec, p *model.Params, m Method, cfg Config, blas BLAS) (*Engine, error) {
	if spec == nil || p == nil || blas == nil {
		return nil, fmt.Errorf("%w: train: nil spec, params or BLAS", model.ErrBadInput)
	}
	if m != MethodAdapter && m != MethodHead && m != MethodFull {
		return nil, fmt.Errorf("%w: train: method %d", model.ErrBadInput, m)
	}
	cfg = cfg.withDefaults(m)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	g := specGeometry{spec}
	if err := p.Check(g); err != nil {
		return nil, err
	}
	e := &Engine{spec: spec, method: m, cfg: cfg, blas: blas, base: cloneParams(p), headK: p.Head.Kind}
	L := len(spec.Blocks)
	e.blocks = make([]blockWeights, L)
	e.ads = make([]*adapterWeights, L)
	full := m == MethodFull
	for i := range spec.Blocks {
		e.blocks[i] = e.blockWeights(&spec.Blocks[i], i+1, full)
	}
	switch m {
	case MethodAdapter:
		e.first = L + 1
		for i := range e.base.Adapter.Layers {
			al := &e.base.Adapter.Layers[i]
			e.ads[al.Layer-1] = e.adapterWeights(&e.base.Adapter, al)
			e.first = min(e.first, al.Layer)
		}
		if e.first > L {
			return nil, fmt.Errorf("%w: train: the params adapt no layer", model.ErrBadInput)
		}
	case MethodHead:
		e.first = L + 1
	case MethodFull:
		e.first = 1
		es := &spec.Embedding
		e.emb = embWeights{
			table: e.newTensor("embedding.table", es.Table, true),
			pos:   e.newTensor("embedding.positions", es.Positions, true),
		}
		if es.LNGamma != nil {
			e.emb.lnG = e.newTensor("embedding.ln.gamma", es.LNGamma, false)
			e.emb.lnB = e.newTensor("embedding.ln.beta", es.LNBeta, false)
		}
	}
	ps := &spec.Pool
	if full {
		e.pool = poolWeights{w: e.newTensor("pool.weight", ps.W, true), b: e.newTensor("pool.bias", ps.B, false)}
	} else {
		e.pool = poolWeights{w: tensor{v: ps.W}, b: tensor{v: ps.B}}
	}
	e.body = len(e.params)
	h := &e.base.Head
	if h.W != nil {
		e.headW = e.param("head.weight", h.W, true)
	}
	if h.B != nil {
		e.headB = e.param("head.bias", h.B, false)
	}
	oc := AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: cfg.WeightDecay, ClipNorm: cfg.ClipNorm}
	e.opt, e.headOpt = NewAdamW(e.params[:e.body], oc), NewAdamW(e.params[e.body:], oc)
	if len(e.params) == 0 {
		return nil, fmt.Errorf("%w: train: nothing to train (a plain embed head has no weights; use an adapter)", model.ErrBadInput)
	}
	return e, nil
}

// param registers v (kept, not copied) as a trainable tensor.
func (e *Engine) param(name string, v []float32, decay bool) tensor {
	t := tensor{v: v, g: make([]float32, len(v))}
	e.params = append(e.params, &Param{Name: name, Value: t.v, Grad: t.g, Decay: decay})
	return t
}

// newTensor registers a private trainable copy of v.
func (e *Engine) newTensor(name string, v []float32, decay bool) tensor {
	return e.param(name, slices.Clone(v), decay)
}

func (e *Engine) blockWeights(s *model.BlockSpec, layer int, train bool) blockWeights {
	w := func(name string, v []float32, decay bool) tensor {
		if !train || v == nil {
			return tensor{v: v}
		}
		return e.newTensor(fmt.Sprintf("layer.%d.%s", layer, name), v, decay)
	}
	return blockWeights{
		spec: s,
		ln1g: w("ln1.gamma", s.LN1G, false), ln1b: w("ln1.beta", s.LN1B, false),
		qkvW: w("qkv.weight", s.QKVW, true), qkvB: w("qkv.bias", s.QKVB, false),
		outW: w("out.weight", s.OutW, true), outB: w("out.bias", s.OutB, false),
		resW: w("residual.weight", s.ResW, true),
		ln2g: w("ln2.gamma", s.LN2G, false), ln2b: w("ln2.beta", s.LN2B, false),
		f1W: w("ffn1.weight", s.F1W, true), f1B: w("ffn1.bias", s.F1B, false),
		f2W: w("ffn2.weight", s.F2W, true), f2B: w("ffn2.bias", s.F2B, false),
	}
}

func (e *Engine) adapterWeights(a *model.Adapter, al *model.AdapterLayer) *adapterWeights {
	n := func(s string) string { return fmt.Sprintf("adapter.%d.%s", al.Layer, s) }
	w := &adapterWeights{kind: a.Kind, rank: a.Rank, scale: 1}
	if a.Kind == model.AdapterBottleneck {
		w.down, w.downB = e.param(n("down"), al.Down, true), e.param(n("down.bias"), al.DownB, false)
		w.up, w.upB = e.param(n("up"), al.Up, true), e.param(n("up.bias"), al.UpB, false)
	} else {
		if a.Alpha != 0 {
			w.scale = a.Alpha / float32(a.Rank)
		}
		w.aq, w.bq = e.param(n("aq"), al.Aq, true), e.param(n("bq"), al.Bq, true)
		w.av, w.bv = e.param(n("av"), al.Av, true), e.param(n("bv"), al.Bv, true)
	}
	return w
}

// Input says what Inputs the engine takes: token ids, hidden states at a
// layer boundary (the cut: the layer below the first adapted one), or the
// backbone's pooled output.
func (e *Engine) Input() (kind InputKind, layer int) {
	switch e.method {
	case MethodFull:
		return InputIDs, 0
	case MethodHead:
		return InputPooled, len(e.spec.Blocks)
	}
	if e.ads[e.first-1].kind == model.AdapterBottleneck {
		return InputAttended, e.first
	}
	return InputStates, e.first - 1
}

// Config is the engine's configuration with defaults applied.
func (e *Engine) Config() Config { return e.cfg }

// Method is what the engine trains.
func (e *Engine) Method() Method { return e.method }

// NumParams is the number of trained values.
func (e *Engine) NumParams() int {
	n := 0
	for _, p := range e.params {
		n += len(p.Value)
	}
	return n
}

// Steps is the number of optimizer steps taken.
func (e *Engine) Steps() int { return e.steps }

// SetTotalSteps sets the run's length for the learning-rate schedule.
func (e *Engine) SetTotalSteps(n int) { e.total = n }

// pass is one forward pass's saved state.
type pass struct {
	S       int
	offsets []int
	ids     []int32 // full: flattened ids
	x0      []float32
	embPre  []float32 // full with embedding LN: LN input
	embM    []float32
	embR    []float32
	acts    []*blockAct
	sel     []float32 // pool input rows [S, In]
	pre     []float32 // pool pre-activation [S, Out]
	pooled  []float32 // pool output [S, Out] (after act and L2)
	pnorm   []float32
	hout    []float32 // head pre-normalisation output [S, C]
	hnorm   []float32
	out     []float32 // logits (classify) or normalised embeddings (embed)
	dpooled []float32 // d(loss)/d(pooled)
	classes int
}

func (e *Engine) checkInputs(in *Inputs) (S int, err error) {
	bad := func(format string, a ...any) (int, error) {
		return 0, fmt.Errorf("%w: train inputs: %s", model.ErrBadInput, fmt.Sprintf(format, a...))
	}
	if in == nil {
		return bad("nil")
	}
	kind, layer := e.Input()
	switch kind {
	case InputIDs:
		if len(in.IDs) == 0 {
			return bad("no sequences")
		}
		for i, s := range in.IDs {
			if len(s) == 0 || len(s) > e.spec.Embedding.MaxPositions {
				return bad("sequence %d has %d ids (want 1..%d)", i, len(s), e.spec.Embedding.MaxPositions)
			}
			for _, id := range s {
				if id < 0 || int(id) >= e.spec.Embedding.Vocab {
					return bad("sequence %d: id %d outside the vocabulary", i, id)
				}
			}
		}
		return len(in.IDs), nil
	case InputPooled:
		w := e.spec.Info.OutputDim
		if len(in.H) == 0 || len(in.H)%w != 0 {
			return bad("%d pooled floats, want a multiple of %d", len(in.H), w)
		}
		return len(in.H) / w, nil
	}
	hLayer := layer
	if kind == InputAttended {
		hLayer = layer - 1
	}
	o := in.Offsets
	if len(o) < 2 || o[0] != 0 {
		return bad("offsets %v", o)
	}
	for i := 1; i < len(o); i++ {
		if n := o[i] - o[i-1]; n < 1 || n > e.spec.Embedding.MaxPositions {
			return bad("sequence %d has %d rows", i-1, n)
		}
	}
	if w := e.stateWidth(hLayer); len(in.H) != o[len(o)-1]*w {
		return bad("%d floats for %d rows of width %d", len(in.H), o[len(o)-1], w)
	}
	if kind == InputAttended {
		if w := e.spec.Blocks[layer-1].Out; len(in.Z) != o[len(o)-1]*w {
			return bad("%d attention outputs for %d rows of width %d", len(in.Z), o[len(o)-1], w)
		}
	}
	return len(o) - 1, nil
}

func (e *Engine) stateWidth(layer int) int {
	if layer == 0 {
		return e.spec.Embedding.Width
	}
	return e.spec.Blocks[layer-1].Out
}

// forward runs the engine's part of the model over a batch.
func (e *Engine) forward(in *Inputs, S int) *pass {
	ar := &e.ar
	p := &pass{S: S}
	L := len(e.spec.Blocks)
	ps := &e.spec.Pool
	if e.method == MethodHead {
		p.pooled = in.H
	} else {
		var x []float32
		if e.method == MethodFull {
			x = e.embedForward(p, in.IDs)
		} else {
			p.offsets, x = in.Offsets, in.H
		}
		tail := tailNone
		switch lastPreLN := e.spec.Blocks[L-1].PreLN; {
		case ps.Mode == model.PoolMean && lastPreLN:
			tail = tailMean
		case ps.Mode == model.PoolFirst && !lastPreLN:
			tail = tailFirst
		}
		for l := e.first; l <= L; l++ {
			t := tailNone
			if l == L {
				t = tail
			}
			var z []float32
			if l == e.first {
				z = in.Z // nil unless InputAttended
			}
			a := e.blockForward(&e.blocks[l-1], e.ads[l-1], x, z, p.offsets, t)
			p.acts = append(p.acts, a)
			x = a.out
		}
		last := e.spec.Blocks[L-1].Out
		switch {
		case tail != tailNone:
			p.sel = x
		case ps.Mode == model.PoolMean:
			p.sel = ar.get(S * last)
			MeanPool(p.sel, x, p.offsets, last)
		default:
			p.sel = ar.get(S * last)
			for s := 0; s < S; s++ {
				copy(p.sel[s*last:(s+1)*last], x[p.offsets[s]*last:])
			}
		}
		p.pre = ar.get(S * ps.Out)
		Linear(e.blas, p.pre, p.sel, S, ps.In, ps.Out, e.pool.w.v, e.pool.b.v)
		p.pooled = ar.get(S * ps.Out)
		Activate(ps.Act, p.pooled, p.pre)
		if ps.L2 {
			p.pnorm = ar.get(S)
			L2Normalize(p.pooled, p.pnorm, p.pooled, S, ps.Out, ps.L2Eps)
		}
	}
	h := &e.base.Head
	C := h.Out
	p.classes = C
	if h.W != nil {
		p.hout = ar.get(S * C)
		Linear(e.blas, p.hout, p.pooled, S, h.In, C, e.headW.v, e.headB.v)
	} else {
		p.hout = p.pooled
	}
	if e.headK == model.HeadEmbed {
		p.out, p.hnorm = ar.get(S*C), ar.get(S)
		L2Normalize(p.out, p.hnorm, p.hout, S, C, model.L2Eps)
	} else {
		p.out = p.hout
	}
	return p
}

func (e *Engine) embedForward(p *pass, ids [][]int32) []float32 {
	es := &e.spec.Embedding
	W := es.Width
	p.offsets = make([]int, len(ids)+1)
	for i, s := range ids {
		p.offsets[i+1] = p.offsets[i] + len(s)
	}
	T := p.offsets[len(ids)]
	x := e.ar.get(T * W)
	p.ids = p.ids[:0]
	t := 0
	for _, s := range ids {
		for pos, id := range s {
			row := x[t*W : (t+1)*W]
			copy(row, e.emb.table.v[int(id)*W:(int(id)+1)*W])
			AddTo(row, e.emb.pos.v[pos*W:(pos+1)*W])
			p.ids = append(p.ids, id)
			t++
		}
	}
	if es.LNGamma == nil {
		return x
	}
	p.embPre = x
	p.embM, p.embR = e.ar.get(T), e.ar.get(T)
	y := e.ar.get(T * W)
	LayerNorm(y, p.embM, p.embR, x, e.emb.lnG.v, e.emb.lnB.v, T, W, es.LNEps)
	return y
}

// Step runs one optimizer step on a batch and returns its mean loss.
func (e *Engine) Step(in *Inputs, labels []int) (float64, error) {
	S, err := e.checkInputs(in)
	if err != nil {
		return 0, err
	}
	if err := e.checkLabels(labels, S); err != nil {
		return 0, err
	}
	e.ar.reset()
	p := e.forward(in, S)
	loss := e.lossBackward(p, labels)
	e.backward(p)
	total := max(e.total, e.steps+1)
	if e.body > 0 {
		e.opt.Step(LR(e.steps, total, e.cfg.LR, e.cfg.Warmup))
	}
	if len(e.params) > e.body {
		e.headOpt.Step(LR(e.steps, total, e.cfg.HeadLR, e.cfg.Warmup))
	}
	e.steps++
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return loss, fmt.Errorf("%w: train: the loss diverged (%v); lower the learning rate", model.ErrBadInput, loss)
	}
	return loss, nil
}

func (e *Engine) checkLabels(labels []int, S int) error {
	if len(labels) != S {
		return fmt.Errorf("%w: train: %d labels for %d examples", model.ErrBadInput, len(labels), S)
	}
	if e.headK == model.HeadClassify {
		for i, l := range labels {
			if l < 0 || l >= e.base.Head.Out {
				return fmt.Errorf("%w: train: example %d: label index %d outside 0..%d", model.ErrBadInput, i, l, e.base.Head.Out-1)
			}
		}
	}
	return nil
}

// lossBackward computes the loss and leaves d(pooled) in the pass.
func (e *Engine) lossBackward(p *pass, labels []int) float64 {
	ar := &e.ar
	S, C := p.S, p.classes
	h := &e.base.Head
	dout := ar.get(S * C)
	var loss float64
	if e.headK == model.HeadClassify {
		loss = SoftmaxCrossEntropy(nil, dout, p.out, labels, S, C)
	} else {
		loss = SupConLoss(dout, p.out, labels, S, C, e.cfg.Temperature)
		dh := ar.getZero(S * C)
		L2NormalizeBackward(dh, dout, p.out, p.hnorm, S, C, model.L2Eps)
		dout = dh
	}
	if h.W != nil {
		dp := ar.getZero(S * h.In)
		LinearBackward(e.blas, dp, e.headW.g, e.headB.g, dout, p.pooled, e.headW.v, S, h.In, C)
		dout = dp
	}
	p.dpooled = dout
	return loss
}

func (e *Engine) backward(p *pass) {
	if e.method == MethodHead {
		return
	}
	ar := &e.ar
	S := p.S
	ps := &e.spec.Pool
	dpooled := p.dpooled
	if ps.L2 {
		d := ar.getZero(S * ps.Out)
		L2NormalizeBackward(d, dpooled, p.pooled, p.pnorm, S, ps.Out, ps.L2Eps)
		dpooled = d
	}
	dpre := ar.getZero(S * ps.Out)
	ActivateBackward(ps.Act, dpre, dpooled, p.pre)
	dsel := ar.getZero(S * ps.In)
	LinearBackward(e.blas, dsel, e.pool.w.g, e.pool.b.g, dpre, p.sel, e.pool.w.v, S, ps.In, ps.Out)
	L := len(e.spec.Blocks)
	last := e.spec.Blocks[L-1]
	var dx []float32
	switch a := p.acts[len(p.acts)-1]; {
	case a.tail != tailNone:
		dx = dsel
	case ps.Mode == model.PoolMean:
		dx = ar.getZero(a.T * last.Out)
		MeanPoolBackward(dx, dsel, p.offsets, last.Out)
	default:
		dx = ar.getZero(a.T * last.Out)
		for s := 0; s < S; s++ {
			copy(dx[p.offsets[s]*last.Out:], dsel[s*last.Out:(s+1)*last.Out])
		}
	}
	full := e.method == MethodFull
	for i := len(p.acts) - 1; i >= 0; i-- {
		l := e.first + i
		needX := i > 0 || full
		dx = e.blockBackward(&e.blocks[l-1], e.ads[l-1], p.acts[i], dx, needX)
	}
	if full {
		e.embedBackward(p, dx)
	}
}

func (e *Engine) embedBackward(p *pass, dx []float32) {
	es := &e.spec.Embedding
	W := es.Width
	T := len(p.ids)
	if es.LNGamma != nil {
		d := e.ar.getZero(T * W)
		LayerNormBackward(d, e.emb.lnG.g, e.emb.lnB.g, dx, p.embPre, p.embM, p.embR, e.emb.lnG.v, T, W)
		dx = d
	}
	t := 0
	for s := 0; s < p.S; s++ {
		for pos := 0; pos < p.offsets[s+1]-p.offsets[s]; pos++ {
			row := dx[t*W : (t+1)*W]
			id := int(p.ids[t])
			AddTo(e.emb.table.g[id*W:(id+1)*W], row)
			AddTo(e.emb.pos.g[pos*W:(pos+1)*W], row)
			t++
		}
	}
}

// Loss evaluates the mean loss of a batch without changing anything (for
// tests and validation).
func (e *Engine) Loss(in *Inputs, labels []int) (float64, error) {
	S, err := e.checkInputs(in)
	if err != nil {
		return 0, err
	}
	if err := e.checkLabels(labels, S); err != nil {
		return 0, err
	}
	e.ar.reset()
	p := e.forward(in, S)
	if e.headK == model.HeadClassify {
		return SoftmaxCrossEntropy(nil, nil, p.out, labels, S, p.classes), nil
	}
	return SupConLoss(nil, p.out, labels, S, p.classes, e.cfg.Temperature), nil
}

// Predict answers a batch as serving would: probabilities over the labels
// (classify) or L2-normalised embeddings (embed), one row per example.
func (e *Engine) Predict(ctx context.Context, in *Inputs) ([][]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	S, err := e.checkInputs(in)
	if err != nil {
		return nil, err
	}
	e.ar.reset()
	p := e.forward(in, S)
	C := p.classes
	flat := make([]float32, S*C)
	copy(flat, p.out)
	out := make([][]float32, S)
	for s := range out {
		row := flat[s*C : (s+1)*C : (s+1)*C]
		if e.headK == model.HeadClassify {
			model.Softmax(row)
		}
		out[s] = row
	}
	return out, nil
}

// Params returns a copy of the vPLM params as trained so far (the base
// params with the trained adapter and head). MethodFull has none to give:
// its result is a private backbone, never served.
func (e *Engine) Params() (*model.Params, error) {
	if e.method == MethodFull {
		return nil, fmt.Errorf("%w: train: full fine-tuning produces no vPLM params", model.ErrBadInput)
	}
	return cloneParams(e.base), nil
}

func cloneParams(p *model.Params) *model.Params {
	q := &model.Params{Adapter: p.Adapter, Head: p.Head}
	q.Adapter.Layers = make([]model.AdapterLayer, len(p.Adapter.Layers))
	for i, al := range p.Adapter.Layers {
		q.Adapter.Layers[i] = model.AdapterLayer{Layer: al.Layer,
			Down: slices.Clone(al.Down), DownB: slices.Clone(al.DownB), Up: slices.Clone(al.Up), UpB: slices.Clone(al.UpB),
			Aq: slices.Clone(al.Aq), Bq: slices.Clone(al.Bq), Av: slices.Clone(al.Av), Bv: slices.Clone(al.Bv)}
	}
	q.Head.Labels = slices.Clone(p.Head.Labels)
	q.Head.W, q.Head.B = slices.Clone(p.Head.W), slices.Clone(p.Head.B)
	return q
}

// snapshot copies every trained value (Fit keeps its best epoch's).
func (e *Engine) snapshot() {
	n := e.NumParams()
	if cap(e.best) < n {
		e.best = make([]float32, n)
	}
	e.best = e.best[:n]
	off := 0
	for _, p := range e.params {
		off += copy(e.best[off:], p.Value)
	}
}

// restoreSnapshot puts the snapshot's values back.
func (e *Engine) restoreSnapshot() {
	off := 0
	for _, p := range e.params {
		off += copy(p.Value, e.best[off:])
	}
}

const checkpointMagic = "SMILETC1"

// Checkpoint encodes the trained values, the snapshot (if any) and the
// optimizer's state.
func (e *Engine) Checkpoint() ([]byte, error) {
	opt, err := e.opt.MarshalBinary()
	if err != nil {
		return nil, err
	}
	hopt, err := e.headOpt.MarshalBinary()
	if err != nil {
		return nil, err
	}
	n := e.NumParams()
	b := make([]byte, 0, len(checkpointMagic)+40+8*n+len(opt)+len(hopt)+4)
	b = append(b, checkpointMagic...)
	b = binary.LittleEndian.AppendUint64(b, uint64(e.steps))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(opt)))
	b = binary.LittleEndian.AppendUint64(b, uint64(e.method))
	b = binary.LittleEndian.AppendUint64(b, uint64(n))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(e.best)))
	for _, p := range e.params {
		for _, v := range p.Value {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	}
	for _, v := range e.best {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	b = append(b, opt...)
	b = append(b, hopt...)
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

// Restore loads a Checkpoint of an engine with the same configuration.
func (e *Engine) Restore(b []byte) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: train checkpoint: %s", model.ErrBadInput, fmt.Sprintf(format, a...))
	}
	h := len(checkpointMagic) + 40
	if len(b) < h+4 || string(b[:len(checkpointMagic)]) != checkpointMagic {
		return bad("not a checkpoint (%d bytes)", len(b))
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return bad("checksum mismatch")
	}
	r := body[len(checkpointMagic):]
	steps, optLen := binary.LittleEndian.Uint64(r), binary.LittleEndian.Uint64(r[8:])
	r = r[16:]
	method, n, nb := binary.LittleEndian.Uint64(r), binary.LittleEndian.Uint64(r[8:]), binary.LittleEndian.Uint64(r[16:])
	r = r[24:]
	if Method(method) != e.method || n != uint64(e.NumParams()) || (nb != 0 && nb != n) {
		return bad("made by another configuration (method %d, %d values; this engine: method %d, %d)", method, n, e.method, e.NumParams())
	}
	if uint64(len(r)) < 4*(n+nb) {
		return bad("truncated")
	}
	for _, p := range e.params {
		for i := range p.Value {
			p.Value[i] = math.Float32frombits(binary.LittleEndian.Uint32(r))
			r = r[4:]
		}
	}
	e.best = e.best[:0]
	for range nb {
		e.best = append(e.best, math.Float32frombits(binary.LittleEndian.Uint32(r)))
		r = r[4:]
	}
	if optLen > uint64(len(r)) || steps > 1<<40 {
		return bad("truncated optimizer state")
	}
	if err := e.opt.UnmarshalBinary(r[:optLen]); err != nil {
		return err
	}
	if err := e.headOpt.UnmarshalBinary(r[optLen:]); err != nil {
		return err
	}
	e.steps = int(steps)
	return nil
}

// specGeometry adapts a TrainSpec to model.Geometry.
type specGeometry struct{ s *model.TrainSpec }

func (g specGeometry) Info() model.Info { return g.s.Info }

func (g specGeometry) LayerDims(layer int) model.LayerDims {
	if layer < 1 || layer > len(g.s.Blocks) {
		return model.LayerDims{}
	}
	b := &g.s.Blocks[layer-1]
	return model.LayerDims{In: b.In, Attention: b.Attention, Out: b.Out}
}
