package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
)

// A params blob is how a vPLM's adapter and head are stored and shipped:
// a small header, then every tensor, by default as IEEE binary16 (fp16).
// All numbers are little-endian.
//
//	off  size
//	0    6    magic "SMILEP"
//	6    1    version (1)
//	7    1    adapter kind (1 bottleneck, 2 lora)
//	8    1    head kind (1 classify, 2 embed)
//	9    1    flags: bit 0 = the embed head has a projection W; bit 1 =
//	          matrices are int8 (PrecisionInt8); others 0
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
//	          tensors: per layer in AdapterLayer order (bottleneck: Down,
//	          DownB, Up, UpB; lora: Aq, Bq, Av, Bv), then the head's W
//	          (classify, or embed with projection) and B (classify)
//
// Without flag bit 1 every tensor is fp16. With it, each matrix (Down, Up,
// the LoRA A and B, the head's W) is stored as cols fp16 scales, then its
// rows×cols values as int8, row-major; vectors (biases, the head's B) stay
// fp16. A matrix's rows are its inputs and its columns its outputs (the
// adapter computes x·W), so each scale covers one output channel: a value
// is q·scale (exact in float32), q in -127..127. The writer takes the
// column's largest |value| m and picks the smallest fp16 scale with
// 127·scale >= m, but at least 2^-14 (the smallest normal fp16), so every
// value is within scale/2 of what was written; a column with m below 2^-15
// (every q 0) gets scale 0. Hence a reader demands, per column: a finite
// scale, +0 or >= 2^-14; no q of -128; all q 0 if and only if the scale is
// 0; and a largest |q| of 127 unless the scale is 2^-14. An int8 blob thus
// has one encoding per set of values, as an fp16 one does: decoding and
// encoding again gives the same bytes, and content addresses stay unique.
//
// The blob's length must be exactly what the header implies, and every
// value finite. A rank-64 bottleneck on one 512-wide layer with a 2-label
// head takes 134,326 bytes as fp16 and 68,922 as int8.
const (
	paramsMagic     = "SMILEP"
	paramsVersion   = 1
	paramsHeaderLen = 28
	layerRecordLen  = 14
	flagEmbedW      = 1
	flagInt8        = 2
	maxBlobLayers   = 1024
	maxBlobDim      = 65536
	// minScaleHalf is 2^-14, the smallest normal fp16 and the smallest
	// non-zero int8 scale: with it, a column whose scale is above the
	// floor has a largest |q| of exactly 127, which keeps int8 canonical.
	minScaleHalf = 0x0400
)

// Precision is how a params blob stores its tensors.
type Precision uint8

const (
	// PrecisionFP16 stores every tensor as fp16; the default (zero value),
	// what Encode writes.
	PrecisionFP16 Precision = iota
	// PrecisionInt8 stores matrices as int8 with an fp16 scale per output
	// channel and vectors as fp16: about half the bytes of fp16.
	PrecisionInt8
)

var precisionNames = [...]string{PrecisionFP16: "fp16", PrecisionInt8: "int8"}

func (p Precision) String() string {
	if p.valid() {
		return precisionNames[p]
	}
	return fmt.Sprintf("Precision(%d)", uint8(p))
}

func (p Precision) valid() bool { return p == PrecisionFP16 || p == PrecisionInt8 }

// ParsePrecision parses "fp16" or "int8".
func ParsePrecision(s string) (Precision, error) {
	for p, n := range precisionNames {
		if n == s {
			return Precision(p), nil
		}
	}
	return 0, fmt.Errorf("%w: precision %q: want fp16 or int8", ErrBadInput, s)
}

