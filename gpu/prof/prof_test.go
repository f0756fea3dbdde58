package prof_test

import (
	"testing"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/gpu/prof"
)

func TestTimes(t *testing.T) {
	base, err := cpu.New(cpu.SingleThreadConfig())
	if err != nil {
		t.Fatal(err)
	}
	d := prof.Wrap(base)
	mat := func(r, c int) gpu.Mat {
		b, err := d.Alloc(r * c)
		if err != nil {
			t.Fatal(err)
		}
		return gpu.NewMat(b, r, c)
	}
	a, b, c := mat(8, 16), mat(16, 4), mat(8, 4)
	if err := d.Gemm(false, false, 1, a, b, 0, c); err != nil {
		t.Fatal(err)
	}
	if err := d.GemmStridedBatched(false, false, 1, a.Reshape(4, 16), 4*16, b, 0, 0, c.Reshape(4, 4), 16, 2); err != nil {
		t.Fatal(err)
	}
	if err := d.Activate(c, gpu.ActReLU); err != nil {
		t.Fatal(err)
	}
	if want := 2.0*8*4*16 + 2*(2.0*4*4*16); d.T.GemmFlops != want {
		t.Fatalf("GEMM flops %g, want %g", d.T.GemmFlops, want)
	}
	if d.T.Gemm <= 0 || d.T.Other <= 0 || d.T.Total() != d.T.Gemm+d.T.Attention+d.T.Other {
		t.Fatalf("times not accounted: %+v", d.T)
	}
	d.Reset()
	if d.T != (prof.Times{}) {
		t.Fatalf("reset left %+v", d.T)
	}
}
