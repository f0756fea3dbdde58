package gputest

import (
	"fmt"
	"math"
	"strings"

	"github.com/smile-vplm/smile/gpu"
)

var allActs = []gpu.Activation{gpu.ActNone, gpu.ActReLU, gpu.ActGELU, gpu.ActGELUTanh, gpu.ActTanh}

// refAct is the float64 reference of each activation.
func refAct(x float64, act gpu.Activation) float64 {
	switch act {
	case gpu.ActReLU:
		return math.Max(x, 0)
	case gpu.ActGELU:
		return 0.5 * x * math.Erfc(-x/math.Sqrt2)
	case gpu.ActGELUTanh:
		// 0.5x(1+tanh(u)) = x*sigmoid(2u), which does not cancel for x < 0.
		u := math.Sqrt(2/math.Pi) * (x + 0.044715*x*x*x)
		return x / (1 + math.Exp(-2*u))
	case gpu.ActTanh:
		return math.Tanh(x)
	}
	return x
}

// actTol: a few float32 ulps relative, for inputs that are float32 values.
var actTol = relTol(1e-6, 1e-30)

func testGather(e *env) {
	for r := 0; r < 6; r++ {
		rows, cols, n := e.size(), e.size(), e.size()
		tab := e.mat(rows, cols, e.layout(), -1, 1)
		dst := e.mat(n, cols, e.layout(), -1, 1)
		ids := make([]int32, n)
		for i := range ids {
			ids[i] = int32(e.rng.IntN(rows))
		}
		acc := r%2 == 1
		tv, dv := tab.get(), dst.get()
		want := make([]float64, n*cols)
		for i, id := range ids {
			for j := 0; j < cols; j++ {
				want[i*cols+j] = tv[int(id)*cols+j]
				if acc {
					want[i*cols+j] += dv[i*cols+j]
				}
			}
		}
		e.noErr("Gather", e.dev.Gather(dst.m, tab.m, ids, acc))
		e.check(fmt.Sprintf("Gather acc=%v", acc), dst, want, relTol(0x1p-23, 0))
	}
	// Every id is checked before anything is written; the error names it.
	tab := e.mat(10, 4, dense, -1, 1)
	dst := e.mat(3, 4, dense, -1, 1)
	for _, bad := range []int32{-1, 10, math.MaxInt32, math.MinInt32} {
		err := e.dev.Gather(dst.m, tab.m, []int32{0, 9, bad}, false)
		e.wantErr(fmt.Sprintf("Gather id %d", bad), err, gpu.ErrOutOfRange)
		if err != nil && !strings.Contains(err.Error(), "ids[2]") {
			e.t.Errorf("Gather id %d: error %q does not name ids[2]", bad, err)
		}
	}
	e.wantErr("Gather rows", e.dev.Gather(dst.m, tab.m, []int32{1, 2}, false), gpu.ErrShape)
	e.wantErr("Gather cols", e.dev.Gather(dst.m.Colsl(0, 3), tab.m, []int32{1, 2, 3}, false), gpu.ErrShape)
	e.unchanged("Gather after errors", dst)
	e.noErr("Gather empty", e.dev.Gather(dst.m.Rowsl(0, 0), tab.m, nil, false))
}

func testActivations(e *env) {
	for _, act := range allActs {
		for r := 0; r < 3; r++ {
			rows, cols := e.size(), e.size()
			x := e.mat(rows, cols, e.layout(), -8, 8)
			if r == 0 {
				// Special points: 0, tiny, the tails.
				vals := x.get()
				special := []float64{0, 1e-8, -1e-8, 1e-3, -1e-3, 0.5, -0.75, 3, -3, 6, -6, 12, -12, 40, -40}
				v32 := make([]float32, len(vals))
				for i := range vals {
					v32[i] = float32(vals[i])
					if i < len(special) {
						v32[i] = float32(special[i])
					}
				}
				e.fill(x, v32)
			}
			xv := x.get()
			want := make([]float64, len(xv))
			for i, v := range xv {
				want[i] = refAct(v, act)
			}
			e.noErr("Activate", e.dev.Activate(x.m, act))
			e.check("Activate "+act.String(), x, want, actTol)
		}
		// AddBias with the fused activation.
		rows, cols := e.size(), e.size()
		x := e.mat(rows, cols, e.layout(), -4, 4)
		bias := e.mat(1, cols, e.layout(), -2, 2)
		xv, bv := x.get(), bias.get()
		want := make([]float64, len(xv))
		for i := range xv {
			want[i] = refAct(float64(float32(xv[i]+bv[i%cols])), act)
		}
		e.noErr("AddBias", e.dev.AddBias(x.m, bias.m, act))
		e.check("AddBias "+act.String(), x, want, actTol)
		e.unchanged("AddBias bias", bias)
	}
	// A large input goes through the multi-threaded path.
	x := e.mat(150, 257, dense, -5, 5)
	xv := x.get()
	want := make([]float64, len(xv))
	for i, v := range xv {
		want[i] = refAct(v, gpu.ActGELU)
	}
	e.noErr("Activate big", e.dev.Activate(x.m, gpu.ActGELU))
	e.check("Activate big", x, want, actTol)

	bias := e.mat(1, 256, dense, -1, 1)
	e.wantErr("AddBias shape", e.dev.AddBias(x.m, bias.m, gpu.ActNone), gpu.ErrShape)
	e.wantErr("Activate unknown", e.dev.Activate(x.m, gpu.Activation(200)), gpu.ErrOutOfRange)
	e.unchanged("Activate after errors", x)
}