// BlobPrecision reads a params blob's precision from its header alone
// (magic, version and flags are checked; the rest is not). Errors wrap
// ErrBadParams.
func BlobPrecision(b []byte) (Precision, error) {
	if len(b) < paramsHeaderLen {
		return 0, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrBadParams, len(b), paramsHeaderLen)
	}
	if string(b[:6]) != paramsMagic {
		return 0, fmt.Errorf("%w: no %q magic", ErrBadParams, paramsMagic)
	}
	if b[6] != paramsVersion {
		return 0, fmt.Errorf("%w: version %d: this build reads version %d", ErrBadParams, b[6], paramsVersion)
	}
	if b[9]&^(flagEmbedW|flagInt8) != 0 {
		return 0, fmt.Errorf("%w: flags %#x", ErrBadParams, b[9])
	}
	if b[9]&flagInt8 != 0 {
		return PrecisionInt8, nil
	}
	return PrecisionFP16, nil
}

// shape is a tensor's layout: a matrix of rows inputs × cols outputs,
// row-major (the adapter computes x·W), or a vector of rows values when
// cols is 0.
type shape struct{ rows, cols int }

func (s shape) len() int { return s.rows * max(s.cols, 1) }

// bytes is the tensor's size in a blob of precision p.
func (s shape) bytes(p Precision) int {
	if p == PrecisionInt8 && s.cols > 0 {
		return 2*s.cols + s.rows*s.cols
	}
	return 2 * s.len()
}

// layerShapes gives a layer's tensors' shapes in blob order.
func layerShapes(kind AdapterKind, r int, d LayerDims) [4]shape {
	if kind == AdapterBottleneck {
		return [4]shape{{d.Out, r}, {r, 0}, {r, d.Out}, {d.Out, 0}}
	}
	return [4]shape{{d.In, r}, {r, d.Attention}, {d.In, r}, {r, d.Attention}}
}

// blobLayer is one adapted layer's record and where its tensors start.
type blobLayer struct {
	layer int
	dims  LayerDims
	// off is where the layer's first tensor would start in the fp16
	// layout (see halves); at is where each of its tensors starts as
	// stored (equal to off + the fp16 sizes before it in an fp16 blob).
	off int
	at  [4]int
}

// paramsBlob is a parsed blob header: everything but the tensors' values.
type paramsBlob struct {
	data   []byte
	prec   Precision
	kind   AdapterKind
	rank   int
	alpha  float32
	layers []blobLayer
	head   Head // Kind, Labels, In, Out; W and B not read
	hasW   bool
	wAt    int // byte offsets of the head's W and B
	bAt    int
	// scratch for int8 matrices: a column's scale and largest |q|
	scales []float32
	qmax   []uint8
}

