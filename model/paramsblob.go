package model

import (
	"encoding/binary"
	"fmt"
	"math"
)

// A params blob is how a vPLM's adapter and head are stored and shipped:
// a small header, then every tensor as IEEE binary16, little-endian. All
// integers are little-endian.
//
//	off  size
//	0    6    magic "SMILEP"
//	6    1    version (1)
//	7    1    adapter kind (1 bottleneck, 2 lora)
//	8    1    head kind (1 classify, 2 embed)
//	9    1    flags: bit 0 = the embed head has a projection W; others 0
//	10   2    rank (1..1024)
//	12   4    alpha, float32
//	16   2    number of adapted layers (0..1024)
//	18   4    head in (1..65536)
//	22   4    head out
//	26   2    number of labels (0, or 2..1000 for classify)
//	28        per adapted layer, ascending: layer u16 (from 1), in u32,
//	          attention u32, out u32 (14 bytes; the widths the adapter kind
//	          does not use are 0: bottleneck uses out, lora in and attention)
//	          per label: length u8 (1..128), UTF-8 bytes
//	          tensors, fp16: per layer in AdapterLayer order (bottleneck:
//	          Down, DownB, Up, UpB; lora: Aq, Bq, Av, Bv), then the head's W
//	          (classify, or embed with projection) and B (classify)
//
// The blob's length must be exactly what the header implies, and every
// value finite. A rank-64 bottleneck on one 512-wide layer with a 2-label
// head is about 134 KB.
const (
	paramsMagic     = "SMILEP"
	paramsVersion   = 1
	paramsHeaderLen = 28
	layerRecordLen  = 14
	flagEmbedW      = 1
	maxBlobLayers   = 1024
	maxBlobDim      = 65536
)

// blobLayer is one adapted layer's record and where its tensors start.
type blobLayer struct {
	layer int
	dims  LayerDims
	off   int // byte offset of the layer's first tensor
}

// paramsBlob is a parsed blob header: everything but the tensors' values.
type paramsBlob struct {
	data    []byte
	kind    AdapterKind
	rank    int
	alpha   float32
	layers  []blobLayer
	head    Head // Kind, Labels, In, Out; W and B not read
	hasW    bool
	headOff int
}

// layerLens gives the element counts of a layer's tensors in blob order.
func layerLens(kind AdapterKind, r int, d LayerDims) [4]int {
	if kind == AdapterBottleneck {
		return [4]int{d.Out * r, r, r * d.Out, d.Out}
	}
	return [4]int{d.In * r, r * d.Attention, d.In * r, r * d.Attention}
}

// layerDims are the widths of a host layer as a blob records them: only the
// ones its kind uses.
func (al *AdapterLayer) layerDims(kind AdapterKind, r int) LayerDims {
	if r <= 0 {
		return LayerDims{}
	}
	if kind == AdapterBottleneck {
		return LayerDims{Out: len(al.UpB)}
	}
	return LayerDims{In: len(al.Aq) / r, Attention: len(al.Bq) / r}
}

// Encode writes the params as a blob (see the format above). Values are
// rounded to fp16 (ties to even); values beyond ±65504 become ±Inf, which
// DecodeParams rejects, so trainers should keep weights in range. Params
// that fail Check encode to a blob that DecodeParams rejects.
func (p *Params) Encode() []byte {
	a, h := &p.Adapter, &p.Head
	size := paramsHeaderLen + layerRecordLen*len(a.Layers)
	for _, l := range h.Labels {
		size += 1 + len(l)
	}
	tensors := 0
	for i := range a.Layers {
		al := &a.Layers[i]
		if a.Kind == AdapterBottleneck {
			tensors += len(al.Down) + len(al.DownB) + len(al.Up) + len(al.UpB)
		} else {
			tensors += len(al.Aq) + len(al.Bq) + len(al.Av) + len(al.Bv)
		}
	}
	tensors += len(h.W) + len(h.B)
	b := make([]byte, size+2*tensors)
	le := binary.LittleEndian
	copy(b, paramsMagic)
	b[6], b[7], b[8] = paramsVersion, byte(a.Kind), byte(h.Kind)
	if h.Kind == HeadEmbed && h.W != nil {
		b[9] = flagEmbedW
	}
	le.PutUint16(b[10:], uint16(a.Rank))
	le.PutUint32(b[12:], math.Float32bits(a.Alpha))
	le.PutUint16(b[16:], uint16(len(a.Layers)))
	le.PutUint32(b[18:], uint32(h.In))
	le.PutUint32(b[22:], uint32(h.Out))
	le.PutUint16(b[26:], uint16(len(h.Labels)))
	o := paramsHeaderLen
	for i := range a.Layers {
		al := &a.Layers[i]
		d := al.layerDims(a.Kind, a.Rank)
		le.PutUint16(b[o:], uint16(al.Layer))
		le.PutUint32(b[o+2:], uint32(d.In))
		le.PutUint32(b[o+6:], uint32(d.Attention))
		le.PutUint32(b[o+10:], uint32(d.Out))
		o += layerRecordLen
	}
	for _, l := range h.Labels {
		b[o] = byte(len(l))
		o += 1 + copy(b[o+1:], l)
	}
	put := func(v []float32) {
		for _, x := range v {
			le.PutUint16(b[o:], floatToHalf(x))
			o += 2
		}
	}
	for i := range a.Layers {
		al := &a.Layers[i]
		if a.Kind == AdapterBottleneck {
			put(al.Down)
			put(al.DownB)
			put(al.Up)
			put(al.UpB)
		} else {
			put(al.Aq)
			put(al.Bq)
			put(al.Av)
			put(al.Bv)
		}
	}
	put(h.W)
	put(h.B)
	return b
}

