package train

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/smile-vplm/smile/model"
)

// Param is one trainable tensor: its values, the gradient the backward pass
// accumulates into (same length), and whether weight decay applies (not for
// biases, layer-norm gains and such).
type Param struct {
	Name        string
	Value, Grad []float32
	Decay       bool
}

// AdamWConfig are AdamW's hyperparameters. Zero Beta1, Beta2 and Eps take
// DefaultAdamWConfig's values; ClipNorm <= 0 disables clipping.
type AdamWConfig struct {
	Beta1, Beta2, Eps float32
	WeightDecay       float32
	ClipNorm          float32 // global L2 norm of all gradients
}

// DefaultAdamWConfig is the usual AdamW: betas 0.9 and 0.999, eps 1e-8, no
// weight decay, no clipping.
func DefaultAdamWConfig() AdamWConfig {
	return AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
}

// withDefaults fills the zero fields.
func (c AdamWConfig) withDefaults() AdamWConfig {
	d := DefaultAdamWConfig()
	if c.Beta1 == 0 {
		c.Beta1 = d.Beta1
	}
	if c.Beta2 == 0 {
		c.Beta2 = d.Beta2
	}
	if c.Eps == 0 {
		c.Eps = d.Eps
	}
	return c
}

// Validate checks the fields after defaults: betas in [0, 1), Eps > 0,
// WeightDecay >= 0, all finite.
func (c AdamWConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case !(c.Beta1 >= 0 && c.Beta1 < 1), !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("train: adamw: %w: betas %g, %g outside [0, 1)", model.ErrBadInput, c.Beta1, c.Beta2)
	case !(c.Eps > 0) || math.IsInf(float64(c.Eps), 0):
		return fmt.Errorf("train: adamw: %w: eps = %g", model.ErrBadInput, c.Eps)
	case !(c.WeightDecay >= 0) || math.IsInf(float64(c.WeightDecay), 0):
		return fmt.Errorf("train: adamw: %w: weight decay = %g", model.ErrBadInput, c.WeightDecay)
	case math.IsNaN(float64(c.ClipNorm)) || math.IsInf(float64(c.ClipNorm), 0):
		return fmt.Errorf("train: adamw: %w: clip norm = %g", model.ErrBadInput, c.ClipNorm)
	}
	return nil
}

// AdamW is Adam with decoupled weight decay (Loshchilov & Hutter) over a
// fixed list of params, with global gradient-norm clipping. Its state is
// the first and second moments of every param and the step count.
type AdamW struct {
	params []*Param
	cfg    AdamWConfig
	m, v   [][]float32
	t      int
}

// NewAdamW returns an optimiser for params (which it keeps: Step reads
// their Grad and updates their Value in place). Zero config fields take
// their defaults.
func NewAdamW(params []*Param, cfg AdamWConfig) *AdamW {
	o := &AdamW{params: params, cfg: cfg.withDefaults()}
	o.m = make([][]float32, len(params))
	o.v = make([][]float32, len(params))
	for i, p := range params {
		o.m[i] = make([]float32, len(p.Value))
		o.v[i] = make([]float32, len(p.Value))
	}
	return o
}

// Steps is the number of updates applied so far.
func (o *AdamW) Steps() int { return o.t }

// Step applies one update with learning rate lr and returns the global L2
// norm of the gradients before clipping. In order: the norm; clipping (every
// gradient scaled by ClipNorm/norm when the norm exceeds ClipNorm); decoupled
// weight decay (value -= lr*WeightDecay*value, Decay params only); the
// bias-corrected Adam update value -= lr * mhat/(sqrt(vhat)+eps); then every
// Grad is zeroed. A non-finite norm (NaN or Inf gradients) skips the update
// altogether (values, moments and the step count stay as they were) so one
// bad batch cannot poison the weights; the caller sees the norm.
func (o *AdamW) Step(lr float32) (gradNorm float64) {
	var ss float64
	for _, p := range o.params {
		ss += sumSquares64(p.Grad)
	}
	gradNorm = math.Sqrt(ss)
	if math.IsNaN(gradNorm) || math.IsInf(gradNorm, 0) {
		o.zeroGrad()
		return gradNorm
	}
	clip := 1.0
	if c := float64(o.cfg.ClipNorm); c > 0 && gradNorm > c {
		clip = c / gradNorm
	}
	o.t++
	b1, b2 := float64(o.cfg.Beta1), float64(o.cfg.Beta2)
	bc1 := 1 - math.Pow(b1, float64(o.t))
	bc2 := 1 - math.Pow(b2, float64(o.t))
	eps := float64(o.cfg.Eps)
	lr64 := float64(lr)
	step := lr64 / bc1 // lr * mhat = step * m
	invBC2 := 1 / bc2
	for i, p := range o.params {
		m, v := o.m[i], o.v[i]
		val := p.Value
		grad := p.Grad[:len(val)]
		m, v = m[:len(val)], v[:len(val)]
		keep := 1.0
		if p.Decay {
			keep = 1 - lr64*float64(o.cfg.WeightDecay)
		}
		for j, g32 := range grad {
			g := float64(g32) * clip
			mj := b1*float64(m[j]) + (1-b1)*g
			vj := b2*float64(v[j]) + (1-b2)*g*g
			m[j], v[j] = float32(mj), float32(vj)
			w := float64(val[j]) * keep
			val[j] = float32(w - step*mj/(math.Sqrt(vj*invBC2)+eps))
		}
	}
	o.zeroGrad()
	return gradNorm
}

