package model_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/benchdata"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/bert"
)

// Tolerances of the vPLM tests.
const (
	// mixedTol: a vPLM's answer in a mixed batch vs alone. The shared GEMMs
	// see different row counts, so the BLAS blocks (and so sums) them
	// differently; answers are probabilities or unit vectors, so 1e-5 is
	// about 100 float32 ulps of an O(1) value.
	mixedTol = 1e-5
	// identityTol: a zero-initialised adapter vs the plain backbone: the
	// adapter adds exact zeros, so only the host head's rounding differs.
	identityTol = 1e-6
	// referenceTol: adapters run on the device vs in float64 on the host
	// inside the same backbone: float32 GEMMs against float64 sums.
	referenceTol = 1e-4
)

type backboneCase struct {
	name string
	load func(t testing.TB) model.Backbone
}

func backbones() []backboneCase {
	return []backboneCase{
		{"use-lite", loadUseLite},
		{"bert-tiny", loadTinyBERT},
	}
}

func newDevice(t testing.TB) gpu.Device {
	t.Helper()
	dev, err := cpu.New(cpu.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

func loadUseLite(t testing.TB) model.Backbone {
	t.Helper()
	z := testenv.UseLite(t)
	bb, err := z.Load(newDevice(t), zoo.DefaultModel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bb.Close() })
	return bb
}

func loadTinyBERT(t testing.TB) model.Backbone {
	t.Helper()
	bb, err := bert.NewRandom(newDevice(t), bert.TinyConfig(), 7)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bb.Close() })
	return bb
}

// randomIDs makes n prepared id sequences of 1..maxLen raw ids.
func randomIDs(bb model.Backbone, rng *rand.Rand, n, maxLen int) [][]int32 {
	vocab := min(bb.Info().VocabSize, 8000)
	out := make([][]int32, n)
	for i := range out {
		ids := make([]int32, 1+rng.IntN(maxLen))
		for j := range ids {
			ids[j] = int32(rng.IntN(vocab))
		}
		out[i] = bb.Prepare(ids)
	}
	return out
}

// variedSpec is vPLM i's spec: adapter kind x head kind cycle fastest, then
// ranks, layer sets, LoRA alphas and embed projections vary.
func variedSpec(bb model.Geometry, i int) model.ParamsSpec {
	L := bb.Info().Layers
	s := model.ParamsSpec{
		Adapter: []model.AdapterKind{model.AdapterBottleneck, model.AdapterLoRA}[i%2],
		Head:    []model.HeadKind{model.HeadClassify, model.HeadEmbed}[i/2%2],
		Rank:    []int{2, 8, 4, 16, 3}[i/4%5],
	}
	switch i / 3 % 3 {
	case 1:
		s.Layers = []int{1} // a lower layer only: zero segments in the upper ones
	case 2:
		for l := 1; l <= L; l++ {
			s.Layers = append(s.Layers, l)
		}
	}
	if s.Adapter == model.AdapterLoRA && i%3 == 0 {
		s.Alpha = float32(2 * s.Rank)
	}
	if s.Head == model.HeadClassify {
		for k := range 2 + i%4 {
			s.Labels = append(s.Labels, fmt.Sprintf("label-%d", k))
		}
	} else if i%5 == 0 {
		s.EmbedDim = 16
	}
	return s
}

