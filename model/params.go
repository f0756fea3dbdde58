package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"unicode/utf8"
)

// Limits of a vPLM's trainable part. Beyond them a request is a mistake (a
// rank wider than the layer it adapts, a "classifier" with a label per
// document) or would cost more device memory per vPLM than a backbone layer.
const (
	MaxRank       = 1024
	MinLabels     = 2
	MaxLabels     = 1000
	MaxLabelBytes = 128
	MaxEmbedDim   = 4096
)

// AdapterLayer holds one adapted layer's weights, row-major.
//
// Bottleneck: Down [Out×r], DownB [r], Up [r×Out], UpB [Out].
// LoRA: Aq, Av [In×r], Bq, Bv [r×Attention] (unscaled: alpha/r is applied
// when the adapter runs).
// Widths are the layer's LayerDims; the other kind's fields are nil.
type AdapterLayer struct {
	Layer          int // counts from 1
	Down, DownB    []float32
	Up, UpB        []float32
	Aq, Bq, Av, Bv []float32
}

// Adapter is the per-layer part of a vPLM. Layers are ascending.
type Adapter struct {
	Kind AdapterKind
	Rank int
	// Alpha is LoRA's scale numerator (the update is scaled by Alpha/Rank);
	// 0 means Rank, a scale of 1. Bottleneck adapters ignore it.
	Alpha  float32
	Layers []AdapterLayer
}

// Head maps the backbone's pooled vector (In = Info().OutputDim) to a
// vPLM's answer.
//
// Classify: W [In×len(Labels)], B [len(Labels)], Out = len(Labels); the
// answer is softmax(pooled·W + B).
// Embed: W nil (identity, Out = In) or [In×Out], B nil; the answer is
// pooled (·W), L2-normalised.
type Head struct {
	Kind   HeadKind
	Labels []string
	In     int
	Out    int
	W, B   []float32
}

// Params is a vPLM's trainable part.
type Params struct {
	Adapter Adapter
	Head    Head
}

// ParamsSpec is what a tenant chooses when creating a vPLM.
type ParamsSpec struct {
	Adapter AdapterKind
	Rank    int
	// Layers to adapt, ascending, counting from 1; empty means
	// DefaultAdapterLayers of the backbone.
	Layers []int
	// Alpha is LoRA's scale numerator; 0 means Rank.
	Alpha float32
	Head  HeadKind
	// Labels of a classify head, in answer order.
	Labels []string
	// EmbedDim of an embed head: 0 answers the pooled vector itself, else a
	// linear projection to this many dimensions.
	EmbedDim int
}

// DefaultAdapterLayers is the upper half of a backbone's layers,
// floor(L/2)+1 .. L: the lower layers hold general features (and can then be
// cached or replaced by n-gram tables while training and serving).
func DefaultAdapterLayers(numLayers int) []int {
	var ls []int
	for l := numLayers/2 + 1; l <= numLayers; l++ {
		ls = append(ls, l)
	}
	return ls
}

var adapterKindNames = [...]string{AdapterBottleneck: "bottleneck", AdapterLoRA: "lora"}
var headKindNames = [...]string{HeadClassify: "classify", HeadEmbed: "embed"}

func (k AdapterKind) String() string {
	if k.valid() {
		return adapterKindNames[k]
	}
	return fmt.Sprintf("AdapterKind(%d)", uint8(k))
}

func (k AdapterKind) valid() bool { return k == AdapterBottleneck || k == AdapterLoRA }

// ParseAdapterKind parses "bottleneck" or "lora".
func ParseAdapterKind(s string) (AdapterKind, error) {
	for k, n := range adapterKindNames {
		if n != "" && n == s {
			return AdapterKind(k), nil
		}
	}
	return 0, fmt.Errorf("%w: adapter kind %q: want bottleneck or lora", ErrBadInput, s)
}

func (k HeadKind) String() string {
	if k.valid() {
		return headKindNames[k]
	}
	return fmt.Sprintf("HeadKind(%d)", uint8(k))
}

func (k HeadKind) valid() bool { return k == HeadClassify || k == HeadEmbed }

// ParseHeadKind parses "classify" or "embed".
func ParseHeadKind(s string) (HeadKind, error) {
	for k, n := range headKindNames {
		if n != "" && n == s {
			return HeadKind(k), nil
		}
	}
	return 0, fmt.Errorf("%w: head kind %q: want classify or embed", ErrBadInput, s)
}

// maxRank is the widest rank an adapter of kind may have on a layer: it
// must not be wider than what it projects from or to.
func maxRank(kind AdapterKind, d LayerDims) int {
	if kind == AdapterLoRA {
		return min(d.In, d.Attention)
	}
	return d.Out
}

