package gputest

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/smile-vplm/smile/gpu"
)

// Run checks every method of the devices newDev returns. newDev is called
// once per subtest (twice where a second device is needed for foreign
// buffers) and should register its own cleanup with t.Cleanup.
func Run(t *testing.T, newDev func(t *testing.T) gpu.Device) {
	for i, st := range []struct {
		name string
		f    func(e *env)
	}{
		{"Memory", testMemory},
		{"Gemm", testGemm},
		{"GemmErrors", testGemmErrors},
		{"GemmStridedBatched", testGemmStridedBatched},
		{"GemmSegmented", testGemmSegmented},
		{"Gather", testGather},
		{"Activations", testActivations},
		{"AddScale", testAddScale},
		{"LayerNorm", testLayerNorm},
		{"Softmax", testSoftmax},
		{"L2Normalize", testL2Normalize},
		{"MeanPool", testMeanPool},
		{"Attention", testAttention},
	} {
		t.Run(st.name, func(t *testing.T) {
			st.f(newEnv(t, newDev, uint64(i)+1))
		})
	}
	t.Run("ForeignBuffers", func(t *testing.T) {
		testForeign(newEnv(t, newDev, 99), newDev(t))
	})
}

func testMemory(e *env) {
	if e.dev.Name() == "" || e.dev.Threads() < 1 {
		e.t.Errorf("Name() = %q, Threads() = %d", e.dev.Name(), e.dev.Threads())
	}
	e.noErr("Sync", e.dev.Sync(context.Background()))
	b, err := e.dev.Alloc(0)
	e.noErr("Alloc(0)", err)
	if b.Len() != 0 || b.Device() != e.dev {
		e.t.Errorf("Alloc(0): Len %d, Device %v", b.Len(), b.Device())
	}
	e.dev.Free(b)
	_, err = e.dev.Alloc(-1)
	e.wantErr("Alloc(-1)", err, gpu.ErrShape)
	_, err = e.dev.Alloc(math.MaxInt / 8)
	e.wantErr("Alloc(huge)", err, gpu.ErrOutOfMemory)

	// Fresh memory is zero.
	b, err = e.dev.Alloc(37)
	e.noErr("Alloc", err)
	z := make([]float32, 37)
	for i := range z {
		z[i] = 1
	}
	e.noErr("Download", e.dev.Download(z, gpu.NewMat(b, 1, 37)))
	for i, v := range z {
		if v != 0 {
			e.t.Fatalf("fresh buffer element %d = %v", i, v)
		}
	}
	e.dev.Free(b)
	e.dev.Free(b) // a second Free is harmless

	// Upload/Download round trips through every layout; Copy between layouts.
	for l := dense; l < nLayouts; l++ {
		rows, cols := e.size(), e.size()
		x := e.mat(rows, cols, l, -1, 1)
		vals := make([]float32, rows*cols)
		for i := range vals {
			vals[i] = float32(i) - 0.5
		}
		e.noErr("Upload", e.dev.Upload(x.m, vals))
		want := make([]float64, len(vals))
		for i, v := range vals {
			want[i] = float64(v)
		}
		e.check("Upload "+l.String(), x, want, relTol(0, 0))
		got := make([]float32, rows*cols)
		e.noErr("Download", e.dev.Download(got, x.m))
		for i := range got {
			if got[i] != vals[i] {
				e.t.Fatalf("Download %v: [%d] = %v, want %v", l, i, got[i], vals[i])
			}
		}
		y := e.mat(rows, cols, e.layout(), -1, 1)
		e.noErr("Copy", e.dev.Copy(y.m, x.m))
		e.check("Copy "+l.String(), y, want, relTol(0, 0))
		e.noErr("Copy to itself", e.dev.Copy(y.m, y.m))
		e.check("Copy to itself", y, want, relTol(0, 0))

		e.wantErr("Upload short", e.dev.Upload(x.m, vals[1:]), gpu.ErrShape)
		e.wantErr("Upload long", e.dev.Upload(x.m, append(vals, 1)), gpu.ErrShape)
		e.wantErr("Download short", e.dev.Download(got[1:], x.m), gpu.ErrShape)
		e.unchanged("Upload after errors", x)
	}
	x := e.mat(5, 4, dense, -1, 1)
	e.wantErr("Copy shape", e.dev.Copy(x.m.Rowsl(0, 2), x.m.Rowsl(2, 5)), gpu.ErrShape)
	e.wantErr("Copy partial overlap", e.dev.Copy(x.m.Rowsl(0, 3), x.m.Rowsl(1, 4)), gpu.ErrShape)
	e.wantErr("Upload past the buffer", e.dev.Upload(gpu.Mat{Buf: x.m.Buf, Off: 17, Rows: 1, Cols: 4, Stride: 4}, make([]float32, 4)), gpu.ErrShape)
	e.wantErr("Upload negative offset", e.dev.Upload(gpu.Mat{Buf: x.m.Buf, Off: -1, Rows: 1, Cols: 4, Stride: 4}, make([]float32, 4)), gpu.ErrShape)
	e.wantErr("Upload huge stride", e.dev.Upload(gpu.Mat{Buf: x.m.Buf, Rows: 3, Cols: 1, Stride: math.MaxInt / 2}, make([]float32, 3)), gpu.ErrShape)
	e.unchanged("Copy after errors", x)
}

