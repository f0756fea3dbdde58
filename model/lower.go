package model

// Lower replaces a backbone's lower layers for some rows of a batch: it
// writes the hidden states after layer Cut() for one prepared sequence
// without running layers 1..Cut() (PLOT, lower-layer skipping: a table of
// precomputed n-gram states, see model/plot). The upper layers, adapters and
// heads then run from those states as they would from the backbone's own.
//
// A Lower is used from the goroutine that owns the backbone's device (the
// Runner's, a training work item's); implementations that are shared
// between goroutines lock inside.
type Lower interface {
	// Cut is the layer boundary the states are at (1..Layers-1).
	Cut() int
	// Lower writes len(ids)*StateWidth(Cut()) floats, row-major, to dst.
	Lower(ids []int32, dst []float32) error
}