// DecodeParams reads a blob written by Encode. Every malformed blob gives an
// error wrapping ErrBadParams; sizes are checked against the blob's length
// before anything is allocated.
func DecodeParams(b []byte) (*Params, error) {
	pb, err := parseParams(b)
	if err != nil {
		return nil, err
	}
	p := &Params{
		Adapter: Adapter{Kind: pb.kind, Rank: pb.rank, Alpha: pb.alpha, Layers: make([]AdapterLayer, len(pb.layers))},
		Head:    pb.head,
	}
	for i, bl := range pb.layers {
		lens := layerLens(pb.kind, pb.rank, bl.dims)
		var ts [4][]float32
		o := bl.off
		for j, n := range lens {
			ts[j] = make([]float32, n)
			if err := pb.halves(ts[j], o); err != nil {
				return nil, fmt.Errorf("%w: layer %d: %v", ErrBadParams, bl.layer, err)
			}
			o += 2 * n
		}
		al := AdapterLayer{Layer: bl.layer}
		if pb.kind == AdapterBottleneck {
			al.Down, al.DownB, al.Up, al.UpB = ts[0], ts[1], ts[2], ts[3]
		} else {
			al.Aq, al.Bq, al.Av, al.Bv = ts[0], ts[1], ts[2], ts[3]
		}
		p.Adapter.Layers[i] = al
	}
	if err := pb.headWeights(&p.Head); err != nil {
		return nil, err
	}
	return p, nil
}

// headWeights decodes the head's W and B into h (fresh slices).
func (pb *paramsBlob) headWeights(h *Head) error {
	o := pb.headOff
	if pb.hasW {
		h.W = make([]float32, h.In*h.Out)
		if err := pb.halves(h.W, o); err != nil {
			return fmt.Errorf("%w: head W: %v", ErrBadParams, err)
		}
		o += 2 * len(h.W)
	}
	if h.Kind == HeadClassify {
		h.B = make([]float32, h.Out)
		if err := pb.halves(h.B, o); err != nil {
			return fmt.Errorf("%w: head B: %v", ErrBadParams, err)
		}
	}
	return nil
}

// halves converts len(dst) halves at byte offset o (inside the blob: the
// parser checked the lengths), rejecting Inf and NaN.
func (pb *paramsBlob) halves(dst []float32, o int) error {
	if i := decodeHalves(dst, pb.data[o:o+2*len(dst)]); i >= 0 {
		return fmt.Errorf("value %d is not finite", i)
	}
	return nil
}

