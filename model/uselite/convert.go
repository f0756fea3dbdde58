package uselite

import (
	"fmt"
	"math"

	"github.com/smile-vplm/smile/model"
)

// Family is the backbone family name of Universal Sentence Encoder Lite.
const Family = "use-lite"

// LayerConfig is the geometry of one transformer layer. Layer 0 of USE-Lite
// reads 256-wide embeddings and writes 512-wide states (its residual goes
// through a dense projection); layer 1 is 512 wide throughout.
type LayerConfig struct {
	In           int     `json:"in"`            // width of the layer's input states
	Attention    int     `json:"attention"`     // width of q, k and v
	Out          int     `json:"out"`           // width of the layer's output states
	Heads        int     `json:"heads"`         // attention heads
	QueryScale   float32 `json:"query_scale"`   // q is multiplied by this (1/sqrt(head dim))
	FFN          int     `json:"ffn"`           // inner width of the feed-forward block
	ResidualProj bool    `json:"residual_proj"` // residual passes through a dense In->Out
}

// Config is the family-specific configuration stored with the backbone.
type Config struct {
	Vocab      int           `json:"vocab"`       // rows of the embedding table
	EmbedDim   int           `json:"embed_dim"`   // width of token embeddings
	EmbedScale float32       `json:"embed_scale"` // token embeddings enter layer 0 multiplied by this
	MaxLen     int           `json:"max_len"`     // positions kept per text
	LayerNorm  float32       `json:"ln_eps"`      // layer-norm epsilon
	L2Eps      float32       `json:"l2_eps"`      // epsilon of the output L2 normalisation
	Layers     []LayerConfig `json:"layers"`      //
	OutputDim  int           `json:"output_dim"`  // width of the tanh layer = embedding size
	TimingDims int           `json:"timing_dims"` // number of sinusoid frequencies (half the embedding width)
}

// Tensor is one named float32 tensor of the converted backbone.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

const (
	pfx    = "module_apply_default/Encoder_en/KonaTransformer/Encode/"
	pfxMod = "module/Encoder_en/KonaTransformer/Encode/"
)

// expectedOps are nodes whose presence and op pin the architecture this
// converter implements; a graph without them is some other model.
var expectedOps = map[string]string{
	pfx + "TransformerStack/Layer_0/TransformerLayer/FFN/conv1/Relu":                                                         "Relu",
	pfx + "TransformerStack/Layer_1/TransformerLayer/FFN/conv1/Relu":                                                         "Relu",
	pfx + "TransformerStack/Layer_0/AddTimingSignal/TimingSignal/Sin":                                                        "Sin",
	pfx + "TransformerStack/Layer_0/AddTimingSignal/TimingSignal/Cos":                                                        "Cos",
	pfx + "TransformerStack/Layer_0/TransformerLayer/AdjustResidualInput/dense/MatMul":                                       "MatMul",
	pfx + "TransformerStack/Layer_1/TransformerLayer/MultiheadAttention/DotProductAttention/BaseDotProductAttention/Softmax": "Softmax",
	"module_apply_default/Encoder_en/hidden_layers/tanh_layer_0/Tanh":                                                        "Tanh",
	"module_apply_default/Encoder_en/hidden_layers/l2_normalize/Rsqrt":                                                       "Rsqrt",
	"module_apply_default/Encoder_en/KonaTransformer/div":                                                                    "RealDiv",
	pfx + "TransformerStack/Layer_0/add":                                                                                     "Add",
	pfx + "TransformerStack/Layer_0/AddTimingSignal/add":                                                                     "Add",
}

