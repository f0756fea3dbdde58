package model_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/smile-vplm/smile/model"
)

// int8OutputTol: a vPLM's answers with int8 params vs with fp16 params, on
// tiny BERT with adapters whose weights reach 0.3 (RandomParams). Each
// weight moves by at most half its column's scale (0.4% of the column's
// largest |value|); over the adapter's sums and the head that moved the
// answers (probabilities, unit-vector components) by at most about 2e-3
// when this was written.
const int8OutputTol = 1e-2

func TestPrecision(t *testing.T) {
	for _, p := range []model.Precision{model.PrecisionFP16, model.PrecisionInt8} {
		got, err := model.ParsePrecision(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePrecision(%q) = %v, %v", p.String(), got, err)
		}
	}
	var zero model.Precision
	if zero != model.PrecisionFP16 {
		t.Error("the zero Precision is not fp16")
	}
	for _, s := range []string{"", "FP16", "int4", "float16"} {
		if _, err := model.ParsePrecision(s); !errors.Is(err, model.ErrBadInput) {
			t.Errorf("ParsePrecision(%q): %v", s, err)
		}
	}
	if s := model.Precision(7).String(); s != "Precision(7)" {
		t.Errorf("Precision(7).String() = %q", s)
	}
}

// TestEncodeAsInt8: int8 blobs of every adapter x head combination decode
// to params that fit the backbone, keep the header, re-encode to the same
// bytes, upload straight to the device exactly as the decoded params do,
// and answer within int8OutputTol of the fp16 blob's params; EncodeAs of
// fp16 is Encode.
func TestEncodeAsInt8(t *testing.T) {
	bb := loadTinyBERT(t)
	r := model.NewRunner(bb)
	defer r.Close()
	ctx := context.Background()
	ids := randomIDs(bb, rand.New(rand.NewPCG(5, 5)), 4, 24)
	worst := 0.0
	for i, p := range paramsSamples(t, bb) {
		fp16, err := p.EncodeAs(model.PrecisionFP16)
		if err != nil || !slices.Equal(fp16, p.Encode()) {
			t.Fatalf("sample %d: EncodeAs(fp16) is not Encode (%v)", i, err)
		}
		b, err := p.EncodeAs(model.PrecisionInt8)
		if err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
		if prec, err := model.BlobPrecision(b); err != nil || prec != model.PrecisionInt8 {
			t.Fatalf("sample %d: BlobPrecision = %v, %v", i, prec, err)
		}
		if prec, err := model.BlobPrecision(fp16); err != nil || prec != model.PrecisionFP16 {
			t.Fatalf("sample %d: BlobPrecision of fp16 = %v, %v", i, prec, err)
		}
		if len(b) >= len(fp16) {
			t.Errorf("sample %d: int8 blob %d bytes, fp16 %d", i, len(b), len(fp16))
		}
		q, err := model.DecodeParams(b)
		if err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
		if err := q.Check(bb); err != nil {
			t.Fatalf("sample %d: decoded params do not fit: %v", i, err)
		}
		if q.Adapter.Kind != p.Adapter.Kind || q.Adapter.Rank != p.Adapter.Rank || q.Adapter.Alpha != p.Adapter.Alpha ||
			len(q.Adapter.Layers) != len(p.Adapter.Layers) || q.Head.Kind != p.Head.Kind ||
			!slices.Equal(q.Head.Labels, p.Head.Labels) || q.Head.In != p.Head.In || q.Head.Out != p.Head.Out {
			t.Fatalf("sample %d: header changed: %+v vs %+v", i, q.Head, p.Head)
		}
		if again, err := q.EncodeAs(model.PrecisionInt8); err != nil || !slices.Equal(again, b) {
			t.Fatalf("sample %d: re-encoding changes the blob (%v)", i, err)
		}
		direct, err := r.Upload(b)
		if err != nil {
			t.Fatalf("sample %d: Upload: %v", i, err)
		}
		defer direct.Free()
		p16, err := model.DecodeParams(fp16)
		if err != nil {
			t.Fatal(err)
		}
		var items, viaHost, ref []model.Item
		dq, d16 := upload(t, r, q), upload(t, r, p16)
		for _, s := range ids {
			items = append(items, model.Item{IDs: s, Params: direct})
			viaHost = append(viaHost, model.Item{IDs: s, Params: dq})
			ref = append(ref, model.Item{IDs: s, Params: d16})
		}
		var outs [3][][]float32
		for k, its := range [][]model.Item{items, viaHost, ref} {
			if outs[k], err = r.Forward(ctx, its); err != nil {
				t.Fatal(err)
			}
		}
		for k := range ids {
			if !slices.Equal(outs[0][k], outs[1][k]) {
				t.Fatalf("sample %d: Upload and UploadParams of the int8 params answer differently", i)
			}
			d := maxAbsDiff(outs[0][k], outs[2][k])
			if d > int8OutputTol {
				t.Fatalf("sample %d text %d: int8 answers %v, fp16 %v: %g apart", i, k, outs[0][k], outs[2][k], d)
			}
			worst = max(worst, d)
		}
	}
	t.Logf("int8 vs fp16 answers: largest difference %.2g", worst)
}

