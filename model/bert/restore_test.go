package bert

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/smile-vplm/smile/model"
)

// TestRestore checks that a state cached at any layer boundary and restored
// from host memory continues exactly as the one-shot run.
func TestRestore(t *testing.T) {
	dev := newDevice(t)
	cfg := TinyConfig()
	m, err := NewRandom(dev, cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	ids := randomIDs(rand.New(rand.NewPCG(5, 6)), cfg, 9, 1, cfg.MaxPositions, 23)

	one, err := m.Embed(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RunLayers(ctx, one, cfg.Layers, nil); err != nil {
		t.Fatal(err)
	}
	want := download(t, dev, one.H)
	wantPool := make([]float32, one.Seqs()*cfg.Hidden)
	if err := m.Pool(ctx, one, wantPool); err != nil {
		t.Fatal(err)
	}
	offsets := append([]int(nil), one.Offsets...)
	m.Release(one)

	for k := 0; k <= cfg.Layers; k++ {
		if w := m.StateWidth(k); w != cfg.Hidden {
			t.Errorf("StateWidth(%d) = %d, want %d", k, w, cfg.Hidden)
		}
		lower, err := m.Embed(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.RunLayers(ctx, lower, k, nil); err != nil {
			t.Fatal(err)
		}
		cached := download(t, dev, lower.H)
		m.Release(lower)

		st, err := m.Restore(ctx, offsets, k, cached)
		if err != nil {
			t.Fatalf("Restore at layer %d: %v", k, err)
		}
		if st.Layer != k || st.Seqs() != len(ids) || st.Tokens() != offsets[len(offsets)-1] {
			t.Fatalf("restored state: layer %d, %d seqs, %d tokens", st.Layer, st.Seqs(), st.Tokens())
		}
		if err := m.RunLayers(ctx, st, cfg.Layers, nil); err != nil {
			t.Fatal(err)
		}
		if got := download(t, dev, st.H); !slices.Equal(got, want) {
			t.Errorf("restored at layer %d: final states differ from the one-shot run", k)
		}
		gotPool := make([]float32, len(wantPool))
		if err := m.Pool(ctx, st, gotPool); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(gotPool, wantPool) {
			t.Errorf("restored at layer %d: pooled output differs", k)
		}
		m.Release(st)
	}
}

func TestRestoreRejects(t *testing.T) {
	dev := newDevice(t)
	cfg := TinyConfig()
	m, err := NewRandom(dev, cfg, 6)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	H, P := cfg.Hidden, cfg.MaxPositions
	h := func(rows int) []float32 { return make([]float32, rows*H) }
	cases := []struct {
		name    string
		offsets []int
		layer   int
		h       []float32
	}{
		{"no offsets", nil, 0, nil},
		{"no sequence", []int{0}, 0, nil},
		{"not from 0", []int{1, 3}, 0, h(2)},
		{"empty sequence", []int{0, 2, 2, 5}, 0, h(5)},
		{"decreasing", []int{0, 4, 2}, 0, h(2)},
		{"longer than the window", []int{0, P + 1}, 0, h(P + 1)},
		{"negative layer", []int{0, 2}, -1, h(2)},
		{"past the last layer", []int{0, 2}, cfg.Layers + 1, h(2)},
		{"short h", []int{0, 2, 5}, 1, h(4)},
		{"long h", []int{0, 2, 5}, 1, h(6)},
	}
	for _, c := range cases {
		if st, err := m.Restore(ctx, c.offsets, c.layer, c.h); !errors.Is(err, model.ErrBadInput) {
			t.Errorf("%s: %v, %v; want ErrBadInput", c.name, st, err)
		}
	}
	// A state at the window's edge, at the last layer, is fine and poolable.
	st, err := m.Restore(ctx, []int{0, P, P + 1}, cfg.Layers, h(P+1))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Pool(ctx, st, make([]float32, 2*H)); err != nil {
		t.Error(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Restore(cctx, []int{0, 2}, 0, h(2)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	m.Close()
	if _, err := m.Restore(ctx, []int{0, 2}, 0, h(2)); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("closed model: %v", err)
	}
}

// TestReleaseNeverAliasesLiveState: a released *State is never handed out
// again, so a stale second Release (or one of a foreign state) cannot free
// a state that is in use.
func TestReleaseNeverAliasesLiveState(t *testing.T) {
	dev := &countingDevice{Device: newDevice(t)}
	cfg := TinyConfig()
	m, err := NewRandom(dev, cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	other, err := NewRandom(newDevice(t), cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := context.Background()
	ids := randomIDs(rand.New(rand.NewPCG(7, 8)), cfg, 6, 11)

	a, err := m.Embed(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	m.Release(a)
	allocs := dev.allocs
	c, err := m.Embed(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if dev.allocs != allocs {
		t.Error("Embed did not reuse the released buffer")
	}
	if c == a {
		t.Fatal("Embed handed out the released *State again")
	}
	r, err := m.Restore(ctx, c.Offsets, 0, download(t, dev, c.H))
	if err != nil {
		t.Fatal(err)
	}
	if r == a || r == c {
		t.Fatal("Restore handed out a state pointer already in use")
	}
	m.Release(a)              // stale: a second Release of a
	m.Release(nil)            // nil
	m.Release(&model.State{}) // never handed out
	other.Release(c)          // another model's
	if err := m.RunLayers(ctx, c, cfg.Layers, nil); err != nil {
		t.Fatalf("live state after stale releases: %v", err)
	}
	if err := m.RunLayers(ctx, r, cfg.Layers, nil); err != nil {
		t.Fatalf("restored state after stale releases: %v", err)
	}
	if err := m.Pool(ctx, c, make([]float32, 2*cfg.Hidden)); err != nil {
		t.Fatal(err)
	}
	m.Release(c)
	m.Release(r)
	if err := m.RunLayers(ctx, c, cfg.Layers, nil); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("released state: %v", err)
	}
}
