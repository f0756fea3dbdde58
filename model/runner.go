package model

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/smile-vplm/smile/gpu"
)

// DeviceParams is a vPLM's params made ready on a Runner's device: the
// adapter's weights in one device buffer, the head as a host copy (heads run
// on the host, on one pooled row per text). It belongs to the Runner that
// uploaded it and lives until Free.
type DeviceParams struct {
	r      *Runner
	buf    gpu.Buffer
	kind   AdapterKind
	rank   int
	layers []devLayer // by layer number (index 0 unused); zero: not adapted
	lowest int        // the lowest adapted layer (0: none)
	head   Head
	// Forward's grouping scratch: the call (epoch) that last saw these
	// params and the index of their first item in it.
	epoch uint64
	first int
}

// devLayer is one adapted layer on the device.
type devLayer struct {
	ok bool
	// bottleneck
	down, downB, up, upB gpu.Mat
	// LoRA: a = [Aq | Av] so one GEMM makes both rank-r projections of x;
	// bq and bv are already scaled by alpha/r.
	a, bq, bv gpu.Mat
}

// Bytes is the device memory the params hold (0 after Free).
func (d *DeviceParams) Bytes() int {
	if d.buf == nil {
		return 0
	}
	return 4 * d.buf.Len()
}

// Head is the params' head (a host copy; callers must not change it).
func (d *DeviceParams) Head() *Head { return &d.head }

// Free returns the params' device memory. Calling it again does nothing;
// Forward rejects freed params.
func (d *DeviceParams) Free() {
	if d.buf != nil {
		if r := d.r; !r.closed && len(r.spare) < maxSpare {
			r.spare = append(r.spare, d.buf)
		} else {
			r.dev.Free(d.buf)
		}
		d.buf = nil
		d.layers = nil
	}
}

// Item is one text of a mixed batch: its ids (already Prepare'd by the
// backbone), the vPLM it belongs to and where its lower layers come from.
// Params nil asks for the plain backbone's pooled vector.
//
// Lower nil is full mode: the backbone runs every layer. A Lower is plot
// mode: the item's states after layer Lower.Cut() come from the Lower (a
// table of precomputed n-gram states) and only the layers above run, with
// the adapter and head as usual. An adapter used in plot mode adapts only
// layers above the cut (one at or below it could never act). The two modes
// answer alike only as far as the Lower's states match the backbone's own,
// so a vPLM is served in the mode it was trained in.
type Item struct {
	IDs    []int32
	Params *DeviceParams
	Lower  Lower
}

// Runner runs mixed batches, rows of many vPLMs in one forward pass over a
// shared backbone: every backbone weight is applied once to all rows, each
// adapter only to its own rows (segmented GEMMs), each head on the host to
// its own pooled rows. It owns reusable device scratch and host buffers, so
// a steady stream of batches allocates little; like the backbone and its
// device it is used by one goroutine at a time.
type Runner struct {
	bb   Backbone
	dev  gpu.Device
	info Info
	dims []LayerDims // by layer number (index 0 unused)

	tmp    gpu.Buffer // adapter intermediates, tokens x 2*max rank
	tmpLen int

	epoch   uint64
	start   []int // by item: the layer its states start at (0: embeddings)
	order   []int
	ids     [][]int32 // by sorted row
	offs    []int     // sorted rows' token offsets
	host    []float32 // states on their way from one start layer to the next
	pooled  []float32
	groups  []runGroup
	classes []runClass
	segs    []gpu.Segment
	conv    []float32 // Upload's fp16 conversion scratch
	hooks   runHooks
	closed  bool
	// spare holds device buffers of freed params for the next uploads of
	// the same size: a device tier that keeps missing (thousands of vPLMs
	// in a uniform mix) then never allocates. Bounded by maxSpare.
	spare []gpu.Buffer
}

// maxSpare bounds the freed params buffers a Runner keeps: about a batch's
// worth of misses.
const maxSpare = 64

// runGroup is the consecutive rows of one Params in a sorted batch.
type runGroup struct {
	p          *DeviceParams
	row0, row1 int // token rows
}

