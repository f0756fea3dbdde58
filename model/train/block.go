package train

import (
	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model"
)

// tensor is a weight with its gradient; g is nil for a frozen weight.
type tensor struct {
	v, g []float32
}

func (t tensor) trainable() bool { return t.g != nil }

// blockWeights are one layer's backbone weights: views of the spec when
// frozen, private trainable copies in full fine-tuning.
type blockWeights struct {
	spec               *model.BlockSpec
	ln1g, ln1b         tensor
	qkvW, qkvB         tensor
	outW, outB         tensor
	resW               tensor // v nil: identity residual
	ln2g, ln2b         tensor
	f1W, f1B, f2W, f2B tensor
}

// adapterWeights are one layer's adapter (nil kind: the layer has none).
type adapterWeights struct {
	kind           model.AdapterKind
	rank           int
	scale          float32 // LoRA: alpha/r (1 when alpha is 0)
	down, downB    tensor  // [Out, r], [r]
	up, upB        tensor  // [r, Out], [Out]
	aq, bq, av, bv tensor  // [In, r], [r, A]
}

// blockAct holds what a block's forward pass keeps for its backward pass.
type blockAct struct {
	T       int
	x       []float32 // input [T, In] (owned by the previous stage)
	h       []float32 // PreLN: LN1(x) [T, In]
	m1, r1  []float32 // LN1 statistics
	u       []float32 // LoRA: [T, 2r] = xin [Aq | Av]
	qkv     []float32 // [T, 3A]
	probs   []float32
	att     []float32 // [T, A]
	z       []float32 // attention sublayer output before the adapter [T, Out]
	bu, bg  []float32 // bottleneck: pre-GELU [T, r] and GELU output
	s1      []float32 // residual sum r + z' [T, Out] (PostLN: LN1's input)
	y       []float32 // PostLN: LN1(s1); PreLN: s1
	h2      []float32 // PreLN: LN2(y)
	m2, r2  []float32 // LN2 statistics
	f       []float32 // FFN pre-activation [T, FFN]
	fa      []float32 // FFN activation
	s2      []float32 // PostLN: LN2's input
	out     []float32 // [T, Out] (PreLN tail: [S, Out] pooled)
	faPool  []float32 // PreLN tail: mean-pooled fa [S, FFN]
	tail    tailMode
	zGiven  bool      // the block started from a given attention output
	xr      []float32 // residual input rows: x, or its first rows (tailFirst)
	R       int       // rows after attention: T, or S (tailFirst)
	offsets []int
}

// tailMode says how much of the last layer's output the pool reads.
type tailMode uint8

const (
	tailNone  tailMode = iota // every row
	tailMean                  // a PreLN last layer under a mean pool
	tailFirst                 // a PostLN last layer under a first-row pool
)

// blockForward runs one layer over x ([T, In]) and returns its activations.
// With tailMean the output is the mean-pooled layer output [S, Out]: the
// last linear map then runs on one row per sequence (mean(y + fa W2 + b2) =
// mean(y) + mean(fa) W2 + b2). With tailFirst the output is the first row
// of each sequence [S, Out]: only those rows' queries attend, and every
// step after attention runs on S rows instead of T.
//
// A non-nil zIn is the layer's attention sublayer output, computed earlier
// (InputAttended): the projections and attention are skipped, and so is
// their backward pass (the block's only trainable part is then its
// bottleneck adapter).
func (e *Engine) blockForward(bw *blockWeights, ad *adapterWeights, x, zIn []float32, offsets []int, tail tailMode) *blockAct {
	s := bw.spec
	T := offsets[len(offsets)-1]
	S := len(offsets) - 1
	ar := &e.ar
	a := &blockAct{T: T, x: x, offsets: offsets, tail: tail}
	A, In, Out := s.Attention, s.In, s.Out
	if zIn != nil {
		return e.blockFromZ(bw, ad, a, x, zIn, tail)
	}
	xin := x
	if s.PreLN {
		a.h, a.m1, a.r1 = ar.get(T*In), ar.get(T), ar.get(T)
		LayerNorm(a.h, a.m1, a.r1, x, bw.ln1g.v, bw.ln1b.v, T, In, s.LNEps)
		xin = a.h
	}
	a.qkv = ar.get(T * 3 * A)
	Linear(e.blas, a.qkv, xin, T, In, 3*A, bw.qkvW.v, bw.qkvB.v)
	if ad != nil && ad.kind == model.AdapterLoRA {
		r := ad.rank
		a.u = ar.get(T * 2 * r)
		e.blas.Sgemm(false, false, T, r, In, 1, xin, In, ad.aq.v, r, 0, a.u, 2*r)
		e.blas.Sgemm(false, false, T, r, In, 1, xin, In, ad.av.v, r, 0, a.u[r:], 2*r)
		e.blas.Sgemm(false, false, T, A, r, ad.scale, a.u, 2*r, ad.bq.v, A, 1, a.qkv, 3*A)
		e.blas.Sgemm(false, false, T, A, r, ad.scale, a.u[r:], 2*r, ad.bv.v, A, 1, a.qkv[2*A:], 3*A)
	}
	R := T
	a.xr = x
	if tail == tailFirst {
		R = S
		a.probs, a.att = ar.get(FirstProbsLen(offsets, s.Heads)), ar.get(S*A)
		AttentionFirst(e.blas, a.att, a.probs, a.qkv, offsets, s.Heads, A, s.QueryScale)
		a.xr = ar.get(S * In)
		for i := 0; i < S; i++ {
			copy(a.xr[i*In:(i+1)*In], x[offsets[i]*In:])
		}
	} else {
		a.probs, a.att = ar.get(ProbsLen(offsets, s.Heads)), ar.get(T*A)
		Attention(e.blas, a.att, a.probs, a.qkv, offsets, s.Heads, A, s.QueryScale)
	}
	a.R = R
	a.z = ar.get(R * Out)
	Linear(e.blas, a.z, a.att, R, A, Out, bw.outW.v, bw.outB.v)
	return e.blockAfterZ(bw, ad, a)
}