// Convert maps the TF.js graph of USE-Lite to SMILE's tensors and config.
// Scalars that shape the computation (heads, scales, epsilons, the position
// window) are read from the graph's constants, not assumed.
func Convert(g *Graph) (Config, []Tensor, error) {
	var cfg Config
	for node, op := range expectedOps {
		if got, ok := g.Ops[node]; !ok || got != op {
			return cfg, nil, fmt.Errorf("%w: model.json: node %q with op %s not found: not the USE-Lite graph", model.ErrBadModelFile, node, op)
		}
	}
	// The graph adds the scattered token embeddings twice: once inside
	// AddTimingSignal (embedding + signal) and once more when Layer_0/add
	// sums that with the embeddings again. Layer 0 therefore sees 2E + T;
	// confirm the wiring rather than assume it.
	addIn := g.Inputs[pfx+"TransformerStack/Layer_0/add"]
	timingIn := g.Inputs[pfx+"TransformerStack/Layer_0/AddTimingSignal/add"]
	gatherIn := g.Inputs[pfx+"TransformerStack/Layer_0/AddTimingSignal/Gather/GatherNd"]
	switch {
	case len(addIn) == 2 && addIn[0] == pfx+"Scatter/ScatterNd" && addIn[1] == pfx+"TransformerStack/Layer_0/AddTimingSignal/Scatter/ScatterNd" &&
		len(timingIn) == 2 && timingIn[0] == pfx+"TransformerStack/Layer_0/AddTimingSignal/Gather/GatherNd" &&
		len(gatherIn) == 2 && gatherIn[0] == pfx+"Scatter/ScatterNd":
		cfg.EmbedScale = 2
	default:
		return cfg, nil, fmt.Errorf("%w: model.json: layer 0's input is not wired as in USE-Lite (Layer_0/add inputs %q)", model.ErrBadModelFile, addIn)
	}
	c := &conv{g: g}
	emb := c.f32("module/Embeddings_en", -1, -1)
	if c.err == nil {
		cfg.Vocab, cfg.EmbedDim = c.shape[0], c.shape[1]
	}
	inv := c.f32(pfx+"TransformerStack/Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1", 1, -1)
	if c.err == nil {
		cfg.TimingDims = c.shape[1]
	}
	cfg.MaxLen = int(c.i32("module_apply_default/Encoder_en/KonaTransformer/ClipToMaxLength/Less/y"))
	cfg.LayerNorm = c.scalar(pfx + "TransformerStack/Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/Cast/x")
	cfg.L2Eps = c.scalar("module_apply_default/Encoder_en/hidden_layers/l2_normalize/Maximum/y")
	headsConst := int(c.i32(pfx + "TransformerStack/Layer_1/TransformerLayer/MultiheadAttention/split_heads/split_last_dimension/Reshape/shape/2"))
	if c.err != nil {
		return cfg, nil, c.err
	}
	if cfg.TimingDims*2 != cfg.EmbedDim {
		return cfg, nil, fmt.Errorf("%w: model.json: weight %q is %d wide but the timing signal has %d frequencies (want twice as many columns)",
			model.ErrBadModelFile, "module/Embeddings_en", cfg.EmbedDim, cfg.TimingDims)
	}
	if cfg.MaxLen <= 0 || cfg.MaxLen > 1<<16 || headsConst <= 0 {
		return cfg, nil, fmt.Errorf("%w: model.json: bad max length %d or head count %d", model.ErrBadModelFile, cfg.MaxLen, headsConst)
	}
	out := []Tensor{
		{Name: "embeddings", Shape: []int{cfg.Vocab, cfg.EmbedDim}, Data: emb},
		{Name: "timing.inv_timescales", Shape: []int{cfg.TimingDims}, Data: inv},
	}
	in := cfg.EmbedDim
	for l := 0; ; l++ {
		lp := fmt.Sprintf("%sLayer_%d/TransformerLayer/", pfx, l)
		if _, ok := g.Weights[lp+"layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat"]; !ok {
			break
		}
		sp := fmt.Sprintf("%sTransformerStack/Layer_%d/TransformerLayer/", pfx, l)
		mp := fmt.Sprintf("%sLayer_%d/TransformerLayer/", pfxMod, l)
		name := func(s string) string { return fmt.Sprintf("layer.%d.%s", l, s) }
		lc := LayerConfig{In: in, Heads: headsConst}
		lnG := c.f32(lp+"layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat", in)
		lnB := c.f32(lp+"layer_prepostprocess/layer_norm/layer_norm_bias/ConcatPartitions/concat", in)
		qkvW := c.f32(mp+"MultiheadAttention/qkv_transform_single/kernel/part_0", 1, 1, in, -1)
		if c.err != nil {
			return cfg, nil, c.err
		}
		split := c.ints(sp+"MultiheadAttention/Const", 3)
		if c.err != nil {
			return cfg, nil, c.err
		}
		if split[0] != split[1] || split[1] != split[2] || 3*int(split[0]) != c.shape[3] {
			return cfg, nil, fmt.Errorf("%w: model.json: layer %d splits qkv as %v of %d", model.ErrBadModelFile, l, split, c.shape[3])
		}
		lc.Attention = int(split[0])
		qkvB := c.f32(lp+"MultiheadAttention/qkv_transform_single/bias/ConcatPartitions/concat", 3*lc.Attention)
		headDim := int(c.i32(sp + "MultiheadAttention/split_heads/split_last_dimension/Reshape/shape/3"))
		lc.QueryScale = c.scalar(sp + "MultiheadAttention/mul/y")
		outW := c.f32(mp+"MultiheadAttention/output_transform_single/kernel/part_0", 1, 1, lc.Attention, -1)
		if c.err != nil {
			return cfg, nil, c.err
		}
		lc.Out = c.shape[3]
		if headDim*lc.Heads != lc.Attention {
			return cfg, nil, fmt.Errorf("%w: model.json: layer %d: %d heads of %d do not make %d", model.ErrBadModelFile, l, lc.Heads, headDim, lc.Attention)
		}
		if want := float32(1 / math.Sqrt(float64(headDim))); math.Abs(float64(lc.QueryScale-want)) > 1e-6 {
			return cfg, nil, fmt.Errorf("%w: model.json: layer %d query scale %g, want %g", model.ErrBadModelFile, l, lc.QueryScale, want)
		}
		outB := c.f32(lp+"MultiheadAttention/output_transform_single/bias/ConcatPartitions/concat", lc.Out)
		out = append(out,
			Tensor{name("ln1.gamma"), []int{in}, lnG}, Tensor{name("ln1.beta"), []int{in}, lnB},
			Tensor{name("qkv.weight"), []int{in, 3 * lc.Attention}, qkvW}, Tensor{name("qkv.bias"), []int{3 * lc.Attention}, qkvB},
			Tensor{name("out.weight"), []int{lc.Attention, lc.Out}, outW}, Tensor{name("out.bias"), []int{lc.Out}, outB})
		if in != lc.Out {
			lc.ResidualProj = true
			rw := c.f32(lp+"dense/kernel/ConcatPartitions/concat", in, lc.Out)
			rb := c.f32(lp+"dense/bias/ConcatPartitions/concat", lc.Out)
			out = append(out, Tensor{name("residual.weight"), []int{in, lc.Out}, rw}, Tensor{name("residual.bias"), []int{lc.Out}, rb})
		}
		fp := lp + "FFN/"
		ln2G := c.f32(fp+"layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat", lc.Out)
		ln2B := c.f32(fp+"layer_prepostprocess/layer_norm/layer_norm_bias/ConcatPartitions/concat", lc.Out)
		f1W := c.f32(sp+"FFN/conv1/Tensordot/Reshape_1", lc.Out, -1)
		if c.err != nil {
			return cfg, nil, c.err
		}
		lc.FFN = c.shape[1]
		f1B := c.f32(fp+"conv1/bias/ConcatPartitions/concat", lc.FFN)
		f2W := c.f32(sp+"FFN/conv2/Tensordot/Reshape_1", lc.FFN, lc.Out)
		f2B := c.f32(fp+"conv2/bias/ConcatPartitions/concat", lc.Out)
		out = append(out,
			Tensor{name("ln2.gamma"), []int{lc.Out}, ln2G}, Tensor{name("ln2.beta"), []int{lc.Out}, ln2B},
			Tensor{name("ffn1.weight"), []int{lc.Out, lc.FFN}, f1W}, Tensor{name("ffn1.bias"), []int{lc.FFN}, f1B},
			Tensor{name("ffn2.weight"), []int{lc.FFN, lc.Out}, f2W}, Tensor{name("ffn2.bias"), []int{lc.Out}, f2B})
		if c.err != nil {
			return cfg, nil, c.err
		}
		cfg.Layers = append(cfg.Layers, lc)
		in = lc.Out
	}
	if len(cfg.Layers) == 0 {
		return cfg, nil, fmt.Errorf("%w: model.json: no transformer layers found", model.ErrBadModelFile)
	}
	pw := c.f32("module/Encoder_en/hidden_layers/tanh_layer_0/weights", in, -1)
	if c.err == nil {
		cfg.OutputDim = c.shape[1]
	}
	pb := c.f32("module/Encoder_en/hidden_layers/tanh_layer_0/bias", cfg.OutputDim)
	if c.err != nil {
		return cfg, nil, c.err
	}
	out = append(out, Tensor{"pool.weight", []int{in, cfg.OutputDim}, pw}, Tensor{"pool.bias", []int{cfg.OutputDim}, pb})
	return cfg, out, nil
}