// runClass is consecutive groups whose rows start at the same layer and
// whose adapters have the same kind and rank: one segmented GEMM serves them
// all.
type runClass struct {
	start  int
	kind   AdapterKind
	rank   int
	g0, g1 int // groups [g0, g1)
}

// NewRunner makes a runner for backbone bb on bb's device.
func NewRunner(bb Backbone) *Runner {
	info := bb.Info()
	r := &Runner{bb: bb, dev: bb.Device(), info: info, dims: make([]LayerDims, info.Layers+1)}
	for l := 1; l <= info.Layers; l++ {
		r.dims[l] = bb.LayerDims(l)
	}
	r.hooks.r = r
	return r
}

// Close frees the runner's scratch. DeviceParams it uploaded keep their
// memory until their own Free.
func (r *Runner) Close() error {
	for _, b := range r.spare {
		r.dev.Free(b)
	}
	r.spare = nil
	if r.tmp != nil {
		r.dev.Free(r.tmp)
		r.tmp, r.tmpLen = nil, 0
	}
	r.closed = true
	return nil
}

// Upload decodes a blob written by Params.Encode straight to device memory
// (through reusable host scratch) and checks that it fits the backbone.
// Errors wrap ErrBadParams.
func (r *Runner) Upload(blob []byte) (*DeviceParams, error) {
	if r.closed {
		return nil, fmt.Errorf("%w: runner closed", ErrBadInput)
	}
	pb, err := parseParams(blob)
	if err != nil {
		return nil, err
	}
	if pb.head.In != r.info.OutputDim {
		return nil, fmt.Errorf("%w: head reads %d dimensions, the backbone pools %d", ErrBadParams, pb.head.In, r.info.OutputDim)
	}
	layers := make([]int, len(pb.layers))
	for i, bl := range pb.layers {
		if bl.layer > r.info.Layers {
			return nil, fmt.Errorf("%w: adapter on layer %d, the backbone has %d", ErrBadParams, bl.layer, r.info.Layers)
		}
		d := r.dims[bl.layer]
		if pb.kind == AdapterBottleneck {
			d.In, d.Attention = 0, 0
		} else {
			d.Out = 0
		}
		if bl.dims != d {
			return nil, fmt.Errorf("%w: layer %d: adapter widths %+v, the backbone's %+v", ErrBadParams, bl.layer, bl.dims, d)
		}
		layers[i] = bl.layer
	}
	fill := func(i, t int, dst []float32) error {
		bl := pb.layers[i]
		o := bl.off
		lens := layerLens(pb.kind, pb.rank, bl.dims)
		for _, n := range lens[:t] {
			o += 2 * n
		}
		if err := pb.halves(dst, o); err != nil {
			return fmt.Errorf("%w: layer %d: %v", ErrBadParams, bl.layer, err)
		}
		return nil
	}
	d, err := r.upload(pb.kind, pb.rank, pb.alpha, layers, fill)
	if err != nil {
		return nil, err
	}
	d.head = pb.head
	if err := pb.headWeights(&d.head); err != nil {
		d.Free()
		return nil, err
	}
	return d, nil
}

// UploadParams copies host params to device memory after checking that they
// fit the backbone (errors wrap ErrBadParams).
func (r *Runner) UploadParams(p *Params) (*DeviceParams, error) {
	if r.closed {
		return nil, fmt.Errorf("%w: runner closed", ErrBadInput)
	}
	if err := p.Check(r.bb); err != nil {
		return nil, err
	}
	a := &p.Adapter
	layers := make([]int, len(a.Layers))
	for i := range a.Layers {
		layers[i] = a.Layers[i].Layer
	}
	fill := func(i, t int, dst []float32) error {
		al := &a.Layers[i]
		copy(dst, al.tensors(a.Kind, a.Rank, r.dims[al.Layer])[t].v)
		return nil
	}
	d, err := r.upload(a.Kind, a.Rank, a.Alpha, layers, fill)
	if err != nil {
		return nil, err
	}
	h := p.Head
	h.Labels = slices.Clone(h.Labels)
	h.W, h.B = slices.Clone(h.W), slices.Clone(h.B)
	d.head = h
	return d, nil
}

