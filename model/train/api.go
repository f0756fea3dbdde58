// Package train trains vPLMs: backward passes for everything above the cut
// layer, losses, AdamW, and the loop (Fit) that runs epochs with early
// stopping and checkpoints. It is pure host computation on float32 slices
// with one GEMM entry point (BLAS); it never touches actors or storage.
package train

import (
	"context"
	"time"

	"github.com/smile-vplm/smile/model"
)

// BLAS is the GEMM the trainer computes with: row-major host slices,
// C = alpha*op(A)*op(B) + beta*C (gpu/cpu.Device implements it).
type BLAS interface {
	Sgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
}

// Method is what a training run changes.
type Method uint8

const (
	// MethodAdapter trains the vPLM's adapter (bottleneck or LoRA, as its
	// params say) and head; the backbone stays frozen.
	MethodAdapter Method = iota + 1
	// MethodHead trains the head alone on the frozen backbone's pooled
	// output (the "linear" baseline: logistic regression for classify).
	MethodHead
	// MethodFull trains every backbone weight of a private copy and the
	// head (the comparison baseline; never served).
	MethodFull
)

// InputKind is what an engine's Inputs hold.
type InputKind uint8

const (
	InputIDs    InputKind = iota + 1 // token ids (MethodFull)
	InputStates                      // hidden states at a layer boundary (MethodAdapter)
	InputPooled                      // the backbone's pooled output, one row per text (MethodHead)
	// InputAttended: for a first adapted layer L whose adapter is a
	// bottleneck (it acts after the attention sublayer), H holds the states
	// at boundary L-1 and Z layer L's attention sublayer output z, so an
	// epoch skips that layer's projections and attention altogether.
	InputAttended
)

// Config are a run's hyperparameters. Zero fields take Defaults' values.
type Config struct {
	Epochs      int
	BatchSize   int
	LR          float32 // the adapter's (or, in full fine-tuning, the backbone's) peak learning rate
	HeadLR      float32 // the head's peak learning rate (a head on frozen normalised features needs a larger one)
	WeightDecay float32
	Warmup      float32 // fraction of the run's steps with a linear warm-up
	ClipNorm    float32 // global gradient-norm clip; < 0 disables
	Seed        uint64  // shuffling and any random initialisation
	Patience    int     // epochs without a better validation score before stopping; < 0 never stops early
	Temperature float32 // contrastive loss temperature (embed heads)
	// HeadWarmup: before training a classify head together with an adapter,
	// fit the head alone on the frozen model's pooled output (a linear
	// probe, up to this many epochs with early stopping; the pooled output is
	// computed once), so the adapter starts from a good head (LP-FT).
	// < 0 disables.
	HeadWarmup int
}

// Inputs is a minibatch at the engine's input (see Engine.Input).
type Inputs struct {
	Offsets []int     // sequence s owns rows [Offsets[s], Offsets[s+1]) of H (InputStates, InputAttended)
	H       []float32 // InputStates, InputAttended: rows x width; InputPooled: one row per text
	Z       []float32 // InputAttended: rows x the layer's output width
	IDs     [][]int32 // InputIDs: prepared token ids
}

// Dataset gives a run its examples by index.
type Dataset interface {
	Len() int
	// Load returns the inputs and label indices of examples idx, in order.
	Load(ctx context.Context, idx []int) (*Inputs, []int, error)
}

// Progress is reported after every step and every epoch.
type Progress struct {
	Epoch, Epochs   int // Epoch counts from 1
	Step, Steps     int // over the whole run
	Loss            float64
	ValAccuracy     float64 // the last finished epoch's validation accuracy (or -1 before one)
	BestValAccuracy float64
	ExamplesPerSec  float64
	ETA             time.Duration
	EpochDone       bool
	EarlyStopped    bool
}

// FitOptions connect a run to its surroundings.
type FitOptions struct {
	// Exec runs one unit of engine work (a training step or a prediction
	// batch) of the given token count; a server routes it through the
	// device scheduler. nil runs work inline.
	Exec func(ctx context.Context, tokens int, work func() error) error
	// Progress, if set, sees every step and epoch.
	Progress func(Progress)
	// Checkpoint, if set, is called after each epoch with everything needed
	// to continue the run (Resume).
	Checkpoint func(epoch int, ckpt []byte) error
	// Resume continues a run from a checkpoint made by the same engine
	// configuration.
	Resume []byte
}

// Result is a finished run.
type Result struct {
	Best            *model.Params // the params of the best validation epoch (nil for MethodFull)
	BestEpoch       int
	BestValAccuracy float64
	Epochs          int // epochs run
	EarlyStopped    bool
	EpochSeconds    float64 // mean wall time of a training epoch
}