// Info derives the generic geometry from the config.
func (cfg Config) Info() model.Info {
	last := cfg.Layers[len(cfg.Layers)-1]
	return model.Info{
		Family: Family, Name: Family, Layers: len(cfg.Layers), Hidden: last.Out, Heads: last.Heads,
		Intermediate: last.FFN, MaxPositions: cfg.MaxLen, VocabSize: cfg.Vocab, OutputDim: cfg.OutputDim,
	}
}

// Validate checks a config read back from a backbone file.
func (cfg Config) Validate() error {
	bad := func(f string, a ...any) error {
		return fmt.Errorf("%w: smile.config: %s", model.ErrBadModelFile, fmt.Sprintf(f, a...))
	}
	if cfg.Vocab <= 0 || cfg.EmbedDim <= 0 || cfg.EmbedDim != 2*cfg.TimingDims {
		return bad("vocab %d, embed_dim %d, timing_dims %d", cfg.Vocab, cfg.EmbedDim, cfg.TimingDims)
	}
	if cfg.MaxLen <= 0 || cfg.MaxLen > 1<<16 || cfg.OutputDim <= 0 || len(cfg.Layers) == 0 || len(cfg.Layers) > 64 {
		return bad("max_len %d, output_dim %d, %d layers", cfg.MaxLen, cfg.OutputDim, len(cfg.Layers))
	}
	if !(cfg.LayerNorm > 0) || !(cfg.L2Eps > 0) || !(cfg.EmbedScale > 0) {
		return bad("epsilons must be positive")
	}
	in := cfg.EmbedDim
	for i, l := range cfg.Layers {
		if l.In != in || l.Attention <= 0 || l.Out <= 0 || l.FFN <= 0 || l.Heads <= 0 || l.Attention%l.Heads != 0 ||
			l.ResidualProj != (l.In != l.Out) || !(l.QueryScale > 0) || l.Attention > 1<<14 || l.Out > 1<<14 || l.FFN > 1<<16 {
			return bad("layer %d: inconsistent geometry %+v", i, l)
		}
		in = l.Out
	}
	return nil
}

