package train

import (
	"math"
	"testing"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/gpu/cpu"
)

func TestLinearGrad(t *testing.T) {
	b := testDevice(t)
	const rows, in, out = 5, 4, 3
	for _, withBias := range []bool{true, false} {
		rng := newRNG(1)
		x := randSlice(rng, rows*in, 1)
		w := randSlice(rng, in*out, 1)
		var bias []float32
		if withBias {
			bias = randSlice(rng, out, 1)
		}
		r := randSlice(rng, rows*out, 1)
		y := make([]float32, rows*out)
		eval := func() float64 {
			Linear(b, y, x, rows, in, out, w, bias)
			return weighted(r, y)
		}
		dx, dw, db := filled(len(x), gradInit), filled(len(w), gradInit), filled(out, gradInit)
		if !withBias {
			db = nil
		}
		LinearBackward(b, dx, dw, db, r, x, w, rows, in, out)
		checkGrad(t, "Linear dx", 0, eval, x, minus(dx, gradInit), 1e-3)
		checkGrad(t, "Linear dw", 0, eval, w, minus(dw, gradInit), 1e-3)
		if withBias {
			checkGrad(t, "Linear dbias", 0, eval, bias, minus(db, gradInit), 1e-3)
		}
	}
	// nil gradient outputs are skipped.
	LinearBackward(b, nil, nil, nil, make([]float32, rows*out), make([]float32, rows*in), make([]float32, in*out), rows, in, out)
}

func TestLinearForward(t *testing.T) {
	b := testDevice(t)
	x := []float32{1, 2, 3, 4}        // 2x2
	w := []float32{1, 0, -1, 2, 1, 0} // 2x3
	y := make([]float32, 6)
	Linear(b, y, x, 2, 2, 3, w, []float32{0.5, 0, -1})
	want := []float32{1 + 4 + 0.5, 2, -1 - 1, 3 + 8 + 0.5, 4, -3 - 1}
	for i := range want {
		if y[i] != want[i] {
			t.Fatalf("y = %v, want %v", y, want)
		}
	}
}

func TestLayerNormGrad(t *testing.T) {
	const rows, cols = 4, 7
	rng := newRNG(2)
	x := randSlice(rng, rows*cols, 2)
	for i := range x[:cols] {
		x[i] += 5 // a row with a large mean
	}
	gamma := randSlice(rng, cols, 1.5)
	beta := randSlice(rng, cols, 1)
	r := randSlice(rng, rows*cols, 1)
	y := make([]float32, rows*cols)
	mean, rstd := make([]float32, rows), make([]float32, rows)
	const eps = 1e-5
	eval := func() float64 {
		LayerNorm(y, mean, rstd, x, gamma, beta, rows, cols, eps)
		return weighted(r, y)
	}
	eval()
	dx, dg, db := filled(len(x), gradInit), filled(cols, gradInit), filled(cols, gradInit)
	LayerNormBackward(dx, dg, db, r, x, mean, rstd, gamma, rows, cols)
	checkGrad(t, "LayerNorm dx", 0, eval, x, minus(dx, gradInit), 1e-3)
	checkGrad(t, "LayerNorm dgamma", 0, eval, gamma, minus(dg, gradInit), 1e-3)
	checkGrad(t, "LayerNorm dbeta", 0, eval, beta, minus(db, gradInit), 1e-3)

	// Each gradient output alone gives the same values.
	dx2 := filled(len(x), gradInit)
	LayerNormBackward(dx2, nil, nil, r, x, mean, rstd, gamma, rows, cols)
	dg2 := filled(cols, gradInit)
	LayerNormBackward(nil, dg2, nil, r, x, mean, rstd, gamma, rows, cols)
	for i := range dx {
		if dx[i] != dx2[i] {
			t.Fatalf("dx alone differs at %d: %g vs %g", i, dx2[i], dx[i])
		}
	}
	for i := range dg {
		if dg[i] != dg2[i] {
			t.Fatalf("dgamma alone differs at %d: %g vs %g", i, dg2[i], dg[i])
		}
	}
}