func upload(t testing.TB, r *model.Runner, p *model.Params) *model.DeviceParams {
	t.Helper()
	dp, err := r.UploadParams(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Free)
	return dp
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// TestMixedBatchEquivalence is the mixed-batch promise: 64 vPLMs (both
// adapter kinds x both head kinds, ranks 2..16, different layer sets) and
// plain rows, 1-3 texts each, interleaved in one Forward, answer as each
// vPLM does alone, within mixedTol.
func TestMixedBatchEquivalence(t *testing.T) {
	for _, bc := range backbones() {
		t.Run(bc.name, func(t *testing.T) {
			bb := bc.load(t)
			r := model.NewRunner(bb)
			defer r.Close()
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(11, 12))
			const vplms = 64
			var items []model.Item
			var owner []int // vPLM of each item, -1: plain
			plain := randomIDs(bb, rng, 3, 40)
			for i := range vplms {
				p, err := model.RandomParams(bb, variedSpec(bb, i), uint64(100+i), 0.2)
				if err != nil {
					t.Fatal(err)
				}
				dp := upload(t, r, p)
				for _, ids := range randomIDs(bb, rng, 1+rng.IntN(3), 40) {
					items = append(items, model.Item{IDs: ids, Params: dp})
					owner = append(owner, i)
				}
			}
			for _, ids := range plain {
				items = append(items, model.Item{IDs: ids})
				owner = append(owner, -1)
			}
			// Interleave: a vPLM's items are not adjacent in the caller's order.
			perm := rng.Perm(len(items))
			shuffled, shOwner := make([]model.Item, len(items)), make([]int, len(items))
			for i, j := range perm {
				shuffled[i], shOwner[i] = items[j], owner[j]
			}
			mixed, err := r.Forward(ctx, shuffled)
			if err != nil {
				t.Fatal(err)
			}
			worst, changed := 0.0, 0
			for v := -1; v < vplms; v++ {
				var alone []model.Item
				var at []int
				for i, o := range shOwner {
					if o == v {
						alone = append(alone, shuffled[i])
						at = append(at, i)
					}
				}
				got, err := r.Forward(ctx, alone)
				if err != nil {
					t.Fatal(err)
				}
				for k, i := range at {
					if len(got[k]) != len(mixed[i]) {
						t.Fatalf("vPLM %d item %d: %d values alone, %d mixed", v, i, len(got[k]), len(mixed[i]))
					}
					d := maxAbsDiff(got[k], mixed[i])
					worst = max(worst, d)
					if d > mixedTol {
						t.Errorf("vPLM %d (%+v) item %d: mixed differs from alone by %g", v, variedSpec(bb, max(v, 0)), i, d)
					}
				}
				if v >= 0 {
					// The adapter must matter, or the test proves nothing.
					p := alone[0].Params
					base, err := r.Forward(ctx, []model.Item{{IDs: alone[0].IDs}})
					if err != nil {
						t.Fatal(err)
					}
					want := make([]float32, p.Head().Out)
					p.Head().Apply(want, base[0])
					if d := maxAbsDiff(want, got[0]); d > 1e-3 {
						changed++
					} else {
						t.Logf("vPLM %d (%+v): the adapter changes the answer by only %.2g", v, variedSpec(bb, v), d)
					}
				}
			}
			t.Logf("%d items of %d vPLMs: worst mixed-vs-alone difference %.3g; %d vPLMs' adapters change the answer by > 1e-3",
				len(items), vplms, worst, changed)
			if changed < vplms*3/4 {
				t.Errorf("only %d of %d random adapters change the answer: the test is too weak", changed, vplms)
			}
		})
	}
}

// TestIdentity: a new vPLM (NewParams: zero output maps) answers what its
// head makes of the plain backbone's pooled vector, for both adapter kinds
// and both head kinds.
func TestIdentity(t *testing.T) {
	for _, bc := range backbones() {
		t.Run(bc.name, func(t *testing.T) {
			bb := bc.load(t)
			r := model.NewRunner(bb)
			defer r.Close()
			ctx := context.Background()
			ids := randomIDs(bb, rand.New(rand.NewPCG(3, 3)), 5, 30)
			var plainItems []model.Item
			for _, s := range ids {
				plainItems = append(plainItems, model.Item{IDs: s})
			}
			plain, err := r.Forward(ctx, plainItems)
			if err != nil {
				t.Fatal(err)
			}
			want, err := model.EmbedIDs(ctx, bb, ids, 1<<16)
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if d := maxAbsDiff(want[i], plain[i]); d > mixedTol {
					t.Fatalf("plain Forward differs from EmbedIDs by %g", d)
				}
			}
			for _, ak := range []model.AdapterKind{model.AdapterBottleneck, model.AdapterLoRA} {
				for _, hk := range []model.HeadKind{model.HeadClassify, model.HeadEmbed} {
					spec := model.ParamsSpec{Adapter: ak, Rank: 8, Head: hk, Alpha: 4}
					if hk == model.HeadClassify {
						spec.Labels = []string{"no", "yes", "maybe"}
					}
					p, err := model.NewParams(bb, spec, 1)
					if err != nil {
						t.Fatal(err)
					}
					dp := upload(t, r, p)
					items := slices.Clone(plainItems)
					for i := range items {
						items[i].Params = dp
					}
					got, err := r.Forward(ctx, items)
					if err != nil {
						t.Fatal(err)
					}
					for i := range got {
						exp := make([]float32, p.Head.Out)
						p.Head.Apply(exp, plain[i])
						if d := maxAbsDiff(exp, got[i]); d > identityTol {
							t.Errorf("%v/%v text %d: a new vPLM differs from the base model by %g", ak, hk, i, d)
						}
					}
				}
			}
		})
	}
}