// blockFromZ starts a block from a given attention output z ([T, Out]).
func (e *Engine) blockFromZ(bw *blockWeights, ad *adapterWeights, a *blockAct, x, z []float32, tail tailMode) *blockAct {
	s := bw.spec
	In, Out := s.In, s.Out
	a.zGiven = true
	a.R, a.xr, a.z = a.T, x, z
	if tail == tailFirst {
		S := len(a.offsets) - 1
		a.R = S
		a.xr, a.z = e.ar.get(S*In), e.ar.get(S*Out)
		for i := 0; i < S; i++ {
			copy(a.xr[i*In:(i+1)*In], x[a.offsets[i]*In:])
			copy(a.z[i*Out:(i+1)*Out], z[a.offsets[i]*Out:])
		}
	}
	return e.blockAfterZ(bw, ad, a)
}

// blockAfterZ runs the rest of a block from its attention output a.z
// (a.R rows, with a.xr the residual input rows).
func (e *Engine) blockAfterZ(bw *blockWeights, ad *adapterWeights, a *blockAct) *blockAct {
	s := bw.spec
	In, Out, F := s.In, s.Out, s.FFN
	ar := &e.ar
	T, S, offsets, tail := a.R, len(a.offsets)-1, a.offsets, a.tail
	// s1 = r + z'
	a.s1 = ar.get(T * Out)
	if bw.resW.v != nil {
		Linear(e.blas, a.s1, a.xr, T, In, Out, bw.resW.v, nil)
	} else {
		copy(a.s1, a.xr)
	}
	AddTo(a.s1, a.z)
	if ad != nil && ad.kind == model.AdapterBottleneck {
		r := ad.rank
		a.bu, a.bg = ar.get(T*r), ar.get(T*r)
		Linear(e.blas, a.bu, a.z, T, Out, r, ad.down.v, ad.downB.v)
		Activate(gpu.ActGELU, a.bg, a.bu)
		// s1 += bg Up + bu
		e.blas.Sgemm(false, false, T, Out, r, 1, a.bg, r, ad.up.v, Out, 1, a.s1, Out)
		addBias(a.s1, ad.upB.v, T, Out)
	}
	if s.PreLN {
		a.y = a.s1
		a.h2, a.m2, a.r2 = ar.get(T*Out), ar.get(T), ar.get(T)
		LayerNorm(a.h2, a.m2, a.r2, a.y, bw.ln2g.v, bw.ln2b.v, T, Out, s.LNEps)
		a.f, a.fa = ar.get(T*F), ar.get(T*F)
		Linear(e.blas, a.f, a.h2, T, Out, F, bw.f1W.v, bw.f1B.v)
		Activate(s.Act, a.fa, a.f)
		if tail == tailMean {
			a.out, a.faPool = ar.get(S*Out), ar.get(S*F)
			MeanPool(a.out, a.y, offsets, Out)
			MeanPool(a.faPool, a.fa, offsets, F)
			e.blas.Sgemm(false, false, S, Out, F, 1, a.faPool, F, bw.f2W.v, Out, 1, a.out, Out)
			addBias(a.out, bw.f2B.v, S, Out)
			return a
		}
		a.out = ar.get(T * Out)
		Linear(e.blas, a.out, a.fa, T, F, Out, bw.f2W.v, bw.f2B.v)
		AddTo(a.out, a.y)
		return a
	}
	a.y, a.m1, a.r1 = ar.get(T*Out), ar.get(T), ar.get(T)
	LayerNorm(a.y, a.m1, a.r1, a.s1, bw.ln1g.v, bw.ln1b.v, T, Out, s.LNEps)
	a.f, a.fa = ar.get(T*F), ar.get(T*F)
	Linear(e.blas, a.f, a.y, T, Out, F, bw.f1W.v, bw.f1B.v)
	Activate(s.Act, a.fa, a.f)
	a.s2 = ar.get(T * Out)
	Linear(e.blas, a.s2, a.fa, T, F, Out, bw.f2W.v, bw.f2B.v)
	AddTo(a.s2, a.y)
	a.out, a.m2, a.r2 = ar.get(T*Out), ar.get(T), ar.get(T)
	LayerNorm(a.out, a.m2, a.r2, a.s2, bw.ln2g.v, bw.ln2b.v, T, Out, s.LNEps)
	return a
}