func TestActivationGrad(t *testing.T) {
	for _, act := range []gpu.Activation{gpu.ActNone, gpu.ActReLU, gpu.ActGELU, gpu.ActGELUTanh, gpu.ActTanh} {
		t.Run(act.String(), func(t *testing.T) {
			rng := newRNG(3)
			x := randSlice(rng, 64, 4)
			x = append(x, -7, -3.3, 3.3, 7, 0.003, -0.003, 0.5, -0.5)
			if act == gpu.ActReLU {
				for i, v := range x { // keep clear of the kink
					if math.Abs(float64(v)) < 0.05 {
						x[i] = 0.05 + v
					}
				}
			}
			r := randSlice(rng, len(x), 1)
			y := make([]float32, len(x))
			eval := func() float64 {
				Activate(act, y, x)
				return weighted(r, y)
			}
			dx := filled(len(x), gradInit)
			ActivateBackward(act, dx, r, x)
			checkGrad(t, act.String(), 0, eval, x, minus(dx, gradInit), 1e-3)
		})
	}
}

func TestMeanPoolGrad(t *testing.T) {
	const cols = 5
	offsets := []int{0, 3, 4, 4, 9} // lengths 3, 1, 0, 5
	rng := newRNG(4)
	x := randSlice(rng, 9*cols, 1)
	r := randSlice(rng, 4*cols, 1)
	y := make([]float32, 4*cols)
	eval := func() float64 {
		MeanPool(y, x, offsets, cols)
		return weighted(r, y)
	}
	eval()
	for j := 0; j < cols; j++ {
		if y[2*cols+j] != 0 {
			t.Fatalf("empty segment pooled to %v", y[2*cols:3*cols])
		}
	}
	dx := filled(len(x), gradInit)
	MeanPoolBackward(dx, r, offsets, cols)
	checkGrad(t, "MeanPool", 0, eval, x, minus(dx, gradInit), 1e-3)
}

func TestL2NormalizeGrad(t *testing.T) {
	const cols = 6
	for _, tc := range []struct {
		name  string
		scale float32 // of x's entries
		eps   float32
		h     float64
	}{
		{"normal", 1, 1e-12, gradStep},
		{"clamped", 0.3, 2, 1e-3},          // sum x^2 <= 6*0.09 < eps
		{"just above clamp", 0.7, 2, 1e-3}, // rescaled below to sum x^2 = 1.2*eps
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := newRNG(5)
			const rows = 4
			x := randSlice(rng, rows*cols, tc.scale)
			if tc.name == "just above clamp" {
				// Scale each row to sum x^2 = 1.2*eps: normalised, with
				// the clamp 10% away (beyond any perturbation).
				for r := 0; r < rows; r++ {
					row := x[r*cols : (r+1)*cols]
					var s float64
					for _, v := range row {
						s += float64(v) * float64(v)
					}
					f := math.Sqrt(1.2 * float64(tc.eps) / s)
					for j := range row {
						row[j] = float32(float64(row[j]) * f)
					}
				}
			}
			r := randSlice(rng, rows*cols, 1)
			y, norm := make([]float32, rows*cols), make([]float32, rows)
			eval := func() float64 {
				L2Normalize(y, norm, x, rows, cols, tc.eps)
				return weighted(r, y)
			}
			eval()
			clamped := 0
			for _, n := range norm {
				if n <= float32(math.Sqrt(float64(tc.eps))) {
					clamped++
				}
			}
			if want := map[string]int{"normal": 0, "clamped": rows, "just above clamp": 0}[tc.name]; clamped != want {
				t.Fatalf("%d rows clamped, want %d (norms %v)", clamped, want, norm)
			}
			dx := filled(len(x), gradInit)
			L2NormalizeBackward(dx, r, y, norm, rows, cols, tc.eps)
			checkGradStep(t, "L2Normalize "+tc.name, 0, eval, x, minus(dx, gradInit), 1e-3, tc.h)
		})
	}
}

func TestAddTo(t *testing.T) {
	dst := []float32{1, 2, 3}
	AddTo(dst, []float32{0.5, -2, 1})
	if dst[0] != 1.5 || dst[1] != 0 || dst[2] != 4 {
		t.Fatalf("AddTo = %v", dst)
	}
}

