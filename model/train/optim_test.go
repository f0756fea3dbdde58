package train

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"slices"
	"testing"

	"github.com/smile-vplm/smile/model"
)

func TestAdamWOneStep(t *testing.T) {
	w := &Param{Name: "w", Value: []float32{1, -2}, Grad: []float32{0.5, -0.1}, Decay: true}
	b := &Param{Name: "b", Value: []float32{1}, Grad: []float32{0.5}}
	o := NewAdamW([]*Param{w, b}, AdamWConfig{WeightDecay: 0.01})
	norm := o.Step(0.1)
	if want := math.Sqrt(0.25 + 0.01 + 0.25); math.Abs(norm-want) > 1e-7 {
		t.Fatalf("grad norm %v, want %v", norm, want)
	}
	// Step 1: m = 0.1g, v = 0.001g^2, so mhat = g, vhat = g^2 and the
	// update is lr*g/(|g|+eps); decay multiplies by 1 - lr*wd = 0.999.
	//   w0: 1*0.999 - 0.1*0.5/(0.5+1e-8)     = 0.89900000200
	//   w1: -2*0.999 + 0.1*0.1/(0.1+1e-8)    = -1.89800001000
	//   b:  1 - 0.1*0.5/(0.5+1e-8) (no decay) = 0.90000000200
	for _, c := range []struct {
		got  float32
		want float64
	}{{w.Value[0], 0.899000002}, {w.Value[1], -1.89800001}, {b.Value[0], 0.900000002}} {
		if math.Abs(float64(c.got)-c.want) > 1e-7 {
			t.Errorf("value %v, want %v", c.got, c.want)
		}
	}
	if o.Steps() != 1 {
		t.Fatalf("Steps = %d", o.Steps())
	}
	for _, p := range []*Param{w, b} {
		for _, g := range p.Grad {
			if g != 0 {
				t.Fatalf("%s's grad not zeroed: %v", p.Name, p.Grad)
			}
		}
	}
	// Step 2 with the same gradients, by hand: m = 0.19g, v = 0.001999g^2,
	// mhat = 0.19/0.19 g = g, vhat = g^2 again: the same-size step.
	w.Grad[0], w.Grad[1], b.Grad[0] = 0.5, -0.1, 0.5
	o.Step(0.1)
	if want := 0.899000002*0.999 - 0.1*0.5/(0.5+1e-8); math.Abs(float64(w.Value[0])-want) > 1e-7 {
		t.Fatalf("step 2: %v, want %v", w.Value[0], want)
	}
}

func TestAdamWClip(t *testing.T) {
	p := &Param{Name: "p", Value: []float32{0, 0}, Grad: []float32{3, 4}}
	o := NewAdamW([]*Param{p}, AdamWConfig{ClipNorm: 1})
	if norm := o.Step(0.01); norm != 5 {
		t.Fatalf("grad norm %v, want 5 (before clipping)", norm)
	}
	// The moments saw the clipped gradient (0.6, 0.8).
	// (Relative tolerances: the betas are float32, 1-0.999f = 0.000999987.)
	near := func(got float32, want float64) bool { return math.Abs(float64(got)-want) <= 1e-4*want }
	if m := o.m[0]; !near(m[0], 0.06) || !near(m[1], 0.08) {
		t.Fatalf("m = %v, want 0.1*(0.6, 0.8)", m)
	}
	if v := o.v[0]; !near(v[0], 0.001*0.36) || !near(v[1], 0.001*0.64) {
		t.Fatalf("v = %v, want 0.001*(0.36, 0.64)", v)
	}
	// Under the limit nothing is scaled.
	p.Grad[0], p.Grad[1] = 0.3, 0.4
	o2 := NewAdamW([]*Param{p}, AdamWConfig{ClipNorm: 1})
	o2.Step(0.01)
	if m := o2.m[0]; !near(m[0], 0.03) || !near(m[1], 0.04) {
		t.Fatalf("unclipped m = %v", m)
	}
}

func TestAdamWDecayOnlyDecayParams(t *testing.T) {
	w := &Param{Name: "w", Value: []float32{2, -4}, Grad: make([]float32, 2), Decay: true}
	b := &Param{Name: "b", Value: []float32{2, -4}, Grad: make([]float32, 2)}
	o := NewAdamW([]*Param{w, b}, AdamWConfig{WeightDecay: 0.5})
	o.Step(0.1) // zero gradients: only decay moves anything
	if w.Value[0] != 2*0.95 || w.Value[1] != -4*0.95 {
		t.Fatalf("decayed %v, want 0.95 * (2, -4)", w.Value)
	}
	if b.Value[0] != 2 || b.Value[1] != -4 {
		t.Fatalf("non-decay param moved: %v", b.Value)
	}
}