// hostHooks applies one adapter on the host in float64, straight from the
// formulas in vplm.go, inside the backbone's own layers: the reference the
// device path is checked against.
type hostHooks struct {
	dev gpu.Device
	a   *model.Adapter
}

func (h *hostHooks) layer(l int) *model.AdapterLayer {
	for i := range h.a.Layers {
		if h.a.Layers[i].Layer == l {
			return &h.a.Layers[i]
		}
	}
	return nil
}

func (h *hostHooks) get(m gpu.Mat) []float32 {
	v := make([]float32, m.Rows*m.Cols)
	if err := h.dev.Download(v, m); err != nil {
		panic(err)
	}
	return v
}

// lowRank returns out += scale * x A B row by row (x [T×n], A [n×r], B [r×m]).
func lowRank(out, x, a, b []float32, n, r, m int, scale float64, act func(float64) float64, bias1, bias2 []float32) {
	T := len(x) / n
	u := make([]float64, r)
	for t := range T {
		for k := range r {
			s := 0.0
			for i := range n {
				s += float64(x[t*n+i]) * float64(a[i*r+k])
			}
			if bias1 != nil {
				s += float64(bias1[k])
			}
			u[k] = act(s)
		}
		for j := range m {
			s := 0.0
			for k := range r {
				s += u[k] * float64(b[k*m+j])
			}
			s *= scale
			if bias2 != nil {
				s += float64(bias2[j])
			}
			out[t*m+j] = float32(float64(out[t*m+j]) + s)
		}
	}
}

func (h *hostHooks) QKV(layer int, x, q, v gpu.Mat) error {
	al := h.layer(layer)
	if h.a.Kind != model.AdapterLoRA || al == nil {
		return nil
	}
	r := h.a.Rank
	scale := 1.0
	if h.a.Alpha != 0 {
		scale = float64(h.a.Alpha) / float64(r)
	}
	id := func(x float64) float64 { return x }
	xs, qs, vs := h.get(x), h.get(q), h.get(v)
	lowRank(qs, xs, al.Aq, al.Bq, x.Cols, r, q.Cols, scale, id, nil, nil)
	lowRank(vs, xs, al.Av, al.Bv, x.Cols, r, v.Cols, scale, id, nil, nil)
	if err := h.dev.Upload(q, qs); err != nil {
		return err
	}
	return h.dev.Upload(v, vs)
}

func (h *hostHooks) Attended(layer int, z gpu.Mat) error {
	al := h.layer(layer)
	if h.a.Kind != model.AdapterBottleneck || al == nil {
		return nil
	}
	gelu := func(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }
	zs := h.get(z)
	x := slices.Clone(zs)
	lowRank(zs, x, al.Down, al.Up, z.Cols, h.a.Rank, z.Cols, 1, gelu, al.DownB, al.UpB)
	return h.dev.Upload(z, zs)
}

// hostHead is the head's formula in float64, written independently of
// Head.Apply.
func hostHead(h *model.Head, pooled []float32) []float32 {
	out := make([]float64, h.Out)
	for k := range out {
		if h.W == nil {
			out[k] = float64(pooled[k])
			continue
		}
		for i := range h.In {
			out[k] += float64(pooled[i]) * float64(h.W[i*h.Out+k])
		}
		if h.B != nil {
			out[k] += float64(h.B[k])
		}
	}
	res := make([]float32, h.Out)
	if h.Kind == model.HeadClassify {
		m, s := slices.Max(out), 0.0
		for _, v := range out {
			s += math.Exp(v - m)
		}
		for k, v := range out {
			res[k] = float32(math.Exp(v-m) / s)
		}
		return res
	}
	n := 0.0
	for _, v := range out {
		n += v * v
	}
	for k, v := range out {
		res[k] = float32(v / math.Sqrt(max(n, 1e-12)))
	}
	return res
}

