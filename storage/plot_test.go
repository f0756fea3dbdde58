package storage

import (
	"bytes"
	"errors"
	"testing"
)

func TestPlotEntries(t *testing.T) {
	s, err := Open(Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.PlotEntries("fp-a", 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.PlotEntries("fp-a", 2)
	c, _ := s.PlotEntries("fp-b", 1)
	k1, k2 := []byte{1, 0, 0, 0, 7}, []byte{2, 0, 0, 0, 7, 0, 0, 0, 0}
	if err := a.Put([][]byte{k1, k2}, [][]byte{[]byte("one"), []byte("two!")}); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := a.Get(k2); err != nil || !ok || !bytes.Equal(v, []byte("two!")) {
		t.Fatalf("get: %q %v %v", v, ok, err)
	}
	for _, other := range []*PlotEntries{b, c} {
		if _, ok, err := other.Get(k1); ok || err != nil {
			t.Fatalf("another cut or backbone sees the entry: %v %v", ok, err)
		}
	}
	has, err := a.Has([][]byte{k1, {1, 0, 0, 0, 8}, k2})
	if err != nil || !has[0] || has[1] || !has[2] {
		t.Fatalf("has: %v %v", has, err)
	}
	if n, sz, err := a.Usage(); err != nil || n != 2 || sz != 7 {
		t.Fatalf("usage: %d entries, %d bytes, %v", n, sz, err)
	}
	if n, _, _ := c.Usage(); n != 0 {
		t.Fatalf("other backbone's usage %d", n)
	}
	for _, bad := range []struct {
		fp  string
		cut int
	}{{"", 1}, {"a\x00b", 1}, {"fp", 0}, {"fp", 256}} {
		if _, err := s.PlotEntries(bad.fp, bad.cut); !errors.Is(err, ErrInvalid) {
			t.Errorf("PlotEntries(%q, %d): %v", bad.fp, bad.cut, err)
		}
	}
	if _, _, err := a.Get(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty key: %v", err)
	}
	if err := a.Put([][]byte{k1}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("mismatched put: %v", err)
	}
	s.Close()
	if err := a.Put([][]byte{k1}, [][]byte{{1}}); !errors.Is(err, ErrClosed) {
		t.Errorf("put after close: %v", err)
	}
	if _, _, err := a.Get(k1); !errors.Is(err, ErrClosed) {
		t.Errorf("get after close: %v", err)
	}
}
