package model

// This file describes a backbone on the host for training (model/train):
// every weight as a float32 slice and every layer as one of the two
// transformer block layouts the families use. A backbone that can be
// trained implements Trainable; the trainer never reaches into a family's
// own types.

import (
	"fmt"

	"github.com/smile-vplm/smile/gpu"
)

// Trainable is a Backbone capability: describe itself for the trainer.
type Trainable interface {
	// TrainSpec returns host copies of the backbone's weights and its
	// layout. The copies belong to the caller (full fine-tuning changes
	// them; the served backbone never sees that).
	TrainSpec() (*TrainSpec, error)
}

// TrainSpec is a backbone described on the host: embeddings, blocks (layer
// l is Blocks[l-1]) and the pooling step whose output heads read. What it
// computes equals the backbone's Embed + RunLayers + Pool up to float
// rounding (tested per family).
type TrainSpec struct {
	Info      Info
	Embedding EmbeddingSpec
	Blocks    []BlockSpec
	Pool      PoolSpec
}

// EmbeddingSpec builds layer-0 states: row = Table[id] + Positions[pos],
// then a layer norm when LNGamma is set.
type EmbeddingSpec struct {
	Vocab, Width int
	Table        []float32 // [Vocab, Width], any input scale folded in
	MaxPositions int
	Positions    []float32 // [MaxPositions, Width] (BERT: position + token type 0; use-lite: timing signal)
	LNGamma      []float32 // [Width] or nil (no layer norm)
	LNBeta       []float32
	LNEps        float32
}

// BlockSpec is one transformer layer. With z = Attn(...) Wo + OutB (the
// attention sublayer's output, where a bottleneck adapter acts) and
// r = x ResW (x itself when ResW is nil):
//
//	PreLN (use-lite): h = LN1(x); q,k,v = h QKVW + QKVB; y = r + z;
//	                  out = y + Act(LN2(y) F1W + F1B) F2W + F2B
//	PostLN (BERT):    q,k,v = x QKVW + QKVB; y = LN1(r + z);
//	                  out = LN2(y + Act(y F1W + F1B) F2W + F2B)
//
// LoRA acts on the QKV projection's input (h for PreLN, x for PostLN).
type BlockSpec struct {
	PreLN      bool
	In         int // width of x
	Attention  int // width of q, k, v
	Out        int // width of z and of the output
	Heads      int
	FFN        int
	QueryScale float32 // scores are (q . k) * QueryScale
	Act        gpu.Activation
	LNEps      float32
	LN1G, LN1B []float32 // [In] for PreLN, [Out] for PostLN
	QKVW       []float32 // [In, 3*Attention]: q | k | v columns
	QKVB       []float32 // [3*Attention]
	OutW       []float32 // [Attention, Out]
	OutB       []float32 // [Out] (any residual projection's bias folded in)
	ResW       []float32 // [In, Out], or nil when the residual is x itself (In == Out)
	LN2G, LN2B []float32 // [Out]
	F1W, F1B   []float32 // [Out, FFN], [FFN]
	F2W, F2B   []float32 // [FFN, Out], [Out]
}

// PoolMode chooses which rows of the last layer's states a pool reads.
type PoolMode uint8

const (
	PoolMean  PoolMode = iota + 1 // mean over the sequence's rows (use-lite)
	PoolFirst                     // the first row (BERT's [CLS])
)

// PoolSpec turns the last layer's states into one row per sequence:
// p = Act(select(states) W + B), L2-normalised when L2 is set.
type PoolSpec struct {
	Mode    PoolMode
	In, Out int
	W, B    []float32 // [In, Out], [Out]
	Act     gpu.Activation
	L2      bool
	L2Eps   float32
}

// Validate checks every shape of the spec.
func (s *TrainSpec) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: train spec: %s", ErrBadModelFile, fmt.Sprintf(format, a...))
	}
	need := func(name string, v []float32, n int) error {
		if len(v) != n {
			return bad("%s has %d values, want %d", name, len(v), n)
		}
		return nil
	}
	e := &s.Embedding
	if e.Vocab <= 0 || e.Width <= 0 || e.MaxPositions <= 0 {
		return bad("embedding %dx%d, %d positions", e.Vocab, e.Width, e.MaxPositions)
	}
	if err := need("embedding table", e.Table, e.Vocab*e.Width); err != nil {
		return err
	}
	if err := need("position table", e.Positions, e.MaxPositions*e.Width); err != nil {
		return err
	}
	if e.LNGamma != nil {
		if err := need("embedding ln gamma", e.LNGamma, e.Width); err != nil {
			return err
		}
		if err := need("embedding ln beta", e.LNBeta, e.Width); err != nil {
			return err
		}
	}
	if len(s.Blocks) != s.Info.Layers || len(s.Blocks) == 0 {
		return bad("%d blocks for %d layers", len(s.Blocks), s.Info.Layers)
	}
	width := e.Width
	for i := range s.Blocks {
		b := &s.Blocks[i]
		if b.In != width {
			return bad("block %d takes %d columns, the previous layer gives %d", i+1, b.In, width)
		}
		if b.Heads <= 0 || b.Attention%b.Heads != 0 || b.Out <= 0 || b.FFN <= 0 {
			return bad("block %d geometry %+v", i+1, *b)
		}
		ln1 := b.In
		if !b.PreLN {
			ln1 = b.Out
		}
		a3 := 3 * b.Attention
		checks := []struct {
			name string
			v    []float32
			n    int
		}{
			{"ln1.gamma", b.LN1G, ln1}, {"ln1.beta", b.LN1B, ln1},
			{"qkv.weight", b.QKVW, b.In * a3}, {"qkv.bias", b.QKVB, a3},
			{"out.weight", b.OutW, b.Attention * b.Out}, {"out.bias", b.OutB, b.Out},
			{"ln2.gamma", b.LN2G, b.Out}, {"ln2.beta", b.LN2B, b.Out},
			{"ffn1.weight", b.F1W, b.Out * b.FFN}, {"ffn1.bias", b.F1B, b.FFN},
			{"ffn2.weight", b.F2W, b.FFN * b.Out}, {"ffn2.bias", b.F2B, b.Out},
		}
		for _, c := range checks {
			if err := need(fmt.Sprintf("block %d %s", i+1, c.name), c.v, c.n); err != nil {
				return err
			}
		}
		if b.ResW != nil {
			if err := need(fmt.Sprintf("block %d residual.weight", i+1), b.ResW, b.In*b.Out); err != nil {
				return err
			}
		} else if b.In != b.Out {
			return bad("block %d changes width %d -> %d without a residual projection", i+1, b.In, b.Out)
		}
		width = b.Out
	}
	p := &s.Pool
	if p.Mode != PoolMean && p.Mode != PoolFirst {
		return bad("pool mode %d", p.Mode)
	}
	if p.In != width || p.Out != s.Info.OutputDim {
		return bad("pool %d -> %d, want %d -> %d", p.In, p.Out, width, s.Info.OutputDim)
	}
	if err := need("pool weight", p.W, p.In*p.Out); err != nil {
		return err
	}
	return need("pool bias", p.B, p.Out)
}
