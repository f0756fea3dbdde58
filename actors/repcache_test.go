package actors

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/train"
	"github.com/smile-vplm/smile/storage"
)

// useLiteDevice is a device actor on the real use-lite backbone.
func useLiteDevice(t *testing.T) (*actor.ActorSystem, *DeviceHandle, model.Backbone) {
	t.Helper()
	bb := testenv.UseLiteBackbone(t)
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quietLog }))
	h, err := SpawnDevice(sys, bb, &memSource{blobs: map[string][]byte{}, reads: map[string]int{}}, DefaultDeviceConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Stop(ctx, sys); err != nil {
			t.Error(err)
		}
		sys.Shutdown()
	})
	return sys, h, bb
}

func imdbIDs(t *testing.T, bb model.Backbone, n int) [][]int32 {
	t.Helper()
	ex, err := datasets.ReadSplit(testenv.DataDir(), "imdb", datasets.Train)
	if err != nil {
		t.Fatal(err)
	}
	texts := make([]string, n)
	for i := range texts {
		texts[i] = ex[i].Text
	}
	ids, err := tokenizeForServing(bb, texts)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// closeTo reports the worst violation of fp16 tolerance (relative 2^-10,
// absolute 1e-4 near zero), or -1.
func closeTo(got, want []float32) int {
	if len(got) != len(want) {
		return 0
	}
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); d > math.Abs(float64(want[i]))/1024+1e-4 {
			return i
		}
	}
	return -1
}