// upload lays out an adapter in one device buffer and fills it; fill(i, t,
// dst) writes tensor t (AdapterLayer order) of the i-th adapted layer.
func (r *Runner) upload(kind AdapterKind, rank int, alpha float32, layers []int, fill func(i, t int, dst []float32) error) (*DeviceParams, error) {
	total := 0
	for _, l := range layers {
		for _, n := range layerLens(kind, rank, r.dims[l]) {
			total += n
		}
	}
	d := &DeviceParams{r: r, kind: kind, rank: rank, layers: make([]devLayer, r.info.Layers+1)}
	if total > 0 {
		// Every element is written below, so a spare buffer's old
		// contents never show.
		for i := len(r.spare) - 1; i >= 0; i-- {
			if r.spare[i].Len() == total {
				d.buf = r.spare[i]
				r.spare = slices.Delete(r.spare, i, i+1)
				break
			}
		}
		if d.buf == nil {
			buf, err := r.dev.Alloc(total)
			if err != nil {
				return nil, fmt.Errorf("model: upload adapter (%d floats): %w", total, err)
			}
			d.buf = buf
		}
	}
	off := 0
	mat := func(rows, cols int) gpu.Mat {
		m := gpu.Mat{Buf: d.buf, Off: off, Rows: rows, Cols: cols, Stride: cols}
		off += rows * cols
		return m
	}
	scale := float32(1)
	if alpha != 0 {
		scale = alpha / float32(rank)
	}
	for i, l := range layers {
		if d.lowest == 0 || l < d.lowest {
			d.lowest = l
		}
		dims := r.dims[l]
		dl := &d.layers[l]
		dl.ok = true
		var dst [4]gpu.Mat
		if kind == AdapterBottleneck {
			dl.down, dl.downB = mat(dims.Out, rank), mat(1, rank)
			dl.up, dl.upB = mat(rank, dims.Out), mat(1, dims.Out)
			dst = [4]gpu.Mat{dl.down, dl.downB, dl.up, dl.upB}
		} else {
			dl.a = mat(dims.In, 2*rank)
			dl.bq, dl.bv = mat(rank, dims.Attention), mat(rank, dims.Attention)
			dst = [4]gpu.Mat{dl.a.Colsl(0, rank), dl.bq, dl.a.Colsl(rank, 2*rank), dl.bv}
		}
		for t, m := range dst {
			n := m.Rows * m.Cols
			if cap(r.conv) < n {
				r.conv = make([]float32, n)
			}
			v := r.conv[:n]
			if err := fill(i, t, v); err != nil {
				d.Free()
				return nil, err
			}
			if kind == AdapterLoRA && t%2 == 1 && scale != 1 {
				for j := range v {
					v[j] *= scale
				}
			}
			if err := r.dev.Upload(m, v); err != nil {
				d.Free()
				return nil, fmt.Errorf("model: upload adapter: %w", err)
			}
		}
	}
	return d, nil
}