func (o *AdamW) zeroGrad() {
	for _, p := range o.params {
		clear(p.Grad)
	}
}

func sumSquares64(x []float32) float64 {
	var s0, s1, s2, s3 float64
	j := 0
	for ; j+4 <= len(x); j += 4 {
		s0 += float64(x[j]) * float64(x[j])
		s1 += float64(x[j+1]) * float64(x[j+1])
		s2 += float64(x[j+2]) * float64(x[j+2])
		s3 += float64(x[j+3]) * float64(x[j+3])
	}
	for ; j < len(x); j++ {
		s0 += float64(x[j]) * float64(x[j])
	}
	return (s0 + s1) + (s2 + s3)
}

// The state's encoding, little-endian:
//
//	magic "SMAW" | version u32 = 1 | steps u64 | params u32
//	per param: name length u32 | name | elements u64 | m (elements f32) | v (elements f32)
//	CRC-32 (IEEE) of everything before it, u32
const (
	adamMagic   = "SMAW"
	adamVersion = 1
)

// MarshalBinary encodes the moments and the step count (not the values,
// which the caller saves with the params, nor the config).
func (o *AdamW) MarshalBinary() ([]byte, error) {
	n := 4 + 4 + 8 + 4 + 4
	for i, p := range o.params {
		n += 4 + len(p.Name) + 8 + 8*len(o.m[i])
	}
	buf := make([]byte, 0, n)
	buf = append(buf, adamMagic...)
	buf = binary.LittleEndian.AppendUint32(buf, adamVersion)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(o.t))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(o.params)))
	for i, p := range o.params {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(p.Name)))
		buf = append(buf, p.Name...)
		buf = binary.LittleEndian.AppendUint64(buf, uint64(len(o.m[i])))
		for _, x := range o.m[i] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
		}
		for _, x := range o.v[i] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
		}
	}
	buf = binary.LittleEndian.AppendUint32(buf, crc32.ChecksumIEEE(buf))
	return buf, nil
}

// UnmarshalBinary restores state made by MarshalBinary for the same params
// (names and sizes, in order). Anything else (a short or corrupt buffer,
// another version, a different param list) fails with an error wrapping
// model.ErrBadInput and leaves o unchanged.
func (o *AdamW) UnmarshalBinary(data []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("train: adamw state: %w: "+format, append([]any{model.ErrBadInput}, args...)...)
	}
	if len(data) < 4+4+8+4+4 {
		return bad("%d bytes is too short", len(data))
	}
	if string(data[:4]) != adamMagic {
		return bad("not an AdamW state (magic %q)", data[:4])
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return bad("checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(body[4:]); v != adamVersion {
		return bad("version %d, want %d", v, adamVersion)
	}
	steps := binary.LittleEndian.Uint64(body[8:])
	if steps > math.MaxInt32 {
		return bad("step count %d", steps)
	}
	if np := binary.LittleEndian.Uint32(body[16:]); int64(np) != int64(len(o.params)) {
		return bad("%d params, want %d", np, len(o.params))
	}
	rest := body[20:]
	type span struct{ m, v []byte }
	spans := make([]span, len(o.params))
	for i, p := range o.params {
		if len(rest) < 4 {
			return bad("truncated at param %d", i)
		}
		nl := binary.LittleEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(nl) > uint64(len(rest)) {
			return bad("truncated at param %d's name", i)
		}
		if name := string(rest[:nl]); name != p.Name {
			return bad("param %d is %q, want %q", i, name, p.Name)
		}
		rest = rest[nl:]
		if len(rest) < 8 {
			return bad("truncated at param %d (%q)", i, p.Name)
		}
		ne := binary.LittleEndian.Uint64(rest)
		rest = rest[8:]
		if ne != uint64(len(p.Value)) {
			return bad("param %q has %d elements, want %d", p.Name, ne, len(p.Value))
		}
		if uint64(len(rest)) < 8*ne {
			return bad("truncated in param %q", p.Name)
		}
		spans[i] = span{m: rest[:4*ne], v: rest[4*ne : 8*ne]}
		rest = rest[8*ne:]
	}
	if len(rest) != 0 {
		return bad("%d trailing bytes", len(rest))
	}
	for i, sp := range spans {
		m, v := o.m[i], o.v[i]
		for j := range m {
			m[j] = math.Float32frombits(binary.LittleEndian.Uint32(sp.m[4*j:]))
			v[j] = math.Float32frombits(binary.LittleEndian.Uint32(sp.v[4*j:]))
		}
	}
	o.t = int(steps)
	return nil
}

// LR is the learning rate of step (counting from 0) of a run of total
// steps: a linear warm-up over w = ceil(warmupFrac*total) steps,
// base*(step+1)/w, so the first step already moves and step w-1 reaches
// base; then a linear decay base*(total-step)/(total-w), reaching 0 at
// step total (and staying there). total <= 0 gives base.
func LR(step, total int, base, warmupFrac float32) float32 {
	if total <= 0 {
		return base
	}
	if step < 0 {
		step = 0
	}
	w := 0
	if warmupFrac > 0 {
		// Rounded to float32 first so that 0.1*100 is 10, not 11.
		w = int(math.Ceil(float64(float32(warmupFrac * float32(total)))))
		w = min(w, total)
	}
	if step < w {
		return float32(float64(base) * float64(step+1) / float64(w))
	}
	if step >= total {
		return 0
	}
	return float32(float64(base) * float64(total-step) / float64(total-w))
}