// devMat uploads host data as a rows x cols matrix on d.
func devMat(t testing.TB, d *cpu.Device, rows, cols int, data []float32) gpu.Mat {
	t.Helper()
	buf, err := d.Alloc(max(rows*cols, 1))
	if err != nil {
		t.Fatal(err)
	}
	m := gpu.NewMat(buf, rows, cols)
	if data != nil {
		if err := d.Upload(m, data); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func download(t testing.TB, d *cpu.Device, m gpu.Mat) []float32 {
	t.Helper()
	out := make([]float32, m.Rows*m.Cols)
	if err := d.Download(out, m); err != nil {
		t.Fatal(err)
	}
	return out
}

func maxAbsDiff(t testing.TB, name string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	worst, at := 0.0, 0
	for i := range got {
		if d := math.Abs(float64(got[i]) - float64(want[i])); d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
	}
	if !(worst <= tol) {
		t.Errorf("%s: max |diff| %.3g at %d (%g vs %g), want <= %g", name, worst, at, got[at], want[at], tol)
	}
}

// TestForwardMatchesDevice runs the forward ops and gpu/cpu's serving
// kernels on the same inputs.
func TestForwardMatchesDevice(t *testing.T) {
	d := testDevice(t)
	rng := newRNG(6)
	const rows, cols = 37, 45 // cols not a multiple of 4
	x := randSlice(rng, rows*cols, 3)
	x[0], x[1], x[2], x[3] = -20, 20, 1e-3, -9 // tails
	for i := cols; i < 2*cols; i++ {
		x[i] = 1e-4 * x[i] // a nearly-zero row for L2 (clamped)
	}
	gamma := randSlice(rng, cols, 2)
	beta := randSlice(rng, cols, 1)
	const eps = 1e-5

	t.Run("LayerNorm", func(t *testing.T) {
		got := make([]float32, rows*cols)
		LayerNorm(got, make([]float32, rows), make([]float32, rows), x, gamma, beta, rows, cols, eps)
		dst := devMat(t, d, rows, cols, nil)
		if err := d.LayerNorm(dst, devMat(t, d, rows, cols, x), devMat(t, d, 1, cols, gamma), devMat(t, d, 1, cols, beta), eps); err != nil {
			t.Fatal(err)
		}
		maxAbsDiff(t, "LayerNorm", got, download(t, d, dst), 1e-5)
	})
	for _, act := range []gpu.Activation{gpu.ActNone, gpu.ActReLU, gpu.ActGELU, gpu.ActGELUTanh, gpu.ActTanh} {
		t.Run(act.String(), func(t *testing.T) {
			got := make([]float32, rows*cols)
			Activate(act, got, x)
			m := devMat(t, d, rows, cols, x)
			if err := d.Activate(m, act); err != nil {
				t.Fatal(err)
			}
			maxAbsDiff(t, act.String(), got, download(t, d, m), 1e-5)
			inPlace := append([]float32(nil), x...)
			Activate(act, inPlace, inPlace)
			maxAbsDiff(t, act.String()+" in place", inPlace, got, 0)
		})
	}
	t.Run("MeanPool", func(t *testing.T) {
		offsets := []int{0, 1, 10, 10, 37}
		got := make([]float32, 4*cols)
		MeanPool(got, x, offsets, cols)
		dst := devMat(t, d, 4, cols, nil)
		if err := d.MeanPool(dst, devMat(t, d, rows, cols, x), offsets); err != nil {
			t.Fatal(err)
		}
		maxAbsDiff(t, "MeanPool", got, download(t, d, dst), 1e-5)
	})
	t.Run("L2Normalize", func(t *testing.T) {
		const l2eps = 1e-6
		got := make([]float32, rows*cols)
		L2Normalize(got, make([]float32, rows), x, rows, cols, l2eps)
		m := devMat(t, d, rows, cols, x)
		if err := d.L2Normalize(m, l2eps); err != nil {
			t.Fatal(err)
		}
		maxAbsDiff(t, "L2Normalize", got, download(t, d, m), 1e-5)
		inPlace := append([]float32(nil), x...)
		L2Normalize(inPlace, nil, inPlace, rows, cols, l2eps)
		maxAbsDiff(t, "L2Normalize in place", inPlace, got, 0)
	})
}

// TestOpsAllocate checks the per-batch ops allocate nothing once warm.
func TestOpsAllocate(t *testing.T) {
	b := testDevice(t)
	const rows, cols, heads = 24, 16, 2
	rng := newRNG(7)
	x := randSlice(rng, rows*cols, 1)
	y := make([]float32, rows*cols)
	dx := make([]float32, rows*cols)
	w := randSlice(rng, cols*cols, 1)
	dw := make([]float32, cols*cols)
	vec, dvec, dvec2 := randSlice(rng, cols, 1), make([]float32, cols), make([]float32, cols)
	mean, rstd := make([]float32, rows), make([]float32, rows)
	offsets := []int{0, 5, 6, 24}
	qkv := randSlice(rng, rows*3*cols, 1)
	dqkv := make([]float32, rows*3*cols)
	probs := make([]float32, ProbsLen(offsets, heads))
	pooled := make([]float32, 3*cols)
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"Linear", func() { Linear(b, y, x, rows, cols, cols, w, vec) }},
		{"LinearBackward", func() { LinearBackward(b, dx, dw, dvec, y, x, w, rows, cols, cols) }},
		{"LayerNorm", func() { LayerNorm(y, mean, rstd, x, vec, vec, rows, cols, 1e-5) }},
		{"LayerNormBackward", func() { LayerNormBackward(dx, dvec, dvec2, y, x, mean, rstd, vec, rows, cols) }},
		{"Activate", func() { Activate(gpu.ActGELU, y, x) }},
		{"ActivateBackward", func() { ActivateBackward(gpu.ActGELUTanh, dx, y, x) }},
		{"MeanPool", func() { MeanPool(pooled, x, offsets, cols) }},
		{"MeanPoolBackward", func() { MeanPoolBackward(dx, pooled, offsets, cols) }},
		{"L2Normalize", func() { L2Normalize(y, mean, x, rows, cols, 1e-6) }},
		{"L2NormalizeBackward", func() { L2NormalizeBackward(dx, x, y, mean, rows, cols, 1e-6) }},
		{"Attention", func() { Attention(b, y, probs, qkv, offsets, heads, cols, 0.25) }},
		{"AttentionBackward", func() { AttentionBackward(b, dqkv, y, qkv, probs, offsets, heads, cols, 0.25) }},
	} {
		if n := testing.AllocsPerRun(20, tc.f); n != 0 {
			t.Errorf("%s: %v allocations per call", tc.name, n)
		}
	}
}

func BenchmarkLayerNormBackward(b *testing.B) {
	const rows, cols = 512, 768
	rng := newRNG(8)
	x, dy := randSlice(rng, rows*cols, 1), randSlice(rng, rows*cols, 1)
	gamma := randSlice(rng, cols, 1)
	y, dx := make([]float32, rows*cols), make([]float32, rows*cols)
	dg, db := make([]float32, cols), make([]float32, cols)
	mean, rstd := make([]float32, rows), make([]float32, rows)
	LayerNorm(y, mean, rstd, x, gamma, gamma, rows, cols, 1e-12)
	iters := 0
	for b.Loop() {
		LayerNormBackward(dx, dg, db, dy, x, mean, rstd, gamma, rows, cols)
		iters++
	}
	b.ReportMetric(float64(rows*iters)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkActivateBackwardGELU(b *testing.B) {
	const n = 512 * 3072
	rng := newRNG(9)
	x, dy := randSlice(rng, n, 3), randSlice(rng, n, 1)
	dx := make([]float32, n)
	iters := 0
	for b.Loop() {
		ActivateBackward(gpu.ActGELU, dx, dy, x)
		iters++
	}
	b.ReportMetric(float64(n*iters)/b.Elapsed().Seconds(), "elems/s")
}
