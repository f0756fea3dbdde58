package model

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"
)

// blobGeometry is a backbone's shape without a backbone: layers whose
// widths differ (bottleneck Out, LoRA In and Attention).
type blobGeometry struct{}

func (blobGeometry) Info() Info { return Info{Layers: 3, OutputDim: 40} }
func (blobGeometry) LayerDims(l int) LayerDims {
	return LayerDims{In: 8 * l, Attention: 24, Out: 16 * l}
}

// int8Samples are params of both adapter kinds and head kinds whose
// columns cover what per-channel scales must handle: magnitudes from 10 to
// below the scale floor, an all-zero column, a column of values too small
// to keep (below 2^-15), one exactly at 127·2^-14.
func int8Samples(t *testing.T) []*Params {
	t.Helper()
	var ps []*Params
	specs := []ParamsSpec{
		{Adapter: AdapterBottleneck, Rank: 4, Layers: []int{1, 3}, Head: HeadClassify, Labels: []string{"a", "b", "c"}},
		{Adapter: AdapterLoRA, Rank: 3, Alpha: 6, Layers: []int{2}, Head: HeadEmbed, EmbedDim: 5},
		{Adapter: AdapterLoRA, Rank: 2, Head: HeadEmbed},
	}
	for i, spec := range specs {
		for k, scale := range []float32{10, 0.3, 1e-3, 1e-5} {
			p, err := RandomParams(blobGeometry{}, spec, uint64(10*i+k), scale)
			if err != nil {
				t.Fatal(err)
			}
			for li := range p.Adapter.Layers {
				al := &p.Adapter.Layers[li]
				m := al.Down
				if m == nil {
					m = al.Bq
				}
				cols := spec.Rank
				if al.Bq != nil {
					cols = len(al.Bq) / spec.Rank
				}
				// column 0 zero; column 1 tiny; column 2 at the floor's edge
				for r := range len(m) / cols {
					m[r*cols] = 0
					m[r*cols+1] = 1e-6 * float32(r%3-1)
					if cols > 2 {
						m[r*cols+2] = 0
					}
				}
				if cols > 2 {
					m[2] = 127 * 0x1p-14
				}
			}
			ps = append(ps, p)
		}
	}
	return ps
}

// matrixOf returns the host tensor of a parsed blob's tensor t of layer i
// (t = 4: the head's W) with its shape and its byte offset in the blob.
func matrixOf(pb *paramsBlob, p *Params, i, t int) ([]float32, shape, int) {
	if t == 4 {
		return p.Head.W, shape{p.Head.In, p.Head.Out}, pb.wAt
	}
	bl := pb.layers[i]
	al := &p.Adapter.Layers[i]
	return al.tensors(p.Adapter.Kind, p.Adapter.Rank, bl.dims)[t].v, layerShapes(pb.kind, pb.rank, bl.dims)[t], bl.at[t]
}