func testAddScale(e *env) {
	for r := 0; r < 8; r++ {
		rows, cols := e.size(), e.size()
		a := e.mat(rows, cols, e.layout(), -1, 1)
		b := e.mat(rows, cols, e.layout(), -1, 1)
		av, bv := a.get(), b.get()
		want := make([]float64, len(av))
		for i := range av {
			want[i] = float64(float32(av[i] + bv[i]))
		}
		switch r % 3 {
		case 0:
			dst := e.mat(rows, cols, e.layout(), -1, 1)
			e.noErr("Add", e.dev.Add(dst.m, a.m, b.m))
			e.check("Add", dst, want, relTol(0, 0))
			e.unchanged("Add a", a)
		case 1: // dst = a
			e.noErr("Add", e.dev.Add(a.m, a.m, b.m))
			e.check("Add in place (a)", a, want, relTol(0, 0))
		case 2: // dst = b
			e.noErr("Add", e.dev.Add(b.m, a.m, b.m))
			e.check("Add in place (b)", b, want, relTol(0, 0))
		}
	}
	a := e.mat(6, 5, dense, -1, 1)
	b := e.mat(6, 4, dense, -1, 1)
	e.wantErr("Add shape", e.dev.Add(a.m, a.m, b.m), gpu.ErrShape)
	e.wantErr("Add partial overlap", e.dev.Add(a.m.Rowsl(1, 6), a.m.Rowsl(0, 5), a.m.Rowsl(0, 5)), gpu.ErrShape)
	e.unchanged("Add after errors", a)

	for _, alpha := range []float32{0, -2.5, 1, 0.1} {
		x := e.mat(e.size(), e.size(), e.layout(), -1, 1)
		xv := x.get()
		want := make([]float64, len(xv))
		for i, v := range xv {
			want[i] = float64(float32(v) * alpha)
		}
		e.noErr("Scale", e.dev.Scale(x.m, alpha))
		e.check(fmt.Sprintf("Scale %g", alpha), x, want, relTol(0, 0))
	}
}

func testLayerNorm(e *env) {
	for r := 0; r < 8; r++ {
		rows, cols := e.size(), e.size()
		if r == 7 {
			rows, cols = 100, 768
		}
		lo, hi := -1.0, 1.0
		if r%2 == 1 {
			lo, hi = 1000, 1000.5 // a large mean: one-pass variance would cancel
		}
		x := e.mat(rows, cols, e.layout(), lo, hi)
		gamma := e.mat(1, cols, e.layout(), 0.5, 1.5)
		beta := e.mat(1, cols, e.layout(), -1, 1)
		eps := float32(1e-5)
		xv, gv, bv := x.get(), gamma.get(), beta.get()
		want := make([]float64, len(xv))
		scale := make([]float64, len(xv))
		for i := 0; i < rows; i++ {
			row := xv[i*cols : (i+1)*cols]
			var mean, v float64
			for _, x := range row {
				mean += x
			}
			mean /= float64(cols)
			for _, x := range row {
				v += (x - mean) * (x - mean)
			}
			inv := 1 / math.Sqrt(v/float64(cols)+float64(eps))
			for j, x := range row {
				t := (x - mean) * inv * gv[j]
				want[i*cols+j] = t + bv[j]
				scale[i*cols+j] = math.Abs(t) + math.Abs(bv[j])
			}
		}
		tol := func(i, j int, _ float64) float64 { return 1e-6*scale[i*cols+j] + 1e-30 }
		if r%3 == 2 {
			e.noErr("LayerNorm", e.dev.LayerNorm(x.m, x.m, gamma.m, beta.m, eps))
			e.check("LayerNorm in place", x, want, tol)
		} else {
			dst := e.mat(rows, cols, e.layout(), -1, 1)
			e.noErr("LayerNorm", e.dev.LayerNorm(dst.m, x.m, gamma.m, beta.m, eps))
			e.check(fmt.Sprintf("LayerNorm %d", r), dst, want, tol)
			e.unchanged("LayerNorm x", x)
		}
	}
	x := e.mat(4, 6, dense, -1, 1)
	g := e.mat(1, 5, dense, -1, 1)
	b := e.mat(1, 6, dense, -1, 1)
	e.wantErr("LayerNorm gamma", e.dev.LayerNorm(x.m, x.m, g.m, b.m, 1e-5), gpu.ErrShape)
	e.wantErr("LayerNorm dst", e.dev.LayerNorm(x.m.Rowsl(0, 3), x.m, b.m, b.m, 1e-5), gpu.ErrShape)
	e.unchanged("LayerNorm after errors", x)
}