func TestAdamWNonFiniteSkips(t *testing.T) {
	p := &Param{Name: "p", Value: []float32{1, 2}, Grad: []float32{float32(math.NaN()), 1}}
	o := NewAdamW([]*Param{p}, AdamWConfig{})
	if norm := o.Step(0.1); !math.IsNaN(norm) {
		t.Fatalf("norm %v, want NaN", norm)
	}
	if p.Value[0] != 1 || p.Value[1] != 2 || o.Steps() != 0 || p.Grad[0] != 0 || p.Grad[1] != 0 {
		t.Fatalf("after a NaN step: values %v, grads %v, steps %d", p.Value, p.Grad, o.Steps())
	}
}

// quadProblem is a seeded least-squares problem: params w (decayed) and b,
// loss sum((w*x_i + b - t_i)^2) over a few fixed points, gradients by hand.
type quadProblem struct {
	w, b   *Param
	x, tgt []float32
}

func newQuadProblem(seed uint64) *quadProblem {
	rng := newRNG(seed)
	const n = 16
	return &quadProblem{
		w:   &Param{Name: "w", Value: randSlice(rng, n, 1), Grad: make([]float32, n), Decay: true},
		b:   &Param{Name: "b", Value: randSlice(rng, n, 1), Grad: make([]float32, n)},
		x:   randSlice(rng, n, 2),
		tgt: randSlice(rng, n, 3),
	}
}

func (q *quadProblem) params() []*Param { return []*Param{q.w, q.b} }

func (q *quadProblem) backward() float64 {
	var loss float64
	for i, x := range q.x {
		e := q.w.Value[i]*x + q.b.Value[i] - q.tgt[i]
		loss += float64(e) * float64(e)
		q.w.Grad[i] += 2 * e * x
		q.b.Grad[i] += 2 * e
	}
	return loss
}

func (q *quadProblem) run(o *AdamW, from, to int) {
	for s := from; s < to; s++ {
		q.backward()
		o.Step(LR(s, 50, 0.05, 0.1))
	}
}

func adamCfg() AdamWConfig { return AdamWConfig{WeightDecay: 0.01, ClipNorm: 5} }

func TestAdamWDeterministic(t *testing.T) {
	a, b := newQuadProblem(30), newQuadProblem(30)
	first := a.backward()
	clear(a.w.Grad)
	clear(a.b.Grad)
	a.run(NewAdamW(a.params(), adamCfg()), 0, 50)
	b.run(NewAdamW(b.params(), adamCfg()), 0, 50)
	if !slices.Equal(a.w.Value, b.w.Value) || !slices.Equal(a.b.Value, b.b.Value) {
		t.Fatal("two seeded runs differ")
	}
	last := a.backward()
	if !(last < first/10) {
		t.Fatalf("loss %v -> %v: AdamW did not fit the problem", first, last)
	}
}

func TestAdamWMarshalRoundTrip(t *testing.T) {
	whole := newQuadProblem(31)
	whole.run(NewAdamW(whole.params(), adamCfg()), 0, 50)

	part := newQuadProblem(31)
	o := NewAdamW(part.params(), adamCfg())
	part.run(o, 0, 20)
	state, err := o.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// A new process: params restored from their values, the optimiser from
	// its state.
	resumed := newQuadProblem(31)
	copy(resumed.w.Value, part.w.Value)
	copy(resumed.b.Value, part.b.Value)
	o2 := NewAdamW(resumed.params(), adamCfg())
	if err := o2.UnmarshalBinary(state); err != nil {
		t.Fatal(err)
	}
	if o2.Steps() != 20 {
		t.Fatalf("Steps after restore = %d", o2.Steps())
	}
	again, _ := o2.MarshalBinary()
	if !slices.Equal(state, again) {
		t.Fatal("re-marshalled state differs")
	}
	resumed.run(o2, 20, 50)
	if !slices.Equal(resumed.w.Value, whole.w.Value) || !slices.Equal(resumed.b.Value, whole.b.Value) {
		t.Fatal("resumed run differs from the uninterrupted one")
	}
}