// TestAdapterReference: the device path (Runner, segmented GEMMs, folded
// LoRA scale, fused [Aq|Av]) agrees with the formulas computed on the host,
// so a wrong formula cannot pass the equivalence test by being consistently
// wrong.
func TestAdapterReference(t *testing.T) {
	for _, bc := range backbones() {
		t.Run(bc.name, func(t *testing.T) {
			bb := bc.load(t)
			r := model.NewRunner(bb)
			defer r.Close()
			ctx := context.Background()
			ids := randomIDs(bb, rand.New(rand.NewPCG(5, 5)), 4, 20)
			for i := range 8 {
				spec := variedSpec(bb, i)
				p, err := model.RandomParams(bb, spec, uint64(i), 0.05)
				if err != nil {
					t.Fatal(err)
				}
				dp := upload(t, r, p)
				var items []model.Item
				for _, s := range ids {
					items = append(items, model.Item{IDs: s, Params: dp})
				}
				got, err := r.Forward(ctx, items)
				if err != nil {
					t.Fatal(err)
				}
				st, err := bb.Embed(ctx, ids)
				if err != nil {
					t.Fatal(err)
				}
				st.Hooks = &hostHooks{dev: bb.Device(), a: &p.Adapter}
				if err := bb.RunLayers(ctx, st, bb.Info().Layers, nil); err != nil {
					t.Fatal(err)
				}
				pooled := make([]float32, len(ids)*bb.Info().OutputDim)
				if err := bb.Pool(ctx, st, pooled); err != nil {
					t.Fatal(err)
				}
				bb.Release(st)
				dim := bb.Info().OutputDim
				for k := range ids {
					want := hostHead(&p.Head, pooled[k*dim:(k+1)*dim])
					if d := maxAbsDiff(want, got[k]); d > referenceTol {
						t.Errorf("%+v text %d: device differs from the host reference by %g", spec, k, d)
					}
				}
			}
		})
	}
}

// TestParamsSpecValidate: every bad field gives ErrBadInput.
func TestParamsSpecValidate(t *testing.T) {
	bb := loadTinyBERT(t) // 3 layers, 64 wide
	ok := model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 8, Head: model.HeadClassify, Labels: []string{"a", "b"}}
	long := string(make([]byte, model.MaxLabelBytes+1))
	many := make([]string, model.MaxLabels+1)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	for _, c := range []struct {
		name string
		edit func(*model.ParamsSpec)
		ok   bool
	}{
		{"ok", func(*model.ParamsSpec) {}, true},
		{"lora", func(s *model.ParamsSpec) { s.Adapter = model.AdapterLoRA; s.Alpha = 16 }, true},
		{"embed", func(s *model.ParamsSpec) { s.Head, s.Labels, s.EmbedDim = model.HeadEmbed, nil, 32 }, true},
		{"all layers", func(s *model.ParamsSpec) { s.Layers = []int{1, 2, 3} }, true},
		{"rank = width", func(s *model.ParamsSpec) { s.Rank = 64 }, true},
		{"no adapter kind", func(s *model.ParamsSpec) { s.Adapter = 0 }, false},
		{"rank 0", func(s *model.ParamsSpec) { s.Rank = 0 }, false},
		{"rank > width", func(s *model.ParamsSpec) { s.Rank = 65 }, false},
		{"rank > max", func(s *model.ParamsSpec) { s.Rank = model.MaxRank + 1 }, false},
		{"layer 0", func(s *model.ParamsSpec) { s.Layers = []int{0} }, false},
		{"layer past the end", func(s *model.ParamsSpec) { s.Layers = []int{4} }, false},
		{"layers descending", func(s *model.ParamsSpec) { s.Layers = []int{2, 1} }, false},
		{"layers repeated", func(s *model.ParamsSpec) { s.Layers = []int{2, 2} }, false},
		{"alpha negative", func(s *model.ParamsSpec) { s.Alpha = -1 }, false},
		{"alpha NaN", func(s *model.ParamsSpec) { s.Alpha = float32(math.NaN()) }, false},
		{"no head kind", func(s *model.ParamsSpec) { s.Head = 0 }, false},
		{"one label", func(s *model.ParamsSpec) { s.Labels = []string{"a"} }, false},
		{"too many labels", func(s *model.ParamsSpec) { s.Labels = many }, false},
		{"empty label", func(s *model.ParamsSpec) { s.Labels = []string{"a", ""} }, false},
		{"long label", func(s *model.ParamsSpec) { s.Labels = []string{"a", long} }, false},
		{"repeated label", func(s *model.ParamsSpec) { s.Labels = []string{"a", "a"} }, false},
		{"invalid UTF-8 label", func(s *model.ParamsSpec) { s.Labels = []string{"a", "\xff"} }, false},
		{"classify with embed dim", func(s *model.ParamsSpec) { s.EmbedDim = 8 }, false},
		{"embed with labels", func(s *model.ParamsSpec) { s.Head = model.HeadEmbed }, false},
		{"embed dim too big", func(s *model.ParamsSpec) {
			s.Head, s.Labels, s.EmbedDim = model.HeadEmbed, nil, model.MaxEmbedDim+1
		}, false},
		{"embed dim negative", func(s *model.ParamsSpec) { s.Head, s.Labels, s.EmbedDim = model.HeadEmbed, nil, -1 }, false},
	} {
		s := ok
		s.Labels = slices.Clone(ok.Labels)
		c.edit(&s)
		err := s.Validate(bb)
		if c.ok && err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if !c.ok && !errors.Is(err, model.ErrBadInput) {
			t.Errorf("%s: got %v, want ErrBadInput", c.name, err)
		}
		if _, perr := model.NewParams(bb, s, 1); (perr == nil) != c.ok {
			t.Errorf("%s: NewParams: %v", c.name, perr)
		}
	}
}

