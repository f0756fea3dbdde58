package plot

import (
	"context"
	"fmt"

	"github.com/smile-vplm/smile/model"
)

// KeyValue is a store of entries under n-gram keys (Gram.AppendKey):
// storage.PlotEntries is one.
type KeyValue interface {
	Get(key []byte) (value []byte, ok bool, err error)
	Has(keys [][]byte) ([]bool, error)
	Put(keys, values [][]byte) error
}

// Entries adapts a KeyValue store to a table's Source and to Build.
type Entries struct{ KV KeyValue }

// Entry reads g's stored entry (Source).
func (e Entries) Entry(g Gram) ([]byte, bool, error) {
	var k [1 + 4*MaxN]byte
	return e.KV.Get(g.AppendKey(k[:0]))
}

func keys(grams []Gram) [][]byte {
	out := make([][]byte, len(grams))
	for i, g := range grams {
		out[i] = g.AppendKey(nil)
	}
	return out
}

// Missing returns the n-grams of grams without a stored entry, in order.
func (e Entries) Missing(grams []Gram) ([]Gram, error) {
	has, err := e.KV.Has(keys(grams))
	if err != nil {
		return nil, err
	}
	var out []Gram
	for i, ok := range has {
		if !ok {
			out = append(out, grams[i])
		}
	}
	return out, nil
}

// Put stores entries[i] under grams[i].
func (e Entries) Put(grams []Gram, entries [][]byte) error {
	return e.KV.Put(keys(grams), entries)
}

// Exec runs one unit of backbone work (a device work item of tokens
// tokens); nil runs it inline.
type Exec func(ctx context.Context, tokens int, work func() error) error

// DefaultBatch is how many n-grams one Build work item computes.
const DefaultBatch = 256

// Build computes the entries of grams that e lacks and stores them: in
// work items of batch n-grams (DefaultBatch when ≤ 0), each computed
// through exec and stored before the next, so an interrupted build keeps
// what it stored and a rerun computes only the rest. progress, when set,
// hears (done, total) after each item, counting n-grams found stored as
// done. It returns how many entries it computed.
func Build(ctx context.Context, bb model.Backbone, cut int, grams []Gram, e Entries, batch int, exec Exec, progress func(done, total int)) (int, error) {
	if batch <= 0 {
		batch = DefaultBatch
	}
	if exec == nil {
		exec = func(_ context.Context, _ int, work func() error) error { return work() }
	}
	missing, err := e.Missing(grams)
	if err != nil {
		return 0, fmt.Errorf("plot: build: %w", err)
	}
	total, done := len(grams), len(grams)-len(missing)
	if progress != nil {
		progress(done, total)
	}
	computed := 0
	for b := 0; b < len(missing); b += batch {
		if err := ctx.Err(); err != nil {
			return computed, err
		}
		part := missing[b:min(b+batch, len(missing))]
		tokens := 0
		for _, g := range part {
			tokens += int(g.N)
		}
		var entries [][]byte
		if err := exec(ctx, tokens, func() error {
			var err error
			entries, err = Compute(ctx, bb, cut, part)
			return err
		}); err != nil {
			return computed, err
		}
		if err := e.Put(part, entries); err != nil {
			return computed, fmt.Errorf("plot: build: store %d entries: %w", len(part), err)
		}
		computed += len(part)
		done += len(part)
		if progress != nil {
			progress(done, total)
		}
	}
	return computed, nil
}