// Validate checks the spec against a backbone. Errors wrap ErrBadInput and
// name the field.
func (s ParamsSpec) Validate(g Geometry) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: vplm spec: %s", ErrBadInput, fmt.Sprintf(format, a...))
	}
	info := g.Info()
	if !s.Adapter.valid() {
		return bad("adapter kind %v: want bottleneck or lora", s.Adapter)
	}
	if s.Rank < 1 || s.Rank > MaxRank {
		return bad("rank %d: want 1..%d", s.Rank, MaxRank)
	}
	if !(s.Alpha >= 0) || math.IsInf(float64(s.Alpha), 0) {
		return bad("alpha %g: want a finite value >= 0", s.Alpha)
	}
	layers := s.layers(info.Layers)
	if len(layers) == 0 {
		return bad("no layer to adapt (the backbone has %d)", info.Layers)
	}
	prev := 0
	for _, l := range layers {
		if l < 1 || l > info.Layers {
			return bad("layer %d: want 1..%d", l, info.Layers)
		}
		if l <= prev {
			return bad("layers %v: want ascending and unique", layers)
		}
		prev = l
		if m := maxRank(s.Adapter, g.LayerDims(l)); s.Rank > m {
			return bad("rank %d is wider than layer %d allows for a %v adapter (%d)", s.Rank, l, s.Adapter, m)
		}
	}
	switch s.Head {
	case HeadClassify:
		if err := checkLabels(s.Labels); err != nil {
			return bad("%v", err)
		}
		if s.EmbedDim != 0 {
			return bad("embed dim %d given for a classify head", s.EmbedDim)
		}
	case HeadEmbed:
		if len(s.Labels) != 0 {
			return bad("%d labels given for an embed head", len(s.Labels))
		}
		if s.EmbedDim < 0 || s.EmbedDim > MaxEmbedDim {
			return bad("embed dim %d: want 0 (no projection) or 1..%d", s.EmbedDim, MaxEmbedDim)
		}
	default:
		return bad("head kind %v: want classify or embed", s.Head)
	}
	return nil
}

func (s ParamsSpec) layers(numLayers int) []int {
	if len(s.Layers) == 0 {
		return DefaultAdapterLayers(numLayers)
	}
	return s.Layers
}

// checkLabels checks a classify head's labels.
func checkLabels(labels []string) error {
	if len(labels) < MinLabels || len(labels) > MaxLabels {
		return fmt.Errorf("%d labels: want %d..%d", len(labels), MinLabels, MaxLabels)
	}
	seen := make(map[string]struct{}, len(labels))
	for i, l := range labels {
		switch {
		case l == "":
			return fmt.Errorf("label %d is empty", i)
		case len(l) > MaxLabelBytes:
			return fmt.Errorf("label %d has %d bytes: want at most %d", i, len(l), MaxLabelBytes)
		case !utf8.ValidString(l):
			return fmt.Errorf("label %d is not valid UTF-8", i)
		}
		if _, dup := seen[l]; dup {
			return fmt.Errorf("label %q appears twice", l)
		}
		seen[l] = struct{}{}
	}
	return nil
}

// NewParams makes a vPLM's starting point: every adapter's output map is
// zero (Up, Bq, Bv and all biases), so the adapter changes nothing and a new
// vPLM answers like the base backbone until trained; the input maps (Down,
// Aq, Av) are Kaiming-uniform, U(±1/sqrt(fan_in)), so training has a
// gradient to follow. A classify head starts from small random weights
// (normal, std 0.02), an embed head from the identity (on the first
// min(In, EmbedDim) dimensions). Deterministic for a seed.
func NewParams(g Geometry, spec ParamsSpec, seed uint64) (*Params, error) {
	return makeParams(g, spec, seed, 0)
}

// RandomParams makes params whose every tensor is random and non-zero, with
// magnitudes in [scale/10, scale]: adapters that change the answer, for
// tests and benchmarks. Deterministic for a seed.
func RandomParams(g Geometry, spec ParamsSpec, seed uint64, scale float32) (*Params, error) {
	if !(scale > 0) || math.IsInf(float64(scale), 0) {
		return nil, fmt.Errorf("%w: random params: scale %g: want a finite value > 0", ErrBadInput, scale)
	}
	return makeParams(g, spec, seed, scale)
}