// Forward runs one forward pass for all items and returns each item's
// answer in the caller's order (one backing array): the head's answer for
// items with Params, the backbone's pooled vector for the others. Rows are
// sorted by the layer their states start at (full-mode rows first), then by
// adapter class and Params, so each adapter's rows are contiguous; an item's
// answer equals its answer alone up to float rounding.
//
// Plot-mode rows join the pass at their cut: the rows already in it run up
// to that layer (with their adapters), are read back to the host, and are
// restored together with the new rows' states from their Lowers; a batch of
// only plot-mode rows never embeds, and one with none embeds all rows at
// once and reads nothing back. Items whose Lower cuts outside 1..Layers-1, or
// whose adapter adapts a layer at or below their cut, are rejected with
// ErrBadInput; a Lower's error is returned wrapped.
func (r *Runner) Forward(ctx context.Context, items []Item) ([][]float32, error) {
	if r.closed {
		return nil, fmt.Errorf("%w: runner closed", ErrBadInput)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("%w: forward: no items", ErrBadInput)
	}
	r.epoch++
	maxRank := 0
	r.start = r.start[:0]
	for i, it := range items {
		cut := 0
		if it.Lower != nil {
			cut = it.Lower.Cut()
			if cut < 1 || cut >= r.info.Layers {
				return nil, fmt.Errorf("%w: forward: item %d: lower layers cut at layer %d, want 1..%d", ErrBadInput, i, cut, r.info.Layers-1)
			}
		}
		r.start = append(r.start, cut)
		p := it.Params
		if p == nil {
			continue
		}
		if p.r != r || p.layers == nil {
			return nil, fmt.Errorf("%w: forward: item %d: params freed or uploaded by another runner", ErrBadInput, i)
		}
		if p.lowest != 0 && p.lowest <= cut {
			return nil, fmt.Errorf("%w: forward: item %d: adapter on layer %d, at or below the lower layers' cut at layer %d", ErrBadInput, i, p.lowest, cut)
		}
		if p.epoch != r.epoch {
			p.epoch, p.first = r.epoch, i
		}
		maxRank = max(maxRank, p.rank)
	}
	// Sort items by start layer, then by class (plain first, then adapter
	// kind and rank), then by params (in order of first appearance); stable,
	// so a group keeps the caller's order.
	r.order = r.order[:0]
	for i := range items {
		r.order = append(r.order, i)
	}
	slices.SortStableFunc(r.order, func(a, b int) int {
		if c := cmp.Compare(r.start[a], r.start[b]); c != 0 {
			return c
		}
		pa, pb := items[a].Params, items[b].Params
		if c := cmp.Compare(classKey(pa), classKey(pb)); c != 0 {
			return c
		}
		if pa == nil {
			return 0
		}
		return cmp.Compare(pa.first, pb.first)
	})
	r.ids, r.offs = r.ids[:0], append(r.offs[:0], 0)
	for j, i := range r.order {
		r.ids = append(r.ids, items[i].IDs)
		r.offs = append(r.offs, r.offs[j]+len(items[i].IDs))
	}
	r.group(items)
	if len(r.classes) > 0 {
		if err := r.ensureTmp(r.offs[len(items)] * 2 * maxRank); err != nil {
			return nil, err
		}
	}
	st, err := r.states(ctx, items)
	if err != nil {
		return nil, err
	}
	defer r.bb.Release(st)
	n, dim := len(items), r.info.OutputDim
	r.pooled = slices.Grow(r.pooled[:0], n*dim)[:n*dim]
	if pr, ok := r.bb.(PoolRunner); ok {
		err = pr.RunPool(ctx, st, r.pooled)
	} else if err = r.bb.RunLayers(ctx, st, r.info.Layers, nil); err == nil {
		err = r.bb.Pool(ctx, st, r.pooled)
	}
	if err != nil {
		return nil, err
	}
	total := 0
	for _, it := range items {
		total += outDim(it.Params, dim)
	}
	flat := make([]float32, total)
	out := make([][]float32, n)
	off := 0
	for i, it := range items {
		k := outDim(it.Params, dim)
		out[i] = flat[off : off+k : off+k]
		off += k
	}
	for j, i := range r.order {
		row := r.pooled[j*dim : (j+1)*dim]
		if p := items[i].Params; p != nil {
			p.head.Apply(out[i], row)
		} else {
			copy(out[i], row)
		}
	}
	return out, nil
}

// states builds the sorted batch's state at its last start layer, all rows
// in it: the rows of the first start layer are embedded (layer 0) or
// restored from their Lowers, and each later start layer's rows join at
// that layer (see restore). Intermediate states are released; the caller
// releases the one returned.
func (r *Runner) states(ctx context.Context, items []Item) (*State, error) {
	var st *State
	for j, n := 0, len(r.order); j < n; {
		k := r.start[r.order[j]]
		e := j + 1
		for e < n && r.start[r.order[e]] == k {
			e++
		}
		var err error
		if k == 0 {
			st, err = r.bb.Embed(ctx, r.ids[:e])
		} else {
			st, err = r.restore(ctx, items, st, j, e, k)
		}
		if err != nil {
			return nil, err
		}
		if len(r.classes) > 0 {
			st.Hooks = &r.hooks
		}
		j = e
	}
	return st, nil
}