func testSoftmax(e *env) {
	for r := 0; r < 8; r++ {
		rows, cols := e.size(), e.size()
		if r == 7 {
			rows, cols = 200, 300
		}
		x := e.mat(rows, cols, e.layout(), -10, 10)
		var valid []int32
		if r%2 == 1 {
			valid = make([]int32, rows)
			for i := range valid {
				valid[i] = int32(e.rng.IntN(cols + 1))
			}
			valid[0] = 0
			valid[rows-1] = int32(cols)
		}
		xv := x.get()
		want := make([]float64, len(xv))
		for i := 0; i < rows; i++ {
			n := cols
			if valid != nil {
				n = int(valid[i])
			}
			row := xv[i*cols : i*cols+n]
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, v)
			}
			var s float64
			for _, v := range row {
				s += math.Exp(v - mx)
			}
			for j, v := range row {
				want[i*cols+j] = math.Exp(v-mx) / s
			}
		}
		e.noErr("Softmax", e.dev.Softmax(x.m, valid))
		e.check(fmt.Sprintf("Softmax valid=%v", valid != nil), x, want, relTol(2e-6, 1e-9))
	}
	x := e.mat(3, 4, dense, -1, 1)
	e.wantErr("Softmax valid len", e.dev.Softmax(x.m, []int32{1, 2}), gpu.ErrShape)
	e.wantErr("Softmax valid > cols", e.dev.Softmax(x.m, []int32{1, 5, 2}), gpu.ErrOutOfRange)
	e.wantErr("Softmax valid < 0", e.dev.Softmax(x.m, []int32{1, -1, 2}), gpu.ErrOutOfRange)
	e.unchanged("Softmax after errors", x)
}

func testL2Normalize(e *env) {
	for r := 0; r < 6; r++ {
		rows, cols := e.size(), e.size()
		x := e.mat(rows, cols, e.layout(), -3, 3)
		if r == 0 {
			e.fill(x, make([]float32, rows*cols)) // zero rows stay zero
		}
		eps := float32(1e-12)
		xv := x.get()
		want := make([]float64, len(xv))
		for i := 0; i < rows; i++ {
			var s float64
			for _, v := range xv[i*cols : (i+1)*cols] {
				s += v * v
			}
			inv := 1 / math.Sqrt(math.Max(s, float64(eps)))
			for j := 0; j < cols; j++ {
				want[i*cols+j] = xv[i*cols+j] * inv
			}
		}
		e.noErr("L2Normalize", e.dev.L2Normalize(x.m, eps))
		e.check("L2Normalize", x, want, relTol(1e-6, 1e-30))
	}
}

func testMeanPool(e *env) {
	for r := 0; r < 6; r++ {
		cols := e.size()
		// Offsets with empty segments, not necessarily starting at row 0.
		offsets := []int{e.rng.IntN(3)}
		for s := 0; s < 1+e.rng.IntN(6); s++ {
			offsets = append(offsets, offsets[len(offsets)-1]+[]int{0, 1, 3, 20}[e.rng.IntN(4)])
		}
		rows := offsets[len(offsets)-1] + e.rng.IntN(3)
		x := e.mat(rows, cols, e.layout(), -1, 1)
		dst := e.mat(len(offsets)-1, cols, e.layout(), -1, 1)
		xv := x.get()
		want := make([]float64, (len(offsets)-1)*cols)
		for s := 0; s+1 < len(offsets); s++ {
			n := offsets[s+1] - offsets[s]
			for j := 0; j < cols; j++ {
				var sum float64
				for i := offsets[s]; i < offsets[s+1]; i++ {
					sum += xv[i*cols+j]
				}
				want[s*cols+j] = sum / math.Max(float64(n), 1)
			}
		}
		e.noErr("MeanPool", e.dev.MeanPool(dst.m, x.m, offsets))
		e.check(fmt.Sprintf("MeanPool %v", offsets), dst, want, relTol(1e-6, 1e-7))
	}
	x := e.mat(5, 3, dense, -1, 1)
	dst := e.mat(2, 3, dense, -1, 1)
	e.wantErr("MeanPool decreasing", e.dev.MeanPool(dst.m, x.m, []int{0, 3, 2}), gpu.ErrOutOfRange)
	e.wantErr("MeanPool past rows", e.dev.MeanPool(dst.m, x.m, []int{0, 3, 6}), gpu.ErrOutOfRange)
	e.wantErr("MeanPool negative", e.dev.MeanPool(dst.m, x.m, []int{-1, 3, 5}), gpu.ErrOutOfRange)
	e.wantErr("MeanPool rows", e.dev.MeanPool(dst.m, x.m, []int{0, 5}), gpu.ErrShape)
	e.wantErr("MeanPool no offsets", e.dev.MeanPool(dst.m.Rowsl(0, 0), x.m, nil), gpu.ErrShape)
	e.unchanged("MeanPool after errors", dst)
}