// conv collects the first lookup error so Convert reads straight through.
type conv struct {
	g     *Graph
	err   error
	shape []int
}

func (c *conv) get(name string) *Weight {
	if c.err != nil {
		return nil
	}
	w, ok := c.g.Weights[name]
	if !ok {
		c.err = fmt.Errorf("%w: model.json: weight %q is missing", model.ErrBadModelFile, name)
		return nil
	}
	return w
}

// f32 fetches a float32 weight whose shape must match want (-1: any size).
func (c *conv) f32(name string, want ...int) []float32 {
	w := c.get(name)
	if w == nil {
		return nil
	}
	if w.F32 == nil || len(w.Shape) != len(want) {
		c.err = fmt.Errorf("%w: model.json: weight %q has shape %v dtype-float32=%v, want shape %v", model.ErrBadModelFile, name, w.Shape, w.F32 != nil, want)
		return nil
	}
	for i, d := range want {
		if d >= 0 && w.Shape[i] != d {
			c.err = fmt.Errorf("%w: model.json: weight %q has shape %v, want %v", model.ErrBadModelFile, name, w.Shape, want)
			return nil
		}
		if w.Shape[i] == 0 {
			c.err = fmt.Errorf("%w: model.json: weight %q has an empty dimension %v", model.ErrBadModelFile, name, w.Shape)
			return nil
		}
	}
	c.shape = w.Shape
	return w.F32
}

func (c *conv) ints(name string, n int) []int32 {
	w := c.get(name)
	if w == nil {
		return nil
	}
	if w.I32 == nil || len(w.I32) != n {
		c.err = fmt.Errorf("%w: model.json: constant %q: want %d int32 values, have shape %v", model.ErrBadModelFile, name, n, w.Shape)
		return nil
	}
	return w.I32
}

func (c *conv) i32(name string) int32 {
	v := c.ints(name, 1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (c *conv) scalar(name string) float32 {
	w := c.get(name)
	if w == nil {
		return 0
	}
	if w.F32 == nil || len(w.F32) != 1 {
		c.err = fmt.Errorf("%w: model.json: constant %q: want one float32, have shape %v", model.ErrBadModelFile, name, w.Shape)
		return 0
	}
	return w.F32[0]
}