// TestRepCache: a cache is computed once (a second build runs no device
// work), what it stores round-trips within fp16 precision of the backbone
// computed directly, a half-built cache resumes with only its missing
// chunks, and the uncached dataset gives the same inputs.
func TestRepCache(t *testing.T) {
	sys, h0, bb := useLiteDevice(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := storage.Open(storage.Options{Dir: t.TempDir()}) // values of chunks exceed in-memory Badger's limit
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := DefaultRepCacheConfig()
	cfg.ChunkExamples = 8
	cfg.LRUBytes = 1 << 20
	cache, err := NewRepCache(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var works atomic.Int64
	dexec := h0.Exec(sys, "t")
	exec := func(ctx context.Context, tokens int, run func(model.Backbone) error) error {
		works.Add(1)
		return dexec(ctx, tokens, run)
	}
	const n = 32
	ids := imdbIDs(t, bb, n)
	// direct computes each example alone, straight from the backbone.
	direct := func(kind train.InputKind, layer int, idx []int) (h, z []float32) {
		for _, i := range idx {
			if err := h0.Do(ctx, sys, &Work{Tenant: "t", Run: func(bb model.Backbone) error {
				in, err := train.ComputeInputs(ctx, bb, kind, layer, ids[i:i+1])
				if err == nil {
					h, z = append(h, in.H...), append(z, in.Z...)
				}
				return err
			}}); err != nil {
				t.Fatal(err)
			}
		}
		return h, z
	}
	for _, tc := range []struct {
		name  string
		kind  train.InputKind
		layer int
	}{
		{"states after layer 1", train.InputStates, 1},
		{"attended at layer 2", train.InputAttended, 2},
		{"pooled", train.InputPooled, bb.Info().Layers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			widths, err := RepWidths(bb, tc.kind, tc.layer)
			if err != nil {
				t.Fatal(err)
			}
			key := RepKey{Backbone: "test-backbone", Dataset: IDsDigest(ids), Kind: tc.kind, Layer: tc.layer, MaxPositions: bb.Info().MaxPositions}
			set, st, err := cache.Build(ctx, key, nil, ids, widths, exec, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.Computed != n || st.Cached != 0 || st.Works == 0 {
				t.Fatalf("first build %+v", st)
			}
			w0 := works.Load()
			var progress []int
			set, st, err = cache.Build(ctx, key, nil, ids, widths, exec, func(done, total int) { progress = append(progress, done) })
			if err != nil {
				t.Fatal(err)
			}
			if works.Load() != w0 || st.Works != 0 || st.Cached != n || st.Computed != 0 {
				t.Fatalf("second build ran %d work items: %+v", works.Load()-w0, st)
			}
			if len(progress) == 0 || progress[len(progress)-1] != n {
				t.Fatalf("progress %v", progress)
			}
			idx := []int{3, 17, 31, 3}
			in, err := set.Load(ctx, idx)
			if err != nil {
				t.Fatal(err)
			}
			wantH, wantZ := direct(tc.kind, tc.layer, idx)
			if i := closeTo(in.H, wantH); i >= 0 {
				t.Fatalf("cached value %d = %v, the backbone gives %v", i, in.H[min(i, len(in.H)-1)], wantH[min(i, len(wantH)-1)])
			}
			if i := closeTo(in.Z, wantZ); i >= 0 {
				t.Fatalf("cached z value %d differs from the backbone's", i)
			}
			if tc.kind == train.InputAttended && len(in.Z) == 0 {
				t.Fatal("no attention outputs")
			}
			if tc.kind != train.InputPooled {
				if len(in.Offsets) != len(idx)+1 || in.Offsets[1] != len(ids[3]) || in.Offsets[4]*widths[0] != len(in.H) {
					t.Fatalf("offsets %v", in.Offsets)
				}
			} else if in.Offsets != nil || len(in.H) != len(idx)*widths[0] {
				t.Fatalf("pooled inputs: offsets %v, %d values", in.Offsets, len(in.H))
			}
			// The uncached dataset computes the same.
			labels := make([]int, n)
			un, err := NewUncachedDataset(bb, ids, labels, tc.kind, tc.layer, exec)
			if err != nil {
				t.Fatal(err)
			}
			in2, _, err := un.Load(ctx, idx)
			if err != nil {
				t.Fatal(err)
			}
			if i := closeTo(in.H, in2.H); i >= 0 {
				t.Fatalf("uncached value %d differs", i)
			}
			if i := closeTo(in.Z, in2.Z); i >= 0 {
				t.Fatalf("uncached z value %d differs", i)
			}

			// Half built: the marker and one chunk gone (a build that
			// stopped), the rest is reused.
			id := key.ID()
			if err := store.PutRecords(storage.Record{NS: storage.NSRepCache, Key: id + "/done", Delete: true},
				storage.Record{NS: storage.NSRepCache, Key: repChunkKey(id, 2), Delete: true}); err != nil {
				t.Fatal(err)
			}
			_, st, err = cache.Build(ctx, key, nil, ids, widths, exec, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.Cached != n-8 || st.Computed != 8 || st.Works != 1 {
				t.Fatalf("resumed build %+v, want 32 cached, 8 computed in 1 work item", st)
			}
		})
	}
}

// TestRepChunkEncoding: chunks round-trip, keep fp32 when fp16 would
// overflow, and reject what does not match the plan.
func TestRepChunkEncoding(t *testing.T) {
	rows, widths := []int{2, 1}, []int{2, 1}
	h := []float32{1, -2, 3.5, 0.25, 1e-3, 7}
	z := []float32{0.5, -0.5, 9}
	c, err := decodeRepChunk(encodeRepChunk(rows, widths, [][]float32{h, z}), rows, widths)
	if err != nil {
		t.Fatal(err)
	}
	if closeTo(c.planes[0], h) >= 0 || closeTo(c.planes[1], z) >= 0 || c.offsets[1] != 2 || c.offsets[2] != 3 {
		t.Fatalf("decoded %v offsets %v", c.planes, c.offsets)
	}
	big := []float32{1, 70000, 3, 4, 5, 6.1}
	b := encodeRepChunk(rows, widths, [][]float32{big, z})
	if b[4] != repEncFloat {
		t.Fatal("an overflowing chunk was stored as fp16")
	}
	if c, err = decodeRepChunk(b, rows, widths); err != nil || c.planes[0][1] != 70000 || c.planes[0][5] != 6.1 || c.planes[1][2] != 9 {
		t.Fatalf("fp32 chunk: %v %v", c, err)
	}
	if _, err := decodeRepChunk(b, []int{1, 2}, widths); !errors.Is(err, ErrInternal) {
		t.Fatalf("rows differing from the plan: %v", err)
	}
	if _, err := decodeRepChunk(b, rows, []int{2, 2}); !errors.Is(err, ErrInternal) {
		t.Fatalf("widths differing from the plan: %v", err)
	}
	if _, err := decodeRepChunk(b[:len(b)-1], rows, widths); !errors.Is(err, ErrInternal) {
		t.Fatalf("short chunk: %v", err)
	}
	// Plans respect both bounds.
	cfg := RepCacheConfig{ChunkExamples: 3, ChunkBytes: 1 << 10}
	ids := [][]int32{make([]int32, 100), make([]int32, 100), make([]int32, 1), make([]int32, 1), make([]int32, 1), make([]int32, 1)}
	p := newRepPlan(RepKey{Kind: train.InputStates}, ids, []int{4}, cfg) // 800 bytes per long example
	if want := []int{0, 1, 4, 6}; !slices.Equal(p.starts, want) {
		t.Fatalf("starts %v, want %v", p.starts, want)
	}
	for i, want := range []int{0, 1, 1, 1, 2, 2} {
		if got := p.chunkOf(i); got != want {
			t.Fatalf("example %d in chunk %d, want %d", i, got, want)
		}
	}
}

// FuzzDecodeRepChunk: a stored chunk that is damaged in any way decodes to
// an error, never a panic or values outside the plan.
func FuzzDecodeRepChunk(f *testing.F) {
	f.Add(encodeRepChunk([]int{2, 1}, []int{2, 1}, [][]float32{{1, 2, 3, 4, 5, 6}, {7, 8, 9}}), uint8(2), uint8(1), uint8(2), uint8(1))
	f.Add(encodeRepChunk([]int{1}, []int{3}, [][]float32{{1, 70000, 3}}), uint8(1), uint8(0), uint8(3), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, r0, r1, w0, w1 uint8) {
		rows := []int{int(r0 % 8)}
		if r1 > 0 {
			rows = append(rows, int(r1%8))
		}
		widths := []int{int(w0%8) + 1}
		if w1 > 0 {
			widths = append(widths, int(w1%8)+1)
		}
		c, err := decodeRepChunk(b, rows, widths)
		if err != nil {
			if !errors.Is(err, ErrInternal) {
				t.Fatalf("error %v is not ErrInternal", err)
			}
			return
		}
		total := 0
		for _, r := range rows {
			total += r
		}
		if len(c.planes) != len(widths) || c.offsets[len(rows)] != total {
			t.Fatalf("decoded %d planes, %d rows for plan %v %v", len(c.planes), c.offsets[len(rows)], rows, widths)
		}
		for k, w := range widths {
			if len(c.planes[k]) != total*w {
				t.Fatalf("plane %d has %d values, want %d", k, len(c.planes[k]), total*w)
			}
		}
	})
}