// blockBackward takes d(out) and accumulates the gradients of the block's
// trainable tensors and adapter; it returns d(x) when needX (else nil).
// dout is consumed (may be overwritten).
func (e *Engine) blockBackward(bw *blockWeights, ad *adapterWeights, a *blockAct, dout []float32, needX bool) []float32 {
	s := bw.spec
	T0, S := a.T, len(a.offsets)-1
	T := a.R // rows after attention
	A, In, Out, F := s.Attention, s.In, s.Out, s.FFN
	ar := &e.ar
	var ds1 []float32 // gradient of the residual sum s1
	dfa := ar.getZero(T * F)
	if s.PreLN {
		ds1 = ar.getZero(T * Out)
		if a.tail == tailMean {
			// out = mean(y) + mean(fa) W2 + b2 per sequence.
			MeanPoolBackward(ds1, dout, a.offsets, Out)
			dfp := ar.getZero(S * F)
			LinearBackward(e.blas, dfp, bw.f2W.g, bw.f2B.g, dout, a.faPool, bw.f2W.v, S, F, Out)
			MeanPoolBackward(dfa, dfp, a.offsets, F)
		} else {
			copy(ds1, dout)
			LinearBackward(e.blas, dfa, bw.f2W.g, bw.f2B.g, dout, a.fa, bw.f2W.v, T, F, Out)
		}
		df := ar.getZero(T * F)
		ActivateBackward(s.Act, df, dfa, a.f)
		dh2 := ar.getZero(T * Out)
		LinearBackward(e.blas, dh2, bw.f1W.g, bw.f1B.g, df, a.h2, bw.f1W.v, T, Out, F)
		LayerNormBackward(ds1, bw.ln2g.g, bw.ln2b.g, dh2, a.y, a.m2, a.r2, bw.ln2g.v, T, Out)
	} else {
		ds2 := ar.getZero(T * Out)
		LayerNormBackward(ds2, bw.ln2g.g, bw.ln2b.g, dout, a.s2, a.m2, a.r2, bw.ln2g.v, T, Out)
		dy := ar.getZero(T * Out)
		copy(dy, ds2)
		LinearBackward(e.blas, dfa, bw.f2W.g, bw.f2B.g, ds2, a.fa, bw.f2W.v, T, F, Out)
		df := ar.getZero(T * F)
		ActivateBackward(s.Act, df, dfa, a.f)
		LinearBackward(e.blas, dy, bw.f1W.g, bw.f1B.g, df, a.y, bw.f1W.v, T, Out, F)
		ds1 = ar.getZero(T * Out)
		LayerNormBackward(ds1, bw.ln1g.g, bw.ln1b.g, dy, a.s1, a.m1, a.r1, bw.ln1g.v, T, Out)
	}
	// s1 = r(x) + z + [bottleneck(z)]
	dz := ar.getZero(T * Out)
	copy(dz, ds1)
	if ad != nil && ad.kind == model.AdapterBottleneck {
		r := ad.rank
		dbg := ar.getZero(T * r)
		LinearBackward(e.blas, dbg, ad.up.g, ad.upB.g, ds1, a.bg, ad.up.v, T, r, Out)
		dbu := ar.getZero(T * r)
		ActivateBackward(gpu.ActGELU, dbu, dbg, a.bu)
		LinearBackward(e.blas, dz, ad.down.g, ad.downB.g, dbu, a.z, ad.down.v, T, Out, r)
	}
	lora := ad != nil && ad.kind == model.AdapterLoRA
	below := needX || lora || bw.qkvW.trainable() || bw.outW.trainable()
	if !below {
		return nil
	}
	if a.zGiven {
		panic("train: a block started from its attention output has nothing to train below it")
	}
	var dx []float32
	if needX {
		dxr := ar.getZero(T * In)
		if bw.resW.v != nil {
			LinearBackward(e.blas, dxr, bw.resW.g, nil, ds1, a.xr, bw.resW.v, T, In, Out)
		} else {
			AddTo(dxr, ds1)
		}
		dx = dxr
		if a.tail == tailFirst {
			dx = ar.getZero(T0 * In)
			for i := 0; i < S; i++ {
				copy(dx[a.offsets[i]*In:(a.offsets[i]+1)*In], dxr[i*In:(i+1)*In])
			}
		}
	} else if bw.resW.trainable() {
		LinearBackward(e.blas, nil, bw.resW.g, nil, ds1, a.xr, bw.resW.v, T, In, Out)
	}
	datt := ar.getZero(T * A)
	LinearBackward(e.blas, datt, bw.outW.g, bw.outB.g, dz, a.att, bw.outW.v, T, A, Out)
	T = T0 // q, k and v cover every row
	dqkv := ar.getZero(T * 3 * A)
	if a.tail == tailFirst {
		AttentionFirstBackward(e.blas, dqkv, datt, a.qkv, a.probs, a.offsets, s.Heads, A, s.QueryScale, ar.get(maxLen(a.offsets)))
	} else {
		AttentionBackward(e.blas, dqkv, datt, a.qkv, a.probs, a.offsets, s.Heads, A, s.QueryScale)
	}
	xin := a.x
	if s.PreLN {
		xin = a.h
	}
	var dxin []float32
	if needX || s.PreLN && bw.ln1g.trainable() {
		dxin = ar.getZero(T * In)
	}
	if lora {
		r := ad.rank
		du := ar.getZero(T * 2 * r)
		// q += scale * uq Bq: dBq += scale uq^T dq; duq = scale dq Bq^T.
		e.blas.Sgemm(true, false, r, A, T, ad.scale, a.u, 2*r, dqkv, 3*A, 1, ad.bq.g, A)
		e.blas.Sgemm(true, false, r, A, T, ad.scale, a.u[r:], 2*r, dqkv[2*A:], 3*A, 1, ad.bv.g, A)
		e.blas.Sgemm(false, true, T, r, A, ad.scale, dqkv, 3*A, ad.bq.v, A, 0, du, 2*r)
		e.blas.Sgemm(false, true, T, r, A, ad.scale, dqkv[2*A:], 3*A, ad.bv.v, A, 0, du[r:], 2*r)
		e.blas.Sgemm(true, false, In, r, T, 1, xin, In, du, 2*r, 1, ad.aq.g, r)
		e.blas.Sgemm(true, false, In, r, T, 1, xin, In, du[r:], 2*r, 1, ad.av.g, r)
		if dxin != nil {
			e.blas.Sgemm(false, true, T, In, r, 1, du, 2*r, ad.aq.v, r, 1, dxin, In)
			e.blas.Sgemm(false, true, T, In, r, 1, du[r:], 2*r, ad.av.v, r, 1, dxin, In)
		}
	}
	if dxin != nil || bw.qkvW.trainable() {
		LinearBackward(e.blas, dxin, bw.qkvW.g, bw.qkvB.g, dqkv, xin, bw.qkvW.v, T, In, 3*A)
	}
	if s.PreLN && dxin != nil {
		if dx == nil {
			dx = ar.getZero(T * In) // LN1 is trainable but x's gradient is not wanted
		}
		LayerNormBackward(dx, bw.ln1g.g, bw.ln1b.g, dxin, a.x, a.m1, a.r1, bw.ln1g.v, T, In)
	} else if !s.PreLN && dxin != nil {
		AddTo(dx, dxin)
	}
	if !needX {
		return nil
	}
	return dx
}

// maxLen is the longest sequence's row count.
func maxLen(offsets []int) int {
	n := 0
	for i := 1; i < len(offsets); i++ {
		n = max(n, offsets[i]-offsets[i-1])
	}
	return n
}

// addBias adds bias (nil: nothing) to every row of y [rows, cols].
func addBias(y, bias []float32, rows, cols int) {
	if bias == nil {
		return
	}
	for i := 0; i < rows; i++ {
		AddTo(y[i*cols:(i+1)*cols], bias)
	}
}