func makeParams(g Geometry, spec ParamsSpec, seed uint64, scale float32) (*Params, error) {
	if err := spec.Validate(g); err != nil {
		return nil, err
	}
	info := g.Info()
	rng := rand.New(rand.NewPCG(seed, 0x5ade7a9a))
	random := scale > 0
	kaiming := func(n, fanIn int) []float32 {
		if random {
			return randomNonZero(rng, n, scale)
		}
		v := make([]float32, n)
		bound := 1 / math.Sqrt(float64(fanIn))
		for i := range v {
			v[i] = float32((2*rng.Float64() - 1) * bound)
		}
		return v
	}
	zeros := func(n int) []float32 {
		if random {
			return randomNonZero(rng, n, scale)
		}
		return make([]float32, n)
	}
	r := spec.Rank
	layers := spec.layers(info.Layers)
	p := &Params{Adapter: Adapter{Kind: spec.Adapter, Rank: r, Alpha: spec.Alpha, Layers: make([]AdapterLayer, len(layers))}}
	for i, l := range layers {
		d := g.LayerDims(l)
		al := AdapterLayer{Layer: l}
		if spec.Adapter == AdapterBottleneck {
			al.Down, al.DownB = kaiming(d.Out*r, d.Out), zeros(r)
			al.Up, al.UpB = zeros(r*d.Out), zeros(d.Out)
		} else {
			al.Aq, al.Bq = kaiming(d.In*r, d.In), zeros(r*d.Attention)
			al.Av, al.Bv = kaiming(d.In*r, d.In), zeros(r*d.Attention)
		}
		p.Adapter.Layers[i] = al
	}
	in := info.OutputDim
	h := Head{Kind: spec.Head, In: in}
	if spec.Head == HeadClassify {
		h.Labels = slices.Clone(spec.Labels)
		h.Out = len(h.Labels)
		if random {
			h.W, h.B = randomNonZero(rng, in*h.Out, scale), randomNonZero(rng, h.Out, scale)
		} else {
			h.W, h.B = make([]float32, in*h.Out), make([]float32, h.Out)
			for i := range h.W {
				h.W[i] = float32(0.02 * rng.NormFloat64())
			}
		}
	} else {
		h.Out = in
		if spec.EmbedDim > 0 {
			h.Out = spec.EmbedDim
			if random {
				h.W = randomNonZero(rng, in*h.Out, scale)
			} else {
				h.W = make([]float32, in*h.Out)
				for i := range min(in, h.Out) {
					h.W[i*h.Out+i] = 1
				}
			}
		}
	}
	p.Head = h
	return p, nil
}

func randomNonZero(rng *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		x := scale * float32(0.1+0.9*rng.Float64())
		if rng.IntN(2) == 0 {
			x = -x
		}
		v[i] = x
	}
	return v
}

// Check reports whether the params fit backbone g: layers in range and
// ascending, every tensor of the right length for the layer's widths and
// finite, a valid head on the backbone's pooled width. Errors wrap
// ErrBadParams.
func (p *Params) Check(g Geometry) error {
	if p == nil {
		return fmt.Errorf("%w: nil params", ErrBadParams)
	}
	info := g.Info()
	a := &p.Adapter
	if err := checkAdapterHeader(a.Kind, a.Rank, a.Alpha, len(a.Layers)); err != nil {
		return err
	}
	prev := 0
	for i := range a.Layers {
		al := &a.Layers[i]
		if al.Layer <= prev || al.Layer > info.Layers {
			return fmt.Errorf("%w: adapter layer %d (entry %d): want ascending within 1..%d", ErrBadParams, al.Layer, i, info.Layers)
		}
		prev = al.Layer
		d := g.LayerDims(al.Layer)
		if m := maxRank(a.Kind, d); a.Rank > m {
			return fmt.Errorf("%w: rank %d is wider than layer %d allows (%d)", ErrBadParams, a.Rank, al.Layer, m)
		}
		for _, t := range al.tensors(a.Kind, a.Rank, d) {
			if len(t.v) != t.n {
				return fmt.Errorf("%w: layer %d: %s has %d values, want %d", ErrBadParams, al.Layer, t.name, len(t.v), t.n)
			}
			if err := checkFinite(t.v); err != nil {
				return fmt.Errorf("%w: layer %d: %s: %v", ErrBadParams, al.Layer, t.name, err)
			}
		}
	}
	return p.Head.check(info.OutputDim)
}

func checkAdapterHeader(kind AdapterKind, rank int, alpha float32, layers int) error {
	if !kind.valid() {
		return fmt.Errorf("%w: adapter kind %v", ErrBadParams, kind)
	}
	if rank < 1 || rank > MaxRank {
		return fmt.Errorf("%w: rank %d: want 1..%d", ErrBadParams, rank, MaxRank)
	}
	if !(alpha >= 0) || math.IsInf(float64(alpha), 0) {
		return fmt.Errorf("%w: alpha %g", ErrBadParams, alpha)
	}
	if layers > maxBlobLayers {
		return fmt.Errorf("%w: %d adapter layers: want at most %d", ErrBadParams, layers, maxBlobLayers)
	}
	return nil
}