func TestParseKinds(t *testing.T) {
	for _, k := range []model.AdapterKind{model.AdapterBottleneck, model.AdapterLoRA} {
		if got, err := model.ParseAdapterKind(k.String()); err != nil || got != k {
			t.Errorf("ParseAdapterKind(%q) = %v, %v", k.String(), got, err)
		}
	}
	for _, k := range []model.HeadKind{model.HeadClassify, model.HeadEmbed} {
		if got, err := model.ParseHeadKind(k.String()); err != nil || got != k {
			t.Errorf("ParseHeadKind(%q) = %v, %v", k.String(), got, err)
		}
	}
	for _, s := range []string{"", "LoRA", "adapter", "classify"} {
		if _, err := model.ParseAdapterKind(s); !errors.Is(err, model.ErrBadInput) {
			t.Errorf("ParseAdapterKind(%q): %v", s, err)
		}
	}
	if _, err := model.ParseHeadKind("bottleneck"); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("ParseHeadKind: %v", err)
	}
	if got := model.DefaultAdapterLayers(2); !slices.Equal(got, []int{2}) {
		t.Errorf("DefaultAdapterLayers(2) = %v", got)
	}
	if got := model.DefaultAdapterLayers(12); !slices.Equal(got, []int{7, 8, 9, 10, 11, 12}) {
		t.Errorf("DefaultAdapterLayers(12) = %v", got)
	}
}

