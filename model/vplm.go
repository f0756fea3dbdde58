package model

// This file is the contract between the model package and its users (the
// device actor, the trainer, benchmarks): the trainable part of a vPLM (an
// adapter and a head) and how rows of many vPLMs run in one forward pass.

import (
	"github.com/smile-vplm/smile/gpu"
)

// AdapterKind names how an adapter changes the backbone.
type AdapterKind uint8

const (
	// AdapterBottleneck: after the attention sublayer of each adapted layer,
	// z <- z + up(GELU(down(z) + bd)) + bu (d -> r -> d, Houlsby/vBERT style),
	// where z is the sublayer's output before its residual add.
	AdapterBottleneck AdapterKind = iota + 1
	// AdapterLoRA: rank-r updates of the query and value projections,
	// q <- q + (alpha/r) x Aq Bq, v <- v + (alpha/r) x Av Bv, where x is the
	// input of the layer's QKV projection.
	AdapterLoRA
)

// HeadKind names what a vPLM answers.
type HeadKind uint8

const (
	// HeadClassify maps the pooled vector to softmax probabilities over labels.
	HeadClassify HeadKind = iota + 1
	// HeadEmbed answers the pooled vector (optionally projected), L2-normalised.
	HeadEmbed
)

// DefaultRank is the bottleneck width (and LoRA rank) of a new adapter, as
// in the published vBERT/SMILE code.
const DefaultRank = 64

// LayerDims are the widths an adapter on one backbone layer must match.
type LayerDims struct {
	In        int // width of the QKV projection's input (LoRA's x)
	Attention int // width of q and of v (LoRA's output)
	Out       int // width of the attention sublayer's output (bottleneck's d)
}

// Geometry is what adapters need to know about a backbone: its layer count,
// each layer's widths and the width of Pool's output. Backbones implement it.
type Geometry interface {
	Info() Info
	LayerDims(layer int) LayerDims // layer counts from 1
}

// Hooks let a caller change a layer's computation for groups of rows: the
// way adapters reach inside a shared backbone. A backbone calls them, when
// State.Hooks is set, for every layer it runs (layer counts from 1); views
// are valid only during the call and are changed in place.
type Hooks interface {
	// QKV is called after the layer's QKV projection (biases added): x is the
	// projection's input, q and v the query and value columns.
	QKV(layer int, x, q, v gpu.Mat) error
	// Attended is called with the attention sublayer's output z (after its
	// output projection and bias, before the residual add).
	Attended(layer int, z gpu.Mat) error
}
