package model

import (
	"errors"
	"math"
	"testing"
)

func TestEncodeDecodeHalves(t *testing.T) {
	src := []float32{0, 1, -2.5, 1e-3, 65504, -65504, 3.14159, 1e-8}
	b := make([]byte, 2*len(src))
	if i := EncodeHalves(b, src); i != -1 {
		t.Fatalf("EncodeHalves reported value %d", i)
	}
	got := make([]float32, len(src))
	if err := DecodeHalves(got, b); err != nil {
		t.Fatal(err)
	}
	for i, f := range src {
		if d := math.Abs(float64(got[i] - f)); d > math.Abs(float64(f))/1024+6e-8 {
			t.Errorf("value %d: %g round-trips to %g", i, f, got[i])
		}
	}
	if i := EncodeHalves(b[:4], []float32{1, 70000}); i != 1 {
		t.Fatalf("overflow reported at %d, want 1", i)
	}
	if err := DecodeHalves(got[:2], b[:4]); !errors.Is(err, ErrBadInput) {
		t.Fatalf("decoding Inf: %v", err)
	}
	if err := DecodeHalves(got[:2], b[:3]); !errors.Is(err, ErrBadInput) {
		t.Fatalf("short input: %v", err)
	}
}