// parseParams checks a blob's header and that its length is exactly what
// the header implies. It allocates only what the header's bounded counts
// need (layer records and labels), each after the bytes were seen to exist.
func parseParams(b []byte) (*paramsBlob, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadParams, fmt.Sprintf(format, a...))
	}
	if len(b) < paramsHeaderLen {
		return nil, bad("%d bytes, shorter than the %d-byte header", len(b), paramsHeaderLen)
	}
	if string(b[:6]) != paramsMagic {
		return nil, bad("no %q magic", paramsMagic)
	}
	if b[6] != paramsVersion {
		return nil, bad("version %d: this build reads version %d", b[6], paramsVersion)
	}
	le := binary.LittleEndian
	pb := &paramsBlob{
		data:  b,
		kind:  AdapterKind(b[7]),
		rank:  int(le.Uint16(b[10:])),
		alpha: math.Float32frombits(le.Uint32(b[12:])),
	}
	pb.head.Kind = HeadKind(b[8])
	flags := b[9]
	nLayers := int(le.Uint16(b[16:]))
	pb.head.In = int(le.Uint32(b[18:]))
	pb.head.Out = int(le.Uint32(b[22:]))
	nLabels := int(le.Uint16(b[26:]))
	if err := checkAdapterHeader(pb.kind, pb.rank, pb.alpha, nLayers); err != nil {
		return nil, err
	}
	if !pb.head.Kind.valid() {
		return nil, bad("head kind %v", pb.head.Kind)
	}
	if flags&^flagEmbedW != 0 || flags&flagEmbedW != 0 && pb.head.Kind != HeadEmbed {
		return nil, bad("flags %#x for a %v head", flags, pb.head.Kind)
	}
	pb.hasW = pb.head.Kind == HeadClassify || flags&flagEmbedW != 0
	h := &pb.head
	if h.In < 1 || h.In > maxBlobDim {
		return nil, bad("head in %d: want 1..%d", h.In, maxBlobDim)
	}
	switch {
	case h.Kind == HeadClassify:
		if nLabels < MinLabels || nLabels > MaxLabels || h.Out != nLabels {
			return nil, bad("classify head: %d labels, out %d", nLabels, h.Out)
		}
	case nLabels != 0:
		return nil, bad("embed head with %d labels", nLabels)
	case pb.hasW:
		if h.Out < 1 || h.Out > MaxEmbedDim {
			return nil, bad("embed head: out %d: want 1..%d", h.Out, MaxEmbedDim)
		}
	case h.Out != h.In:
		return nil, bad("embed head without projection: out %d, in %d", h.Out, h.In)
	}
	o := paramsHeaderLen
	if len(b)-o < nLayers*layerRecordLen {
		return nil, bad("%d bytes cannot hold %d layer records", len(b), nLayers)
	}
	pb.layers = make([]blobLayer, nLayers)
	prev := 0
	for i := range pb.layers {
		bl := &pb.layers[i]
		bl.layer = int(le.Uint16(b[o:]))
		bl.dims = LayerDims{In: int(le.Uint32(b[o+2:])), Attention: int(le.Uint32(b[o+6:])), Out: int(le.Uint32(b[o+10:]))}
		o += layerRecordLen
		if bl.layer <= prev {
			return nil, bad("layer %d after %d: want ascending from 1", bl.layer, prev)
		}
		prev = bl.layer
		d := bl.dims
		used, unused := [2]int{d.Out, d.Out}, [2]int{d.In, d.Attention}
		if pb.kind == AdapterLoRA {
			used, unused = [2]int{d.In, d.Attention}, [2]int{d.Out, 0}
		}
		for _, w := range used {
			if w < pb.rank || w > maxBlobDim {
				return nil, bad("layer %d: width %d: want rank %d..%d", bl.layer, w, pb.rank, maxBlobDim)
			}
		}
		if unused != [2]int{} {
			return nil, bad("layer %d: widths %+v: a %v adapter records only its own", bl.layer, d, pb.kind)
		}
	}
	if nLabels > 0 {
		h.Labels = make([]string, 0, min(nLabels, len(b)-o))
		for i := range nLabels {
			if o >= len(b) {
				return nil, bad("label %d: blob ends", i)
			}
			n := int(b[o])
			if len(b)-o-1 < n {
				return nil, bad("label %d: %d bytes past the blob's end", i, n)
			}
			h.Labels = append(h.Labels, string(b[o+1:o+1+n]))
			o += 1 + n
		}
		if err := checkLabels(h.Labels); err != nil {
			return nil, bad("%v", err)
		}
	}
	for i := range pb.layers {
		pb.layers[i].off = o
		for _, n := range layerLens(pb.kind, pb.rank, pb.layers[i].dims) {
			o += 2 * n
		}
	}
	pb.headOff = o
	if pb.hasW {
		o += 2 * h.In * h.Out
	}
	if h.Kind == HeadClassify {
		o += 2 * h.Out
	}
	if o != len(b) {
		return nil, bad("%d bytes, the header implies %d", len(b), o)
	}
	return pb, nil
}