// TestInt8ErrorBound: every int8 value decodes to within half its column's
// scale of the float32 value written (so within scale/2 plus fp16 rounding
// of the fp16 blob's value); a column's scale is the smallest fp16 with
// 127·scale >= the column's largest |value|, floored at 2^-14, and 0 for a
// column whose values all round to 0; vectors are exactly fp16.
func TestInt8ErrorBound(t *testing.T) {
	floor := float64(halfToFloat(minScaleHalf))
	for n, p := range int8Samples(t) {
		b, err := p.EncodeAs(PrecisionInt8)
		if err != nil {
			t.Fatalf("sample %d: %v", n, err)
		}
		pb, err := parseParams(b)
		if err != nil {
			t.Fatal(err)
		}
		q, err := DecodeParams(b)
		if err != nil {
			t.Fatalf("sample %d: %v", n, err)
		}
		if err := q.Check(blobGeometry{}); err != nil {
			t.Fatalf("sample %d: %v", n, err)
		}
		zeroCols, floorCols := 0, 0
		for i := range pb.layers {
			for ti := range 5 {
				if ti == 4 && i > 0 || ti == 4 && !pb.hasW {
					continue
				}
				orig, s, at := matrixOf(pb, p, i, ti)
				got, _, _ := matrixOf(pb, q, i, ti)
				if s.cols == 0 {
					for k, x := range orig {
						if got[k] != halfToFloat(floatToHalf(x)) {
							t.Fatalf("sample %d: vector value %d: %g, want fp16 of %g", n, k, got[k], x)
						}
					}
					continue
				}
				for j := range s.cols {
					sc := float64(halfToFloat(binary.LittleEndian.Uint16(b[at+2*j:])))
					m := 0.0
					for r := range s.rows {
						m = max(m, math.Abs(float64(orig[r*s.cols+j])))
					}
					switch {
					case sc == 0:
						zeroCols++
						if m >= floor/2 {
							t.Fatalf("sample %d: column %d: scale 0 for values up to %g", n, j, m)
						}
					case sc == floor:
						floorCols++
						if 127*sc < m {
							t.Fatalf("sample %d: column %d: scale %g too small for %g", n, j, sc, m)
						}
					default:
						prev := float64(halfToFloat(floatToHalf(float32(sc)) - 1))
						if 127*sc < m || 127*prev >= m {
							t.Fatalf("sample %d: column %d: scale %g is not the smallest half covering %g", n, j, sc, m)
						}
					}
					bound := max(sc, floor) / 2
					for r := range s.rows {
						k := r*s.cols + j
						x, y := float64(orig[k]), float64(got[k])
						if d := math.Abs(x - y); d > bound {
							t.Fatalf("sample %d: column %d row %d: %g decodes to %g, %g off, bound %g", n, j, r, x, y, d, bound)
						}
						if f16 := float64(halfToFloat(floatToHalf(orig[k]))); math.Abs(f16-y) > bound+math.Abs(f16-x) {
							t.Fatalf("sample %d: column %d row %d: %g is more than scale/2 from the fp16 %g", n, j, r, y, f16)
						}
					}
				}
			}
		}
		if zeroCols == 0 || floorCols == 0 {
			t.Fatalf("sample %d: %d zero and %d floor columns: the samples miss a case", n, zeroCols, floorCols)
		}
		// canonical: the decoded values encode back to the same bytes
		if again, err := q.EncodeAs(PrecisionInt8); err != nil || !slices.Equal(again, b) {
			t.Fatalf("sample %d: re-encoding changes the blob (%v)", n, err)
		}
	}
}

// TestInt8Scale: the scale rule at its edges.
func TestInt8Scale(t *testing.T) {
	floor := halfToFloat(minScaleHalf)
	for _, c := range []struct {
		m    float32
		want float32
	}{
		{0, 0},
		{1e-30, 0},
		{floor / 2 * 0.999, 0},
		{floor / 2, floor}, // rounds half away from zero: q = 1
		{127 * floor, floor},
		{127, 1},
		{254, 2},
		{127 * MaxHalf, MaxHalf},
	} {
		if got := halfToFloat(int8Scale(c.m)); got != c.want {
			t.Errorf("int8Scale(%g) = %g, want %g", c.m, got, c.want)
		}
	}
	if h := int8Scale(127 * MaxHalf * 1.001); halfFinite(h) {
		t.Errorf("int8Scale beyond range = %#x, want Inf", h)
	}
}