// testForeign passes buffers of another device, and freed buffers, to every
// method: each must fail with ErrForeignBuffer and write nothing.
func testForeign(e *env, other gpu.Device) {
	mine := e.mat(4, 4, dense, -1, 1)
	ob, err := other.Alloc(16)
	e.noErr("other Alloc", err)
	e.t.Cleanup(func() { other.Free(ob) })
	theirs := gpu.NewMat(ob, 4, 4)
	fb, err := e.dev.Alloc(16)
	e.noErr("Alloc", err)
	e.dev.Free(fb)
	freed := gpu.NewMat(fb, 4, 4)

	m := mine.m
	row := m.Rowsl(0, 1)
	for _, bad := range []gpu.Mat{theirs, freed} {
		dst := e.mat(4, 4, dense, -1, 1)
		d := dst.m
		calls := map[string]error{
			"Upload":         e.dev.Upload(bad, make([]float32, 16)),
			"Download":       e.dev.Download(make([]float32, 16), bad),
			"Copy src":       e.dev.Copy(d, bad),
			"Copy dst":       e.dev.Copy(bad, m),
			"Gemm A":         e.dev.Gemm(false, false, 1, bad, m, 0, d),
			"Gemm B":         e.dev.Gemm(false, false, 1, m, bad, 0, d),
			"Gemm C":         e.dev.Gemm(false, false, 1, m, m, 0, bad),
			"Batched A":      e.dev.GemmStridedBatched(false, false, 1, bad, 0, m, 0, 0, d, 0, 1),
			"Batched C":      e.dev.GemmStridedBatched(false, false, 1, m, 0, m, 0, 0, bad, 0, 1),
			"Segmented x":    e.dev.GemmSegmented(false, 1, bad, []gpu.Segment{{Rows: 4, W: m}}, 0, d),
			"Segmented W":    e.dev.GemmSegmented(false, 1, m, []gpu.Segment{{Rows: 4, W: bad}}, 0, d),
			"Segmented y":    e.dev.GemmSegmented(false, 1, m, []gpu.Segment{{Rows: 4, W: m}}, 0, bad),
			"Gather table":   e.dev.Gather(d, bad, []int32{0, 1, 2, 3}, false),
			"Gather dst":     e.dev.Gather(bad, m, []int32{0, 1, 2, 3}, false),
			"AddBias x":      e.dev.AddBias(bad, row, gpu.ActNone),
			"AddBias bias":   e.dev.AddBias(d, bad.Rowsl(0, 1), gpu.ActNone),
			"Activate":       e.dev.Activate(bad, gpu.ActReLU),
			"Add":            e.dev.Add(d, m, bad),
			"Scale":          e.dev.Scale(bad, 2),
			"LayerNorm x":    e.dev.LayerNorm(d, bad, row, row, 1e-5),
			"LayerNorm beta": e.dev.LayerNorm(d, m, row, bad.Rowsl(0, 1), 1e-5),
			"Softmax":        e.dev.Softmax(bad, nil),
			"L2Normalize":    e.dev.L2Normalize(bad, 1e-12),
			"MeanPool":       e.dev.MeanPool(d.Rowsl(0, 1), bad, []int{0, 4}),
			"Attention k":    e.dev.Attention(d, m, bad, m, 2, []int{0, 4}, 1),
			"Attention out":  e.dev.Attention(bad, m, m, m, 2, []int{0, 4}, 1),
		}
		for name, err := range calls {
			if !errors.Is(err, gpu.ErrForeignBuffer) {
				e.t.Errorf("%s with a foreign or freed buffer: got %v, want ErrForeignBuffer", name, err)
			}
		}
		e.unchanged("after foreign-buffer calls", dst)
		e.unchanged("after foreign-buffer calls", mine)
	}
	// Freeing another device's buffer does nothing to it.
	e.dev.Free(ob)
	if ob.Len() != 16 {
		e.t.Errorf("Free of a foreign buffer changed it: Len %d", ob.Len())
	}
	e.noErr("other Upload", other.Upload(theirs, make([]float32, 16)))
}