// TestInt8FreshParams: a new vPLM's zero output maps stay exactly zero in
// int8 (scale 0), so it still answers as the base backbone does.
func TestInt8FreshParams(t *testing.T) {
	bb := loadTinyBERT(t)
	for _, kind := range []model.AdapterKind{model.AdapterBottleneck, model.AdapterLoRA} {
		p, err := model.NewParams(bb, model.ParamsSpec{Adapter: kind, Rank: 8, Head: model.HeadEmbed}, 3)
		if err != nil {
			t.Fatal(err)
		}
		b, err := p.EncodeAs(model.PrecisionInt8)
		if err != nil {
			t.Fatal(err)
		}
		q, err := model.DecodeParams(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, al := range q.Adapter.Layers {
			for _, v := range [][]float32{al.Up, al.UpB, al.DownB, al.Bq, al.Bv} {
				if slices.ContainsFunc(v, func(x float32) bool { return x != 0 }) {
					t.Fatalf("%v: a zero output map decodes to non-zero values", kind)
				}
			}
		}
	}
}

// blobGeometry512 is one 512-wide layer with 512-wide pooling, as the blob
// format's size example.
type blobGeometry512 struct{}

func (blobGeometry512) Info() model.Info { return model.Info{Layers: 1, OutputDim: 512} }
func (blobGeometry512) LayerDims(int) model.LayerDims {
	return model.LayerDims{In: 512, Attention: 512, Out: 512}
}

// TestInt8Size: a rank-64 bottleneck on one 512-wide layer with a 2-label
// head: the blob's length is exactly the format's, about half of fp16's.
func TestInt8Size(t *testing.T) {
	const d, r, labels = 512, 64, 2
	p, err := model.RandomParams(blobGeometry512{}, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: r,
		Head: model.HeadClassify, Labels: []string{"neg", "pos"}}, 1, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	head := 28 + 14 + (1 + 3) + (1 + 3) // header, one layer record, two labels
	// Down [d×r], DownB [r], Up [r×d], UpB [d], W [d×labels], B [labels]
	wantFP16 := head + 2*(d*r+r+r*d+d+d*labels+labels)
	matrix := func(rows, cols int) int { return 2*cols + rows*cols }
	wantInt8 := head + matrix(d, r) + 2*r + matrix(r, d) + 2*d + matrix(d, labels) + 2*labels
	b16, err := p.EncodeAs(model.PrecisionFP16)
	if err != nil {
		t.Fatal(err)
	}
	b8, err := p.EncodeAs(model.PrecisionInt8)
	if err != nil {
		t.Fatal(err)
	}
	if len(b16) != wantFP16 || len(b8) != wantInt8 {
		t.Fatalf("fp16 %d bytes (want %d), int8 %d (want %d)", len(b16), wantFP16, len(b8), wantInt8)
	}
	if ratio := float64(len(b8)) / float64(len(b16)); ratio > 0.52 {
		t.Errorf("int8 is %.3f of fp16", ratio)
	}
	t.Logf("fp16 %d bytes, int8 %d bytes (%.3f)", len(b16), len(b8), float64(len(b8))/float64(len(b16)))
}

// TestEncodeAsErrors: params no blob can hold give an error, never a blob
// DecodeParams would refuse; an unknown precision is bad input.
func TestEncodeAsErrors(t *testing.T) {
	var bb geometry
	base, err := model.RandomParams(bb, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 4,
		Head: model.HeadClassify, Labels: []string{"x", "y"}}, 1, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := base.EncodeAs(model.Precision(9)); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("unknown precision: %v", err)
	}
	for _, c := range []struct {
		name       string
		edit       func(p *model.Params)
		fp16, int8 bool // whether each precision can hold it
	}{
		{"short tensor", func(p *model.Params) { l := &p.Adapter.Layers[0]; l.Up = l.Up[1:] }, false, false},
		{"short head W", func(p *model.Params) { p.Head.W = p.Head.W[1:] }, false, false},
		{"no head W", func(p *model.Params) { p.Head.W = nil }, false, false},
		{"NaN", func(p *model.Params) { p.Adapter.Layers[0].Down[3] = float32(math.NaN()) }, false, false},
		{"Inf bias", func(p *model.Params) { p.Head.B[1] = float32(math.Inf(-1)) }, false, false},
		{"1e6 in a matrix", func(p *model.Params) { p.Adapter.Layers[0].Up[2] = 1e6 }, false, true},
		{"1e6 in a vector", func(p *model.Params) { p.Adapter.Layers[0].UpB[2] = 1e6 }, false, false},
		{"1e7 in a matrix", func(p *model.Params) { p.Head.W[0] = -1e7 }, false, false},
		{"rank 0", func(p *model.Params) { p.Adapter.Rank = 0 }, false, false},
		{"one label", func(p *model.Params) { p.Head.Labels = p.Head.Labels[:1] }, false, false},
	} {
		for _, prec := range []model.Precision{model.PrecisionFP16, model.PrecisionInt8} {
			p, err := model.DecodeParams(base.Encode())
			if err != nil {
				t.Fatal(err)
			}
			c.edit(p)
			b, err := p.EncodeAs(prec)
			want := c.fp16
			if prec == model.PrecisionInt8 {
				want = c.int8
			}
			switch {
			case want && err != nil:
				t.Errorf("%s as %v: %v", c.name, prec, err)
			case want:
				if _, err := model.DecodeParams(b); err != nil {
					t.Errorf("%s as %v: the blob does not decode: %v", c.name, prec, err)
				}
			case !errors.Is(err, model.ErrBadParams) || b != nil:
				t.Errorf("%s as %v: %d bytes, %v", c.name, prec, len(b), err)
			}
		}
	}
}

// TestDecodeInt8Truncated: every prefix of an int8 blob, and the blob with
// a byte more, gives ErrBadParams.
func TestDecodeInt8Truncated(t *testing.T) {
	var bb geometry
	for i, p := range paramsSamples(t, bb)[:4] {
		blob, err := p.EncodeAs(model.PrecisionInt8)
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(blob) {
			if _, err := model.DecodeParams(blob[:n]); !errors.Is(err, model.ErrBadParams) {
				t.Fatalf("sample %d truncated to %d bytes: %v", i, n, err)
			}
		}
		if _, err := model.DecodeParams(append(slices.Clone(blob), 0)); !errors.Is(err, model.ErrBadParams) {
			t.Fatalf("sample %d with a trailing byte: %v", i, err)
		}
	}
}