// restore makes the state at layer k of sorted rows [0, e): rows [0, j) from
// prev (nil when j is 0), run up to layer k and read back, rows [j, e) from
// their items' Lowers. It releases prev, also on errors.
func (r *Runner) restore(ctx context.Context, items []Item, prev *State, j, e, k int) (*State, error) {
	w := r.bb.StateWidth(k)
	n := r.offs[e] * w
	r.host = slices.Grow(r.host[:0], n)[:n]
	if prev != nil {
		err := r.bb.RunLayers(ctx, prev, k, nil)
		if err == nil {
			err = r.dev.Download(r.host[:r.offs[j]*w], prev.H)
		}
		r.bb.Release(prev)
		if err != nil {
			return nil, err
		}
	}
	for s := j; s < e; s++ {
		i := r.order[s]
		if err := items[i].Lower.Lower(items[i].IDs, r.host[r.offs[s]*w:r.offs[s+1]*w]); err != nil {
			return nil, fmt.Errorf("model: forward: item %d: lower layers: %w", i, err)
		}
	}
	return r.bb.Restore(ctx, r.offs[:e+1], k, r.host)
}

func classKey(p *DeviceParams) int {
	if p == nil {
		return 0
	}
	return int(p.kind)<<16 | p.rank
}

func outDim(p *DeviceParams, pooled int) int {
	if p == nil {
		return pooled
	}
	return p.head.Out
}

// group finds the sorted batch's groups (token rows per start layer and
// Params) and classes (groups per start layer, adapter kind and rank).
func (r *Runner) group(items []Item) {
	r.groups, r.classes = r.groups[:0], r.classes[:0]
	for j := 0; j < len(r.order); {
		i := r.order[j]
		p, s := items[i].Params, r.start[i]
		k := j + 1
		for k < len(r.order) && items[r.order[k]].Params == p && r.start[r.order[k]] == s {
			k++
		}
		if p != nil {
			g := len(r.groups)
			r.groups = append(r.groups, runGroup{p: p, row0: r.offs[j], row1: r.offs[k]})
			if c := len(r.classes) - 1; c >= 0 && r.classes[c].start == s && r.classes[c].kind == p.kind && r.classes[c].rank == p.rank {
				r.classes[c].g1 = g + 1
			} else {
				r.classes = append(r.classes, runClass{start: s, kind: p.kind, rank: p.rank, g0: g, g1: g + 1})
			}
		}
		j = k
	}
}

func (r *Runner) ensureTmp(n int) error {
	if n <= r.tmpLen {
		return nil
	}
	n = max(n, 2*r.tmpLen)
	buf, err := r.dev.Alloc(n)
	if err != nil {
		return fmt.Errorf("model: adapter scratch (%d floats): %w", n, err)
	}
	if r.tmp != nil {
		r.dev.Free(r.tmp)
	}
	r.tmp, r.tmpLen = buf, n
	return nil
}

// runHooks applies a batch's adapters inside the backbone's layers.
type runHooks struct{ r *Runner }

// Which weight of a devLayer a segment list uses.
const (
	wDown = iota
	wUp
	wA
	wBq
	wBv
)

func (dl *devLayer) weight(w int) gpu.Mat {
	switch w {
	case wDown:
		return dl.down
	case wUp:
		return dl.up
	case wA:
		return dl.a
	case wBq:
		return dl.bq
	}
	return dl.bv
}