// paramsSamples are params of every adapter x head combination on bb.
func paramsSamples(t testing.TB, bb model.Geometry) []*model.Params {
	var ps []*model.Params
	for i := range 8 {
		p, err := model.RandomParams(bb, variedSpec(bb, i), uint64(i), 0.3)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

// TestParamsEncodeRoundTrip: Decode(Encode(p)) is p rounded to fp16 (each
// value within half an fp16 ulp: relative 2^-11), and encodes back to the
// same bytes; the blob fits the backbone.
func TestParamsEncodeRoundTrip(t *testing.T) {
	bb := loadTinyBERT(t)
	for i, p := range paramsSamples(t, bb) {
		blob := p.Encode()
		q, err := model.DecodeParams(blob)
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
		near := func(what string, a, b []float32) {
			if len(a) != len(b) || (a == nil) != (b == nil) {
				t.Fatalf("sample %d: %s has %d values, want %d", i, what, len(b), len(a))
			}
			for j := range a {
				if math.Abs(float64(a[j]-b[j])) > math.Abs(float64(a[j]))*0x1p-11 {
					t.Fatalf("sample %d: %s[%d] = %g, want %g within fp16 rounding", i, what, j, b[j], a[j])
				}
			}
		}
		for l := range p.Adapter.Layers {
			a, b := &p.Adapter.Layers[l], &q.Adapter.Layers[l]
			if a.Layer != b.Layer {
				t.Fatalf("sample %d: layer %d became %d", i, a.Layer, b.Layer)
			}
			for _, x := range [][3]any{{"down", a.Down, b.Down}, {"downB", a.DownB, b.DownB}, {"up", a.Up, b.Up},
				{"upB", a.UpB, b.UpB}, {"Aq", a.Aq, b.Aq}, {"Bq", a.Bq, b.Bq}, {"Av", a.Av, b.Av}, {"Bv", a.Bv, b.Bv}} {
				near(x[0].(string), x[1].([]float32), x[2].([]float32))
			}
		}
		near("head W", p.Head.W, q.Head.W)
		near("head B", p.Head.B, q.Head.B)
		if again := q.Encode(); !slices.Equal(again, blob) {
			t.Fatalf("sample %d: re-encoding changes the blob", i)
		}
	}
}

// TestDecodeParamsErrors: truncated, extended, corrupted blobs all give
// ErrBadParams, never a panic.
func TestDecodeParamsErrors(t *testing.T) {
	bb := loadTinyBERT(t)
	for i, p := range paramsSamples(t, bb)[:4] {
		blob := p.Encode()
		for n := range len(blob) {
			if _, err := model.DecodeParams(blob[:n]); !errors.Is(err, model.ErrBadParams) {
				t.Fatalf("sample %d truncated to %d bytes: %v", i, n, err)
			}
		}
		if _, err := model.DecodeParams(append(slices.Clone(blob), 0)); !errors.Is(err, model.ErrBadParams) {
			t.Fatalf("sample %d with a trailing byte: %v", i, err)
		}
		for _, c := range []struct {
			name string
			off  int
			val  byte
		}{
			{"magic", 0, 'X'}, {"version", 6, 2}, {"adapter kind", 7, 9}, {"head kind", 8, 0}, {"flags", 9, 0x80},
			{"rank", 11, 0xff}, {"alpha", 15, 0xff}, {"layers", 17, 0xff}, {"head in", 21, 1}, {"head out", 25, 1},
			{"labels", 27, 0xff}, {"layer number", 28, 0}, {"layer width", 33, 0x10},
			{"a value", len(blob) - 1, 0x7c},
		} {
			b := slices.Clone(blob)
			b[c.off] = c.val
			if _, err := model.DecodeParams(b); !errors.Is(err, model.ErrBadParams) {
				t.Errorf("sample %d, bad %s: %v", i, c.name, err)
			}
		}
	}
}

// TestParamsCheck: params that do not fit a backbone give ErrBadParams,
// from Check, UploadParams and Upload alike.
func TestParamsCheck(t *testing.T) {
	bb := loadTinyBERT(t)
	other, err := bert.NewRandom(newDevice(t), func() bert.Config { c := bert.TinyConfig(); c.Hidden, c.Layers = 32, 4; return c }(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	r := model.NewRunner(bb)
	defer r.Close()
	for i, p := range paramsSamples(t, other) {
		if err := p.Check(bb); !errors.Is(err, model.ErrBadParams) {
			t.Errorf("sample %d: Check on the wrong backbone: %v", i, err)
		}
		if _, err := r.UploadParams(p); !errors.Is(err, model.ErrBadParams) {
			t.Errorf("sample %d: UploadParams on the wrong backbone: %v", i, err)
		}
		if _, err := r.Upload(p.Encode()); !errors.Is(err, model.ErrBadParams) {
			t.Errorf("sample %d: Upload on the wrong backbone: %v", i, err)
		}
	}
	p := paramsSamples(t, bb)[0]
	for name, edit := range map[string]func(q *model.Params){
		"short tensor":  func(q *model.Params) { l := &q.Adapter.Layers[0]; l.Down = l.Down[1:] },
		"NaN":           func(q *model.Params) { q.Adapter.Layers[0].UpB[0] = float32(math.NaN()) },
		"layer order":   func(q *model.Params) { q.Adapter.Layers[0].Layer = 9 },
		"head W":        func(q *model.Params) { q.Head.W = q.Head.W[1:] },
		"head in":       func(q *model.Params) { q.Head.In++ },
		"head labels":   func(q *model.Params) { q.Head.Labels = q.Head.Labels[:1] },
		"adapter kind":  func(q *model.Params) { q.Adapter.Kind = 7 },
		"rank too wide": func(q *model.Params) { q.Adapter.Rank = 65 },
	} {
		q, err := model.DecodeParams(p.Encode())
		if err != nil {
			t.Fatal(err)
		}
		edit(q)
		if err := q.Check(bb); !errors.Is(err, model.ErrBadParams) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestRunnerUpload: a blob uploaded directly answers exactly as the same
// params decoded and uploaded from the host; Upload allocates nothing in
// proportion to the adapter; freed params are refused; Free is idempotent.
func TestRunnerUpload(t *testing.T) {
	bb := loadTinyBERT(t)
	r := model.NewRunner(bb)
	defer r.Close()
	ctx := context.Background()
	ids := randomIDs(bb, rand.New(rand.NewPCG(9, 9)), 3, 20)
	for i, p := range paramsSamples(t, bb) {
		blob := p.Encode()
		direct, err := r.Upload(blob)
		if err != nil {
			t.Fatal(err)
		}
		q, err := model.DecodeParams(blob)
		if err != nil {
			t.Fatal(err)
		}
		viaHost := upload(t, r, q)
		if direct.Bytes() != viaHost.Bytes() || direct.Bytes() == 0 {
			t.Fatalf("sample %d: %d device bytes direct, %d via host", i, direct.Bytes(), viaHost.Bytes())
		}
		var items, items2 []model.Item
		for _, s := range ids {
			items = append(items, model.Item{IDs: s, Params: direct})
			items2 = append(items2, model.Item{IDs: s, Params: viaHost})
		}
		got, err := r.Forward(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		got2, err := r.Forward(ctx, items2)
		if err != nil {
			t.Fatal(err)
		}
		for k := range got {
			if !slices.Equal(got[k], got2[k]) {
				t.Fatalf("sample %d: Upload and UploadParams answer differently", i)
			}
		}
		direct.Free()
		direct.Free()
		if direct.Bytes() != 0 {
			t.Fatal("freed params still hold memory")
		}
		if _, err := r.Forward(ctx, items); !errors.Is(err, model.ErrBadInput) {
			t.Fatalf("forward with freed params: %v", err)
		}
	}
	// Per call, Upload allocates the head's host copy and a few small
	// header slices, never the adapter's size in conversion buffers.
	p, err := model.RandomParams(bb, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 64, Layers: []int{1, 2, 3},
		Head: model.HeadEmbed}, 1, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	blob := p.Encode()
	var dps []*model.DeviceParams
	allocs := testing.AllocsPerRun(10, func() {
		dp, err := r.Upload(blob)
		if err != nil {
			t.Fatal(err)
		}
		dps = append(dps, dp)
	})
	for _, dp := range dps {
		dp.Free()
	}
	if allocs > 12 {
		t.Errorf("Upload allocates %.0f times per call", allocs)
	}
	if _, err := r.Forward(ctx, nil); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("Forward with no items: %v", err)
	}
}

// geometry is a backbone's shape without a backbone: 3 layers whose widths
// differ, as use-lite's do.
type geometry struct{}

func (geometry) Info() model.Info { return model.Info{Layers: 3, OutputDim: 24} }
func (geometry) LayerDims(l int) model.LayerDims {
	return model.LayerDims{In: 8 * l, Attention: 16, Out: 8 * (l + 1)}
}

func FuzzDecodeParams(f *testing.F) {
	var bb geometry // no device: fuzz workers stay light
	small, err := model.RandomParams(bb, model.ParamsSpec{Adapter: model.AdapterLoRA, Rank: 1, Layers: []int{3},
		Head: model.HeadClassify, Labels: []string{"x", "y"}}, 1, 1)
	if err != nil {
		f.Fatal(err)
	}
	fresh, err := model.NewParams(bb, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: 2, Layers: []int{1},
		Head: model.HeadEmbed, EmbedDim: 3}, 1)
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range append(paramsSamples(f, bb), small, fresh) {
		for _, prec := range []model.Precision{model.PrecisionFP16, model.PrecisionInt8} {
			b, err := p.EncodeAs(prec)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte("SMILEP"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := model.DecodeParams(b)
		if err != nil {
			if !errors.Is(err, model.ErrBadParams) {
				t.Fatalf("error without ErrBadParams: %v", err)
			}
			return
		}
		// Whatever decodes is canonical: it encodes back, in its own
		// precision, to the same bytes.
		prec, err := model.BlobPrecision(b)
		if err != nil {
			t.Fatalf("decoded, but BlobPrecision fails: %v", err)
		}
		if again, err := p.EncodeAs(prec); err != nil || !slices.Equal(again, b) {
			t.Fatalf("decoded %v params re-encode to different bytes (%v)", prec, err)
		}
	})
}

// BenchmarkForwardMixed: 64 imdb sentences per Forward on use-lite, served
// by the plain backbone, by 1 vPLM, or by 64 distinct vPLMs (rank-64
// adapters on the default layers, classify heads). Reports sequences/s.
func BenchmarkForwardMixed(b *testing.B) {
	bb := loadUseLite(b)
	r := model.NewRunner(bb)
	defer r.Close()
	ctx := context.Background()
	ids, err := model.Tokenize(bb, benchdata.IMDB()[:64], model.DefaultEmbedOptions())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		kind     model.AdapterKind
		adapters int
	}{
		{"plain", 0, 0},
		{"bottleneck/adapters=1", model.AdapterBottleneck, 1},
		{"bottleneck/adapters=64", model.AdapterBottleneck, 64},
		{"lora/adapters=1", model.AdapterLoRA, 1},
		{"lora/adapters=64", model.AdapterLoRA, 64},
	} {
		b.Run(c.name, func(b *testing.B) {
			var dps []*model.DeviceParams
			for i := range c.adapters {
				p, err := model.RandomParams(bb, model.ParamsSpec{Adapter: c.kind, Rank: model.DefaultRank,
					Head: model.HeadClassify, Labels: []string{"neg", "pos"}}, uint64(i), 0.02)
				if err != nil {
					b.Fatal(err)
				}
				dps = append(dps, upload(b, r, p))
			}
			items := make([]model.Item, len(ids))
			for i := range items {
				items[i].IDs = ids[i]
				if len(dps) > 0 {
					items[i].Params = dps[i%len(dps)]
				}
			}
			for b.Loop() {
				if _, err := r.Forward(ctx, items); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(items)*b.N)/b.Elapsed().Seconds(), "seq/s")
		})
	}
	// cold: every pass meets 64 adapters it has not seen for a while, as
	// a device with thousands of vPLMs in a uniform mix does: each is
	// uploaded from its fp16 blob (of 512 in rotation), used once, freed.
	// Against adapters=1 this is the cost of adapter weights coming from
	// main memory instead of cache, uploads included.
	b.Run("bottleneck/adapters=64/cold", func(b *testing.B) {
		var blobs [][]byte
		for i := range 512 {
			p, err := model.RandomParams(bb, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: model.DefaultRank,
				Head: model.HeadClassify, Labels: []string{"neg", "pos"}}, uint64(1000+i), 0.02)
			if err != nil {
				b.Fatal(err)
			}
			blobs = append(blobs, p.Encode())
		}
		items := make([]model.Item, len(ids))
		dps := make([]*model.DeviceParams, len(ids))
		k := 0
		for b.Loop() {
			for i := range items {
				dp, err := r.Upload(blobs[k%len(blobs)])
				if err != nil {
					b.Fatal(err)
				}
				k++
				dps[i], items[i] = dp, model.Item{IDs: ids[i], Params: dp}
			}
			if _, err := r.Forward(ctx, items); err != nil {
				b.Fatal(err)
			}
			for _, dp := range dps {
				dp.Free()
			}
		}
		b.ReportMetric(float64(len(items)*b.N)/b.Elapsed().Seconds(), "seq/s")
	})
}

// BenchmarkUpload: a use-lite params blob (bottleneck r=64 on layer 2,
// classify head) decoded from fp16 and uploaded, then freed: the device
// tier's cost of a miss. Reports microseconds per upload.
func BenchmarkUpload(b *testing.B) {
	bb := loadUseLite(b)
	r := model.NewRunner(bb)
	defer r.Close()
	p, err := model.RandomParams(bb, model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: model.DefaultRank,
		Head: model.HeadClassify, Labels: []string{"neg", "pos"}}, 1, 0.02)
	if err != nil {
		b.Fatal(err)
	}
	blob := p.Encode()
	b.ReportAllocs()
	for b.Loop() {
		dp, err := r.Upload(blob)
		if err != nil {
			b.Fatal(err)
		}
		dp.Free()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/upload")
	b.ReportMetric(float64(len(blob)), "blob_bytes")
}