// TestInt8Malformed: an int8 blob with a bad scale or value gives
// ErrBadParams from DecodeParams and from the runner's path (halves).
func TestInt8Malformed(t *testing.T) {
	p := int8Samples(t)[1] // bottleneck, magnitudes up to 0.3
	b, err := p.EncodeAs(PrecisionInt8)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := parseParams(b)
	if err != nil {
		t.Fatal(err)
	}
	_, s, at := matrixOf(pb, p, 0, 2) // layer 1's Up: 4 rows × 16 columns
	le := binary.LittleEndian
	const j = 3 // a column of ordinary values
	sc := le.Uint16(b[at+2*j:])
	if sc <= minScaleHalf {
		t.Fatalf("column %d has scale %#x: want one above the floor", j, sc)
	}
	qat := func(r int) int { return at + 2*s.cols + r*s.cols + j }
	for _, c := range []struct {
		name string
		edit func(b []byte)
	}{
		{"NaN scale", func(b []byte) { le.PutUint16(b[at+2*j:], 0x7e00) }},
		{"Inf scale", func(b []byte) { le.PutUint16(b[at+2*j:], 0x7c00) }},
		{"negative scale", func(b []byte) { le.PutUint16(b[at+2*j:], sc|0x8000) }},
		{"negative zero scale", func(b []byte) {
			le.PutUint16(b[at+2*j:], 0x8000)
			for r := range s.rows {
				b[qat(r)] = 0
			}
		}},
		{"subnormal scale", func(b []byte) { le.PutUint16(b[at+2*j:], 0x0200) }},
		{"zero scale, values", func(b []byte) { le.PutUint16(b[at+2*j:], 0) }},
		{"scale, no values", func(b []byte) {
			for r := range s.rows {
				b[qat(r)] = 0
			}
		}},
		{"-128", func(b []byte) { b[qat(1)] = 0x80 }},
		{"largest q not 127", func(b []byte) {
			for r := range s.rows {
				b[qat(r)] = byte(int8(r%2*2 - 1))
			}
		}},
		{"head vector Inf", func(b []byte) { le.PutUint16(b[len(b)-2:], 0x7c00) }},
	} {
		bad := slices.Clone(b)
		c.edit(bad)
		if _, err := DecodeParams(bad); !errors.Is(err, ErrBadParams) {
			t.Errorf("%s: DecodeParams: %v", c.name, err)
		}
		if c.name == "head vector Inf" {
			continue
		}
		pb, err := parseParams(bad)
		if err != nil {
			t.Fatalf("%s: the header should still parse: %v", c.name, err)
		}
		// the runner reads layer tensors by their fp16-layout offset
		bl := pb.layers[0]
		lens := layerLens(pb.kind, pb.rank, bl.dims)
		if err := pb.halves(make([]float32, lens[2]), bl.off+2*(lens[0]+lens[1])); err == nil {
			t.Errorf("%s: halves accepts it", c.name)
		}
	}
	// A scale at the floor may have any largest |q| from 1 to 127.
	ok := slices.Clone(b)
	le.PutUint16(ok[at+2*j:], minScaleHalf)
	for r := range s.rows {
		ok[qat(r)] = byte(int8(r%3 - 1))
	}
	if _, err := DecodeParams(ok); err != nil {
		t.Errorf("floor scale with |q| <= 1: %v", err)
	}
	// halves finds every tensor by its fp16-layout offset, and nothing else.
	for i, bl := range pb.layers {
		o := bl.off
		for ti, n := range layerLens(pb.kind, pb.rank, bl.dims) {
			got, want := make([]float32, n), make([]float32, n)
			if err := pb.halves(got, o); err != nil {
				t.Fatalf("layer %d tensor %d: %v", i, ti, err)
			}
			if err := pb.layerTensor(want, i, ti); err != nil || !slices.Equal(got, want) {
				t.Fatalf("layer %d tensor %d: halves and layerTensor differ (%v)", i, ti, err)
			}
			if err := pb.halves(make([]float32, n), o+2); err == nil {
				t.Fatalf("layer %d tensor %d: halves at a wrong offset succeeds", i, ti)
			}
			o += 2 * n
		}
	}
}

// TestBlobPrecision: the header alone tells the precision.
func TestBlobPrecision(t *testing.T) {
	p := int8Samples(t)[0]
	for _, prec := range []Precision{PrecisionFP16, PrecisionInt8} {
		b, err := p.EncodeAs(prec)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := BlobPrecision(b[:paramsHeaderLen]); err != nil || got != prec {
			t.Errorf("BlobPrecision of %v = %v, %v", prec, got, err)
		}
	}
	b := p.Encode()
	b[9] |= 0x4
	if _, err := BlobPrecision(b); !errors.Is(err, ErrBadParams) {
		t.Errorf("unknown flag: %v", err)
	}
	if _, err := BlobPrecision(b[:paramsHeaderLen-1]); !errors.Is(err, ErrBadParams) {
		t.Errorf("short header: %v", err)
	}
}
