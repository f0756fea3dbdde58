package model

import (
	"context"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model/tokenizer"
)

// Info describes a backbone's geometry.
type Info struct {
	Family       string `json:"family"` // "use-lite", "bert"
	Name         string `json:"name"`
	Layers       int    `json:"layers"`
	Hidden       int    `json:"hidden"` // width of the last layer's states
	Heads        int    `json:"heads"`
	Intermediate int    `json:"intermediate"`
	MaxPositions int    `json:"max_positions"` // longer inputs are truncated to this many ids
	VocabSize    int    `json:"vocab_size"`
	OutputDim    int    `json:"output_dim"` // width of Pool's output
}

// State holds the hidden states of a batch of sequences on a device, packed
// without padding: sequence s owns rows [Offsets[s], Offsets[s+1]) of H.
// Layer is how many layers have been applied (0: embeddings only).
type State struct {
	Offsets []int
	H       gpu.Mat
	Layer   int
	// Hooks, when set, let adapters change the layers' computation for
	// groups of rows (see Hooks); nil runs the plain backbone.
	Hooks Hooks
}

// Seqs is the number of sequences in the state.
func (s *State) Seqs() int { return len(s.Offsets) - 1 }

// Tokens is the number of token rows in the state.
func (s *State) Tokens() int { return s.Offsets[len(s.Offsets)-1] }

// Observer sees the hidden states after each layer (layer counts from 1). The
// view is only valid during the call.
type Observer func(layer int, h gpu.Mat)

// Backbone is a frozen pretrained encoder on one device. It exposes its
// per-layer hidden states and can run from any layer onward, so callers can
// cache lower layers or replace them with table lookups. A Backbone is used
// by one goroutine at a time (like its device); states returned by Embed
// stay valid until Release.
type Backbone interface {
	Info() Info
	// LayerDims gives layer's widths (layer counts from 1), for adapters.
	LayerDims(layer int) LayerDims
	Device() gpu.Device
	Tokenizer() tokenizer.Tokenizer
	// Prepare cuts ids to the model's window (and adds special tokens where
	// the family uses them), returning what the model will see.
	Prepare(ids []int32) []int32
	// Embed builds layer-0 states for prepared id sequences (none empty).
	Embed(ctx context.Context, ids [][]int32) (*State, error)
	// StateWidth is the width of the hidden states after layer layers
	// (0: the embeddings that enter layer 1).
	StateWidth(layer int) int
	// Restore builds a state at a layer boundary from host hidden states:
	// h holds offsets[len(offsets)-1] rows of StateWidth(layer) floats,
	// row-major, packed as in State (for example a cache of lower-layer
	// outputs read back with Device().Download). RunLayers then continues
	// from there exactly as if the lower layers had just run.
	Restore(ctx context.Context, offsets []int, layer int, h []float32) (*State, error)
	// RunLayers applies layers st.Layer+1 .. to, in place.
	RunLayers(ctx context.Context, st *State, to int, obs Observer) error
	// Pool turns final states into one output row per sequence, [Seqs, OutputDim],
	// written to dst (a host slice of Seqs*OutputDim).
	Pool(ctx context.Context, st *State, dst []float32) error
	// Release returns a state's device memory to the backbone's pool.
	Release(st *State)
	// Close frees the backbone's device memory.
	Close() error
}

// PoolRunner is an optional Backbone capability: run the remaining layers
// and pool in one step, free to skip per-token work whose only consumer is
// the pooled output (for example a last linear map moved after a mean
// pool). It computes what RunLayers followed by Pool computes, up to float
// rounding; callers that need the last layer's states use RunLayers.
type PoolRunner interface {
	RunPool(ctx context.Context, st *State, dst []float32) error
}