// reseal recomputes the trailing checksum of a state edited in a test.
func reseal(b []byte) []byte {
	body := b[:len(b)-4]
	return binary.LittleEndian.AppendUint32(slices.Clone(body), crc32.ChecksumIEEE(body))
}

func TestAdamWUnmarshalErrors(t *testing.T) {
	q := newQuadProblem(32)
	o := NewAdamW(q.params(), adamCfg())
	q.run(o, 0, 3)
	good, _ := o.MarshalBinary()
	before := slices.Clone(o.m[0])

	other := func(params ...*Param) []byte {
		s, _ := NewAdamW(params, AdamWConfig{}).MarshalBinary()
		return s
	}
	flip := func(i int) []byte {
		b := slices.Clone(good)
		b[i] ^= 1
		return b
	}
	version := slices.Clone(good)
	binary.LittleEndian.PutUint32(version[4:], 2)
	trailing := reseal(append(slices.Clone(good[:len(good)-4]), 0, 0, 0, 0, 0))
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"short", good[:10]},
		{"truncated", good[:len(good)-9]},
		{"bad magic", reseal(flip(0))},
		{"corrupt payload", flip(40)},
		{"corrupt checksum", flip(len(good) - 1)},
		{"other version", reseal(version)},
		{"trailing bytes", trailing},
		{"fewer params", other(q.w)},
		{"other sizes", other(&Param{Name: "w", Value: make([]float32, 15)}, q.b)},
		{"other names", other(&Param{Name: "v", Value: make([]float32, 16)}, q.b)},
		{"swapped params", other(q.b, q.w)},
	} {
		err := o.UnmarshalBinary(tc.data)
		if !errors.Is(err, model.ErrBadInput) {
			t.Errorf("%s: err = %v, want model.ErrBadInput", tc.name, err)
		}
	}
	if !slices.Equal(o.m[0], before) || o.Steps() != 3 {
		t.Fatal("a failed UnmarshalBinary changed the state")
	}
	if err := o.UnmarshalBinary(good); err != nil {
		t.Fatal(err)
	}
}

func FuzzAdamWUnmarshal(f *testing.F) {
	newOpt := func() *AdamW {
		return NewAdamW([]*Param{
			{Name: "w", Value: make([]float32, 3), Grad: make([]float32, 3)},
			{Name: "bias", Value: make([]float32, 1), Grad: make([]float32, 1)},
		}, AdamWConfig{})
	}
	o := newOpt()
	o.params[0].Grad[1] = 1
	o.Step(0.1)
	good, _ := o.MarshalBinary()
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte("SMAW"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		o := newOpt()
		if err := o.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, model.ErrBadInput) {
				t.Fatalf("error %v does not wrap model.ErrBadInput", err)
			}
			return
		}
		// Accepted states are canonical.
		again, _ := o.MarshalBinary()
		if !slices.Equal(again, data) {
			t.Fatal("accepted state does not re-marshal to itself")
		}
	})
}

func TestLR(t *testing.T) {
	for _, tc := range []struct {
		step, total int
		frac        float32
		want        float32
	}{
		{0, 100, 0.1, 0.1},  // warm-up over 10 steps: (0+1)/10
		{4, 100, 0.1, 0.5},  // 5/10
		{9, 100, 0.1, 1},    // the last warm-up step reaches base
		{10, 100, 0.1, 1},   // decay starts at base: (100-10)/90
		{55, 100, 0.1, 0.5}, // halfway down
		{99, 100, 0.1, 1. / 90},
		{100, 100, 0.1, 0}, // the end
		{150, 100, 0.1, 0}, // past it
		{0, 100, 0, 1},     // no warm-up
		{50, 100, 0, 0.5},
		{0, 10, 0.05, 1},  // ceil(0.5) = 1 warm-up step
		{1, 10, 0.05, 1},  // then (10-1)/9
		{0, 3, 1, 1. / 3}, // all warm-up
		{2, 3, 1, 1},
		{5, 0, 0.1, 1}, // no schedule
		{0, 1, 0, 1},
	} {
		got := LR(tc.step, tc.total, 1, tc.frac)
		if math.Abs(float64(got-tc.want)) > 1e-7 {
			t.Errorf("LR(%d, %d, 1, %g) = %v, want %v", tc.step, tc.total, tc.frac, got, tc.want)
		}
	}
	if got := LR(4, 100, 2e-3, 0.1); math.Abs(float64(got)-1e-3) > 1e-10 {
		t.Errorf("LR scales with base: %v", got)
	}
}
