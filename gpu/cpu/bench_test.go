package cpu

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/smile-vplm/smile/gpu"
)

// BERT-base GEMM shapes for a batch of 128 tokens (m x k times k x n):
// the attention projections, the FFN up- and down-projections.
var bertShapes = [][3]int{{128, 768, 768}, {128, 3072, 768}, {128, 768, 3072}}

func benchMat(b testing.TB, d *Device, rows, cols int) gpu.Mat {
	buf, err := d.Alloc(rows * cols)
	if err != nil {
		b.Fatal(err)
	}
	host := make([]float32, rows*cols)
	for i := range host {
		host[i] = float32(math.Sin(float64(i))) / 4
	}
	m := gpu.NewMat(buf, rows, cols)
	if err := d.Upload(m, host); err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkGemm: C[m,n] = A[m,k] B[k,n] per backend, reported in GFLOP/s.
//
//	go test -run XXX -bench Gemm -benchtime 2s -p 1 ./gpu/cpu
func BenchmarkGemm(b *testing.B) {
	for _, backend := range Available() {
		for _, s := range bertShapes {
			m, n, k := s[0], s[1], s[2]
			b.Run(fmt.Sprintf("%s/%dx%dx%d", backend, m, k, n), func(b *testing.B) {
				d := newTestDevice(b, backend, 0)
				x, w, y := benchMat(b, d, m, k), benchMat(b, d, k, n), benchMat(b, d, m, n)
				if err := d.Gemm(false, false, 1, x, w, 0, y); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for b.Loop() {
					if err := d.Gemm(false, false, 1, x, w, 0, y); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// attnBench is a packed attention workload: seqs sequences of length l with
// heads heads of width dh, q, k and v as column slices of one QKV matrix.
type attnBench struct {
	name               string
	seqs, l, heads, dh int
}

var attnBenches = []attnBench{
	{"short_64x20_h12_d64", 64, 20, 12, 64},
	{"short_256x20_h4_d128", 256, 20, 4, 128},
	{"short_32x20_h8_d64", 32, 20, 8, 64},
	{"bert_1x128_h12_d64", 1, 128, 12, 64},
	{"bert_8x128_h12_d64", 8, 128, 12, 64},
}

type attnSetup struct {
	out, q, k, v gpu.Mat
	offsets      []int
	heads        int
	scale        float32
}

func setupAttention(b testing.TB, d *Device, ab attnBench) attnSetup {
	rows, h := ab.seqs*ab.l, ab.heads*ab.dh
	qkv := benchMat(b, d, rows, 3*h)
	out := benchMat(b, d, rows, h)
	offsets := make([]int, ab.seqs+1)
	for i := range offsets {
		offsets[i] = i * ab.l
	}
	return attnSetup{out: out, q: qkv.Colsl(0, h), k: qkv.Colsl(h, 2*h), v: qkv.Colsl(2*h, 3*h),
		offsets: offsets, heads: ab.heads, scale: float32(1 / math.Sqrt(float64(ab.dh)))}
}

func (s attnSetup) run(d *Device) error {
	return d.Attention(s.out, s.q, s.k, s.v, s.heads, s.offsets, s.scale)
}

// BenchmarkAttention reports sequences/s and GFLOP/s (4*L*L*dh per head and
// sequence: the two GEMMs).
func BenchmarkAttention(b *testing.B) {
	for _, backend := range Available() {
		for _, ab := range attnBenches {
			b.Run(backend+"/"+ab.name, func(b *testing.B) {
				d := newTestDevice(b, backend, 0)
				s := setupAttention(b, d, ab)
				if err := s.run(d); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for b.Loop() {
					if err := s.run(d); err != nil {
						b.Fatal(err)
					}
				}
				sec := b.Elapsed().Seconds()
				b.ReportMetric(float64(ab.seqs*b.N)/sec, "seqs/s")
				b.ReportMetric(4*float64(ab.seqs*ab.heads*ab.l*ab.l*ab.dh)*float64(b.N)/sec/1e9, "GFLOP/s")
			})
		}
	}
}

// TestBenchGemm runs gpu.BenchGemm briefly on every backend.
func TestBenchGemm(t *testing.T) {
	for _, backend := range Available() {
		d := newTestDevice(t, backend, 0)
		gf, err := gpu.BenchGemm(context.Background(), d, 64, 96, 80, 5*time.Millisecond)
		if err != nil || !(gf > 0) {
			t.Fatalf("%s: BenchGemm = %v, %v", backend, gf, err)
		}
		if _, err := gpu.BenchGemm(context.Background(), d, 0, 1, 1, time.Millisecond); err == nil {
			t.Fatalf("%s: BenchGemm accepted m = 0", backend)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := gpu.BenchGemm(ctx, d, 8, 8, 8, time.Second); err == nil {
			t.Fatalf("%s: BenchGemm ignored a cancelled context", backend)
		}
		t.Logf("%s (%s): %.1f GFLOP/s on 64x80x96", d.Name(), d.Info(), gf)
	}
}