// tensor names one of a layer's weights with the length it must have.
type tensor struct {
	name string
	v    []float32
	n    int
}

// tensors lists the layer's weights of kind in blob order.
func (al *AdapterLayer) tensors(kind AdapterKind, r int, d LayerDims) [4]tensor {
	if kind == AdapterBottleneck {
		return [4]tensor{
			{"down", al.Down, d.Out * r}, {"down bias", al.DownB, r},
			{"up", al.Up, r * d.Out}, {"up bias", al.UpB, d.Out},
		}
	}
	return [4]tensor{
		{"A_q", al.Aq, d.In * r}, {"B_q", al.Bq, r * d.Attention},
		{"A_v", al.Av, d.In * r}, {"B_v", al.Bv, r * d.Attention},
	}
}

func checkFinite(v []float32) error {
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("value %d is %g", i, x)
		}
	}
	return nil
}

// check reports whether h is a valid head on in-wide pooled vectors.
func (h *Head) check(in int) error {
	if h.In != in {
		return fmt.Errorf("%w: head reads %d dimensions, the backbone pools %d", ErrBadParams, h.In, in)
	}
	switch h.Kind {
	case HeadClassify:
		if err := checkLabels(h.Labels); err != nil {
			return fmt.Errorf("%w: head: %v", ErrBadParams, err)
		}
		if h.Out != len(h.Labels) || len(h.W) != h.In*h.Out || len(h.B) != h.Out {
			return fmt.Errorf("%w: classify head: out %d, W %d values, B %d, for %d labels and in %d",
				ErrBadParams, h.Out, len(h.W), len(h.B), len(h.Labels), h.In)
		}
	case HeadEmbed:
		if len(h.Labels) != 0 || h.B != nil {
			return fmt.Errorf("%w: embed head with labels or a bias", ErrBadParams)
		}
		if h.W == nil {
			if h.Out != h.In {
				return fmt.Errorf("%w: embed head without projection answers %d dimensions, not %d", ErrBadParams, h.In, h.Out)
			}
		} else if h.Out < 1 || h.Out > MaxEmbedDim || len(h.W) != h.In*h.Out {
			return fmt.Errorf("%w: embed head: out %d (want 1..%d), W %d values for in %d",
				ErrBadParams, h.Out, MaxEmbedDim, len(h.W), h.In)
		}
	default:
		return fmt.Errorf("%w: head kind %v", ErrBadParams, h.Kind)
	}
	if err := checkFinite(h.W); err != nil {
		return fmt.Errorf("%w: head W: %v", ErrBadParams, err)
	}
	if err := checkFinite(h.B); err != nil {
		return fmt.Errorf("%w: head B: %v", ErrBadParams, err)
	}
	return nil
}

// L2Eps guards the L2 normalisation of embed answers against a zero vector.
const L2Eps = 1e-12

// Apply writes the head's answer for one pooled vector (h.In floats) to dst
// (h.Out floats): probabilities for classify, a unit vector for embed.
func (h *Head) Apply(dst, pooled []float32) {
	dst = dst[:h.Out]
	pooled = pooled[:h.In]
	if h.W == nil {
		copy(dst, pooled)
	} else {
		if h.B != nil {
			copy(dst, h.B)
		} else {
			clear(dst)
		}
		for i, x := range pooled {
			if x == 0 {
				continue
			}
			row := h.W[i*h.Out : (i+1)*h.Out]
			for k, w := range row {
				dst[k] += x * w
			}
		}
	}
	if h.Kind == HeadClassify {
		Softmax(dst)
	} else {
		l2Normalize(dst)
	}
}

// Softmax replaces x by its softmax (float64 sums), as a classify head
// answers.
func Softmax(x []float32) {
	m := x[0]
	for _, v := range x[1:] {
		m = max(m, v)
	}
	var s float64
	for i, v := range x {
		e := math.Exp(float64(v - m))
		x[i] = float32(e)
		s += e
	}
	inv := 1 / s
	for i := range x {
		x[i] = float32(float64(x[i]) * inv)
	}
}

func l2Normalize(x []float32) {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	inv := 1 / math.Sqrt(max(s, L2Eps))
	for i := range x {
		x[i] = float32(float64(x[i]) * inv)
	}
}