// segments fills r.segs with class c's segments for weight w of layer: the
// groups whose adapter does not adapt the layer get zero segments. It
// reports false when no group of the class adapts the layer.
func (r *Runner) segments(c runClass, layer, w int) bool {
	r.segs = r.segs[:0]
	any := false
	for _, g := range r.groups[c.g0:c.g1] {
		s := gpu.Segment{Rows: g.row1 - g.row0}
		if layer < len(g.p.layers) && g.p.layers[layer].ok {
			s.W = g.p.layers[layer].weight(w)
			any = true
		}
		r.segs = append(r.segs, s)
	}
	return any
}

func (r *Runner) span(c runClass) (row0, row1 int) {
	return r.groups[c.g0].row0, r.groups[c.g1-1].row1
}

// active is the classes whose rows lie in a state of rows token rows. Rows
// join the batch's state by start layer and a class never spans two, so
// these are a prefix; the others' rows are not in the state yet (and their
// adapters adapt no layer it is running).
func (r *Runner) active(rows int) []runClass {
	n := 0
	for n < len(r.classes) {
		if _, row1 := r.span(r.classes[n]); row1 > rows {
			break
		}
		n++
	}
	return r.classes[:n]
}

// QKV adds each LoRA adapter's update to its rows' q and v:
// [uq | uv] = x [Aq | Av], q += uq Bq', v += uv Bv' (B' pre-scaled).
func (h *runHooks) QKV(layer int, x, q, v gpu.Mat) error {
	r := h.r
	d := r.dev
	for _, c := range r.active(x.Rows) {
		if c.kind != AdapterLoRA || !r.segments(c, layer, wA) {
			continue
		}
		row0, row1 := r.span(c)
		u := gpu.Mat{Buf: r.tmp, Rows: row1 - row0, Cols: 2 * c.rank, Stride: 2 * c.rank}
		if err := d.GemmSegmented(false, 1, x.Rowsl(row0, row1), r.segs, 0, u); err != nil {
			return fmt.Errorf("lora A: %w", err)
		}
		r.segments(c, layer, wBq)
		if err := d.GemmSegmented(false, 1, u.Colsl(0, c.rank), r.segs, 1, q.Rowsl(row0, row1)); err != nil {
			return fmt.Errorf("lora B_q: %w", err)
		}
		r.segments(c, layer, wBv)
		if err := d.GemmSegmented(false, 1, u.Colsl(c.rank, 2*c.rank), r.segs, 1, v.Rowsl(row0, row1)); err != nil {
			return fmt.Errorf("lora B_v: %w", err)
		}
	}
	return nil
}

// Attended applies each bottleneck adapter to its rows of the attention
// output: z += GELU(z Down + bd) Up + bu.
func (h *runHooks) Attended(layer int, z gpu.Mat) error {
	r := h.r
	d := r.dev
	for _, c := range r.active(z.Rows) {
		if c.kind != AdapterBottleneck || !r.segments(c, layer, wDown) {
			continue
		}
		row0, row1 := r.span(c)
		u := gpu.Mat{Buf: r.tmp, Rows: row1 - row0, Cols: c.rank, Stride: c.rank}
		if err := d.GemmSegmented(false, 1, z.Rowsl(row0, row1), r.segs, 0, u); err != nil {
			return fmt.Errorf("bottleneck down: %w", err)
		}
		for _, g := range r.groups[c.g0:c.g1] {
			if dl := &g.p.layers[layer]; dl.ok {
				if err := d.AddBias(u.Rowsl(g.row0-row0, g.row1-row0), dl.downB, gpu.ActGELU); err != nil {
					return fmt.Errorf("bottleneck down bias: %w", err)
				}
			}
		}
		r.segments(c, layer, wUp)
		if err := d.GemmSegmented(false, 1, u, r.segs, 1, z.Rowsl(row0, row1)); err != nil {
			return fmt.Errorf("bottleneck up: %w", err)
		}
		for _, g := range r.groups[c.g0:c.g1] {
			if dl := &g.p.layers[layer]; dl.ok {
				if err := d.AddBias(z.Rowsl(g.row0, g.row1), dl.upB, gpu.ActNone); err != nil {
					return fmt.Errorf("bottleneck up bias: %w", err)
				}
			}
		}
	}
	return nil
}