// layerLens gives the element counts of a layer's tensors in blob order.
func layerLens(kind AdapterKind, r int, d LayerDims) [4]int {
	var n [4]int
	for i, s := range layerShapes(kind, r, d) {
		n[i] = s.len()
	}
	return n
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

// Encode writes the params as an fp16 blob (see the format above). Values
// are rounded to fp16 (ties to even); values beyond ±65504 become ±Inf,
// which DecodeParams rejects, so trainers should keep weights in range.
// Params that fail Check encode to a blob that DecodeParams rejects;
// EncodeAs reports such params as an error instead.
func (p *Params) Encode() []byte {
	b, _ := p.encode(PrecisionFP16)
	return b
}

// EncodeAs writes the params as a blob of precision prec; EncodeAs of
// PrecisionFP16 gives Encode's bytes. It returns a blob DecodeParams
// accepts, or an error: wrapping ErrBadInput for an unknown precision,
// ErrBadParams for params no blob can hold (tensor lengths that do not
// match the rank and widths, a bad header field, a value that is not
// finite or beyond the precision's range: ±65504 for fp16, ±127·65504 for
// an int8 matrix).
func (p *Params) EncodeAs(prec Precision) ([]byte, error) {
	if !prec.valid() {
		return nil, fmt.Errorf("%w: encode params: %v", ErrBadInput, prec)
	}
	if prec == PrecisionInt8 {
		// int8 lays matrices out by column, so their lengths must
		// agree with the header before anything is written.
		if err := p.checkShapes(); err != nil {
			return nil, err
		}
	}
	b, err := p.encode(prec)
	if err != nil {
		return nil, err
	}
	if _, err := parseParams(b); err != nil {
		return nil, err
	}
	return b, nil
}

// checkShapes reports whether every tensor's length is what its shape in a
// blob would be (the widths taken from the params themselves, as encode
// does). Errors wrap ErrBadParams.
func (p *Params) checkShapes() error {
	a, h := &p.Adapter, &p.Head
	for i := range a.Layers {
		al := &a.Layers[i]
		d := al.layerDims(a.Kind, a.Rank)
		for _, t := range al.tensors(a.Kind, a.Rank, d) {
			if len(t.v) != t.n {
				return fmt.Errorf("%w: encode params: layer %d: %s has %d values, want %d", ErrBadParams, al.Layer, t.name, len(t.v), t.n)
			}
		}
	}
	if h.W != nil && len(h.W) != h.In*h.Out {
		return fmt.Errorf("%w: encode params: head W has %d values, want %d×%d", ErrBadParams, len(h.W), h.In, h.Out)
	}
	return nil
}

// encode writes the blob; for int8, shapes must have been checked. The
// error reports the first value the precision cannot hold (Encode ignores
// it: an fp16 blob is complete either way).
func (p *Params) encode(prec Precision) ([]byte, error) {
	a, h := &p.Adapter, &p.Head
	type tensorOut struct {
		layer int // 0: the head
		name  string
		v     []float32
		s     shape
	}
	var ts []tensorOut
	for i := range a.Layers {
		al := &a.Layers[i]
		sh := layerShapes(a.Kind, a.Rank, al.layerDims(a.Kind, a.Rank))
		for j, t := range al.tensors(a.Kind, a.Rank, LayerDims{}) {
			ts = append(ts, tensorOut{al.Layer, t.name, t.v, sh[j]})
		}
	}
	ts = append(ts, tensorOut{0, "head W", h.W, shape{h.In, h.Out}}, tensorOut{0, "head B", h.B, shape{len(h.B), 0}})
	size := paramsHeaderLen + layerRecordLen*len(a.Layers)
	for _, l := range h.Labels {
		size += 1 + len(l)
	}
	for _, t := range ts {
		if prec == PrecisionInt8 && t.v != nil {
			size += t.s.bytes(prec)
		} else {
			size += 2 * len(t.v)
		}
	}
	b := make([]byte, size)
	le := binary.LittleEndian
	copy(b, paramsMagic)
	b[6], b[7], b[8] = paramsVersion, byte(a.Kind), byte(h.Kind)
	if h.Kind == HeadEmbed && h.W != nil {
		b[9] = flagEmbedW
	}
	if prec == PrecisionInt8 {
		b[9] |= flagInt8
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
	var first error
	for _, t := range ts {
		var err error
		if prec == PrecisionInt8 && t.s.cols > 0 && t.v != nil {
			n := t.s.bytes(prec)
			err = quantize(b[o:o+n], t.v, t.s)
			o += n
		} else {
			if i := EncodeHalves(b[o:], t.v); i >= 0 {
				err = fmt.Errorf("value %d (%g) is not finite as fp16", i, t.v[i])
			}
			o += 2 * len(t.v)
		}
		if err != nil && first == nil {
			name := t.name
			if t.layer > 0 {
				name = fmt.Sprintf("layer %d: %s", t.layer, t.name)
			}
			first = fmt.Errorf("%w: encode params as %v: %s: %v", ErrBadParams, prec, name, err)
		}
	}
	return b, first
}

// int8Scale is the fp16 scale of an int8 column whose largest |value| is
// m (finite, >= 0): the smallest half with 127·scale >= m, at least
// minScaleHalf, or 0 where every q would round to 0. Products of a half
// and 127 are exact in float64, so the comparison is too.
func int8Scale(m float32) uint16 {
	if m == 0 {
		return 0
	}
	h := max(floatToHalf(float32(float64(m)/127)), minScaleHalf)
	for halfFinite(h) && float64(halfToFloat(h))*127 < float64(m) {
		h++
	}
	if h == minScaleHalf && math.Round(float64(m)/float64(halfToFloat(h))) == 0 {
		return 0
	}
	return h
}

// quantize writes v, a matrix of shape s, as int8 with per-column scales
// into dst (s.bytes(PrecisionInt8) bytes).
func quantize(dst []byte, v []float32, s shape) error {
	rows, cols := s.rows, s.cols
	q := dst[2*cols:]
	for j := range cols {
		var m float32
		for i := range rows {
			x := v[i*cols+j]
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return fmt.Errorf("value %d is %g", i*cols+j, x)
			}
			m = max(m, float32(math.Abs(float64(x))))
		}
		h := int8Scale(m)
		if !halfFinite(h) {
			return fmt.Errorf("column %d: largest value %g is beyond int8's range (±%g)", j, m, 127*float64(MaxHalf))
		}
		binary.LittleEndian.PutUint16(dst[2*j:], h)
		if h == 0 {
			for i := range rows {
				q[i*cols+j] = 0
			}
			continue
		}
		sc := float64(halfToFloat(h))
		for i := range rows {
			r := math.Round(float64(v[i*cols+j]) / sc)
			q[i*cols+j] = byte(int8(max(-127, min(127, r))))
		}
	}
	return nil
}

// DecodeParams reads a blob written by Encode or EncodeAs, of either
// precision. Every malformed blob gives an error wrapping ErrBadParams;
// sizes are checked against the blob's length before anything is
// allocated.
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
		var ts [4][]float32
		for j, n := range layerLens(pb.kind, pb.rank, bl.dims) {
			ts[j] = make([]float32, n)
			if err := pb.layerTensor(ts[j], i, j); err != nil {
				return nil, fmt.Errorf("%w: layer %d: %v", ErrBadParams, bl.layer, err)
			}
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
	if pb.hasW {
		h.W = make([]float32, h.In*h.Out)
		if err := pb.tensor(h.W, pb.wAt, shape{h.In, h.Out}); err != nil {
			return fmt.Errorf("%w: head W: %v", ErrBadParams, err)
		}
	}
	if h.Kind == HeadClassify {
		h.B = make([]float32, h.Out)
		if err := pb.tensor(h.B, pb.bAt, shape{h.Out, 0}); err != nil {
			return fmt.Errorf("%w: head B: %v", ErrBadParams, err)
		}
	}
	return nil
}

// layerTensor decodes tensor t (AdapterLayer order) of the i-th adapted
// layer into dst (of the tensor's length).
func (pb *paramsBlob) layerTensor(dst []float32, i, t int) error {
	bl := &pb.layers[i]
	return pb.tensor(dst, bl.at[t], layerShapes(pb.kind, pb.rank, bl.dims)[t])
}

// halves decodes the adapter tensor of len(dst) values that starts at o in
// the fp16 layout: a layer's off plus twice the lengths of the tensors
// before it, which is where it lies in an fp16 blob. An int8 blob's tensor
// is found by that position.
func (pb *paramsBlob) halves(dst []float32, o int) error {
	if pb.prec == PrecisionFP16 {
		return pb.fp16(dst, o)
	}
	i := sort.Search(len(pb.layers), func(i int) bool { return pb.layers[i].off > o }) - 1
	if i >= 0 {
		at := pb.layers[i].off
		for t, n := range layerLens(pb.kind, pb.rank, pb.layers[i].dims) {
			if at == o && n == len(dst) {
				return pb.layerTensor(dst, i, t)
			}
			at += 2 * n
		}
	}
	return fmt.Errorf("no tensor of %d values at fp16 offset %d", len(dst), o)
}

// tensor decodes the tensor of shape s stored at byte offset at (inside the
// blob: the parser checked the lengths) into dst.
func (pb *paramsBlob) tensor(dst []float32, at int, s shape) error {
	if pb.prec == PrecisionInt8 && s.cols > 0 {
		return pb.int8Matrix(dst, at, s)
	}
	return pb.fp16(dst, at)
}

// fp16 converts len(dst) halves at byte offset o, rejecting Inf and NaN.
func (pb *paramsBlob) fp16(dst []float32, o int) error {
	if i := decodeHalves(dst, pb.data[o:o+2*len(dst)]); i >= 0 {
		return fmt.Errorf("value %d is not finite", i)
	}
	return nil
}

// int8Matrix dequantises the int8 matrix of shape s stored at byte offset
// at into dst, checking what the format demands of each column.
func (pb *paramsBlob) int8Matrix(dst []float32, at int, s shape) error {
	rows, cols := s.rows, s.cols
	if cap(pb.scales) < cols {
		pb.scales, pb.qmax = make([]float32, cols), make([]uint8, cols)
	}
	sc, qmax := pb.scales[:cols], pb.qmax[:cols]
	if j := decodeHalves(sc, pb.data[at:at+2*cols]); j >= 0 {
		return fmt.Errorf("column %d: scale is not finite", j)
	}
	minScale := halfToFloat(minScaleHalf)
	for j, x := range sc {
		if math.Signbit(float64(x)) || x != 0 && x < minScale {
			return fmt.Errorf("column %d: scale %g: want +0 or %g..%g", j, x, minScale, float32(MaxHalf))
		}
	}
	clear(qmax)
	q := pb.data[at+2*cols : at+2*cols+rows*cols]
	for i := range rows {
		row, out := q[i*cols:(i+1)*cols], dst[i*cols:(i+1)*cols]
		for j, c := range row {
			v := int8(c)
			if v == -128 {
				return fmt.Errorf("value %d is -128: want -127..127", i*cols+j)
			}
			out[j] = float32(v) * sc[j]
			qmax[j] = max(qmax[j], uint8(max(v, -v)))
		}
	}
	for j, m := range qmax {
		switch {
		case sc[j] == 0 && m != 0:
			return fmt.Errorf("column %d: scale 0 with non-zero values", j)
		case sc[j] != 0 && m == 0:
			return fmt.Errorf("column %d: scale %g for an all-zero column: want 0", j, sc[j])
		case sc[j] > minScale && m != 127:
			return fmt.Errorf("column %d: largest |q| %d with scale %g: want 127 (scale not the encoder's)", j, m, sc[j])
		}
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
	prec, err := BlobPrecision(b)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	pb := &paramsBlob{
		data:  b,
		prec:  prec,
		kind:  AdapterKind(b[7]),
		rank:  int(le.Uint16(b[10:])),
		alpha: math.Float32frombits(le.Uint32(b[12:])),
	}
	pb.head.Kind = HeadKind(b[8])
	flags := b[9] &^ flagInt8
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
	if flags&flagEmbedW != 0 && pb.head.Kind != HeadEmbed {
		return nil, bad("flags %#x for a %v head", b[9], pb.head.Kind)
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
	// o walks the tensors as stored, o16 as an fp16 blob would lay them out.
	o16 := o
	for i := range pb.layers {
		bl := &pb.layers[i]
		bl.off = o16
		for t, s := range layerShapes(pb.kind, pb.rank, bl.dims) {
			bl.at[t] = o
			o += s.bytes(prec)
			o16 += s.bytes(PrecisionFP16)
		}
	}
	pb.wAt = o
	if pb.hasW {
		o += shape{h.In, h.Out}.bytes(prec)
	}
	pb.bAt = o
	if h.Kind == HeadClassify {
		o += 2 * h.Out
	}
	if o != len(b) {
		return nil, bad("%d bytes, the header implies %d", len(b), o)
	}
	return pb, nil
}
