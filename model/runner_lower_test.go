package model_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/smile-vplm/smile/model"
)

// plotTol: a plot-mode answer whose Lower is exact (the backbone's own lower
// layers, run on the text alone) vs the same item in full mode. The lower
// layers see a batch of one text instead of the whole batch, and the upper
// ones start from states read back and restored (exact copies), so only the
// GEMMs' blocking differs: the same rounding as mixedTol.
const plotTol = mixedTol

// exactLower is a Lower that runs the backbone's own lower layers on the
// text alone: Embed, RunLayers up to the cut, Download. With amp not 0 it
// adds a deterministic perturbation, amp*sin(id + phase*(column+1)), so that
// plot-mode answers differ from full-mode ones while staying a function of
// the text alone.
type exactLower struct {
	bb         model.Backbone
	cut        int
	amp, phase float64
}

func (l *exactLower) Cut() int { return l.cut }

func (l *exactLower) Lower(ids []int32, dst []float32) error {
	ctx := context.Background()
	st, err := l.bb.Embed(ctx, [][]int32{ids})
	if err != nil {
		return err
	}
	defer l.bb.Release(st)
	if err := l.bb.RunLayers(ctx, st, l.cut, nil); err != nil {
		return err
	}
	if err := l.bb.Device().Download(dst, st.H); err != nil {
		return err
	}
	if l.amp != 0 {
		w := l.bb.StateWidth(l.cut)
		for t, id := range ids {
			for c := range w {
				dst[t*w+c] += float32(l.amp * math.Sin(float64(id)+l.phase*float64(c+1)))
			}
		}
	}
	return nil
}

var errLowerFailed = errors.New("test: lower failed")

// failLower is a Lower at cut whose lookups all fail.
type failLower struct{ cut int }

func (l failLower) Cut() int                           { return l.cut }
func (l failLower) Lower(_ []int32, _ []float32) error { return errLowerFailed }

// trackedBackbone counts Embed calls and the states it made that are not
// released yet, so tests can check that Forward never embeds plot-mode rows
// and releases every state, also on errors. Its RunPool is the backbone's,
// or RunLayers + Pool where the backbone has none, as Runner does.
type trackedBackbone struct {
	model.Backbone
	embeds int
	live   map[*model.State]bool
}

func track(bb model.Backbone) *trackedBackbone {
	return &trackedBackbone{Backbone: bb, live: map[*model.State]bool{}}
}

func (b *trackedBackbone) Embed(ctx context.Context, ids [][]int32) (*model.State, error) {
	b.embeds++
	st, err := b.Backbone.Embed(ctx, ids)
	if err == nil {
		b.live[st] = true
	}
	return st, err
}

func (b *trackedBackbone) Restore(ctx context.Context, offsets []int, layer int, h []float32) (*model.State, error) {
	st, err := b.Backbone.Restore(ctx, offsets, layer, h)
	if err == nil {
		b.live[st] = true
	}
	return st, err
}

func (b *trackedBackbone) Release(st *model.State) {
	delete(b.live, st)
	b.Backbone.Release(st)
}

func (b *trackedBackbone) RunPool(ctx context.Context, st *model.State, dst []float32) error {
	if pr, ok := b.Backbone.(model.PoolRunner); ok {
		return pr.RunPool(ctx, st, dst)
	}
	if err := b.RunLayers(ctx, st, b.Info().Layers, nil); err != nil {
		return err
	}
	return b.Pool(ctx, st, dst)
}

// layersFrom is layers lo..hi.
func layersFrom(lo, hi int) []int {
	var ls []int
	for l := lo; l <= hi; l++ {
		ls = append(ls, l)
	}
	return ls
}

// lowerParams uploads random params: adapter kind, rank and layers as
// given, a classify head (3 labels) or an embed head projected to 16.
func lowerParams(t *testing.T, bb model.Backbone, r *model.Runner, kind model.AdapterKind, rank int, layers []int, head model.HeadKind, seed uint64) *model.DeviceParams {
	t.Helper()
	s := model.ParamsSpec{Adapter: kind, Rank: rank, Layers: layers, Head: head}
	if kind == model.AdapterLoRA {
		s.Alpha = float32(2 * rank)
	}
	if head == model.HeadClassify {
		s.Labels = []string{"a", "b", "c"}
	} else {
		s.EmbedDim = 16
	}
	p, err := model.RandomParams(bb, s, seed, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	return upload(t, r, p)
}

// TestForwardLowerExact: with a Lower that computes the backbone's own
// lower layers, plot mode answers as full mode does (within plotTol), at
// every cut of both families, for plain rows and for bottleneck and LoRA
// adapters on the layers above the cut; a batch of only plot-mode rows
// never embeds and releases every state.
func TestForwardLowerExact(t *testing.T) {
	for _, bc := range backbones() {
		t.Run(bc.name, func(t *testing.T) {
			raw := bc.load(t)
			bb := track(raw)
			r := model.NewRunner(bb)
			defer r.Close()
			ctx := context.Background()
			L := bb.Info().Layers
			ids := randomIDs(bb, rand.New(rand.NewPCG(21, 22)), 5, 30)
			for cut := 1; cut < L; cut++ {
				above := layersFrom(cut+1, L)
				params := []*model.DeviceParams{
					nil,
					lowerParams(t, bb, r, model.AdapterBottleneck, 8, above, model.HeadClassify, uint64(10*cut+1)),
					lowerParams(t, bb, r, model.AdapterLoRA, 4, above, model.HeadEmbed, uint64(10*cut+2)),
					lowerParams(t, bb, r, model.AdapterLoRA, 8, []int{L}, model.HeadClassify, uint64(10*cut+3)),
				}
				lower := &exactLower{bb: raw, cut: cut}
				var full, plot []model.Item
				for _, p := range params {
					for _, s := range ids {
						full = append(full, model.Item{IDs: s, Params: p})
						plot = append(plot, model.Item{IDs: s, Params: p, Lower: lower})
					}
				}
				want, err := r.Forward(ctx, full)
				if err != nil {
					t.Fatal(err)
				}
				bb.embeds = 0
				got, err := r.Forward(ctx, plot)
				if err != nil {
					t.Fatal(err)
				}
				if bb.embeds != 0 {
					t.Errorf("cut %d: a batch of plot-mode rows embedded %d times", cut, bb.embeds)
				}
				if len(bb.live) != 0 {
					t.Errorf("cut %d: %d states not released", cut, len(bb.live))
				}
				worst := 0.0
				for i := range want {
					d := maxAbsDiff(want[i], got[i])
					worst = max(worst, d)
					if d > plotTol {
						t.Errorf("cut %d item %d: plot mode differs from full mode by %g", cut, i, d)
					}
				}
				t.Logf("cut %d: worst plot-vs-full difference %.3g", cut, worst)
			}
		})
	}
}

// TestForwardLowerMixed: full-mode rows, plot-mode rows of two Lowers (two
// cuts where the backbone has room, else two perturbations at one cut),
// several params (some in several modes, some full-only), and plain rows,
// interleaved in one Forward: each item answers as it does alone (within
// mixedTol), in the caller's order. The Lowers are perturbed, so plot
// answers differ from full ones and a row served in the wrong mode shows.
func TestForwardLowerMixed(t *testing.T) {
	for _, bc := range backbones() {
		t.Run(bc.name, func(t *testing.T) {
			raw := bc.load(t)
			bb := track(raw)
			r := model.NewRunner(bb)
			defer r.Close()
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(31, 32))
			L := bb.Info().Layers
			lowA := &exactLower{bb: raw, cut: 1, amp: 0.5, phase: 0.7}
			lowB := &exactLower{bb: raw, cut: L - 1, amp: 0.5, phase: 1.3}
			var (
				pTop     = lowerParams(t, bb, r, model.AdapterBottleneck, 8, []int{L}, model.HeadClassify, 1)
				pTopLoRA = lowerParams(t, bb, r, model.AdapterLoRA, 4, []int{L}, model.HeadEmbed, 2)
				pFull    = lowerParams(t, bb, r, model.AdapterBottleneck, 8, layersFrom(1, L), model.HeadEmbed, 3)
				pFullLR  = lowerParams(t, bb, r, model.AdapterLoRA, 8, layersFrom(1, L), model.HeadClassify, 4)
				pAboveA  = lowerParams(t, bb, r, model.AdapterLoRA, 4, layersFrom(2, L), model.HeadClassify, 5)
			)
			var items []model.Item
			add := func(lower model.Lower, ps ...*model.DeviceParams) {
				for _, p := range ps {
					for _, s := range randomIDs(bb, rng, 2, 30) {
						items = append(items, model.Item{IDs: s, Params: p, Lower: lower})
					}
				}
			}
			add(nil, pTop, pTopLoRA, pFull, pFullLR, pAboveA, nil)
			add(lowA, pTop, pTopLoRA, pAboveA, nil)
			add(lowB, pTop, pTopLoRA, nil)
			rng.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
			interleaved := items
			// At each start-layer boundary of the sorted batch, the same
			// adapter class and the same params continue: full-mode pFull
			// (adapting the lower layers) and pTop, then pTop in plot mode
			// at each cut. They must stay apart (a class or group spanning
			// two start layers would be skipped, or overrun the state,
			// while the lower layers run).
			items = nil
			add(nil, pFull, pTop)
			add(lowA, pTop)
			add(lowB, pTop)
			for _, c := range []struct {
				name  string
				items []model.Item
			}{{"interleaved", interleaved}, {"boundaries", items}} {
				mixed, err := r.Forward(ctx, c.items)
				if err != nil {
					t.Fatal(err)
				}
				if len(bb.live) != 0 {
					t.Errorf("%s: %d states not released", c.name, len(bb.live))
				}
				worst, least := 0.0, math.Inf(1)
				for i, it := range c.items {
					alone, err := r.Forward(ctx, []model.Item{it})
					if err != nil {
						t.Fatal(err)
					}
					if len(alone[0]) != len(mixed[i]) {
						t.Fatalf("%s item %d: %d values alone, %d mixed", c.name, i, len(alone[0]), len(mixed[i]))
					}
					d := maxAbsDiff(alone[0], mixed[i])
					worst = max(worst, d)
					if d > mixedTol {
						t.Errorf("%s item %d (cut %d): mixed differs from alone by %g", c.name, i, cutOf(it), d)
					}
					if it.Lower == nil {
						continue
					}
					// The perturbed Lower must matter, or a plot row
					// served in full mode would pass.
					full, err := r.Forward(ctx, []model.Item{{IDs: it.IDs, Params: it.Params}})
					if err != nil {
						t.Fatal(err)
					}
					dm := maxAbsDiff(full[0], alone[0])
					least = min(least, dm)
					if dm < 1e-3 {
						t.Errorf("%s item %d (cut %d): plot mode differs from full mode by only %g", c.name, i, cutOf(it), dm)
					}
				}
				t.Logf("%s: %d items: worst mixed-vs-alone difference %.3g; plot vs full differ by at least %.3g",
					c.name, len(c.items), worst, least)
			}
		})
	}
}

func cutOf(it model.Item) int {
	if it.Lower == nil {
		return 0
	}
	return it.Lower.Cut()
}

// TestForwardLowerErrors: an adapter at or below its item's cut, a cut
// outside 1..Layers-1, and a plot-mode text with no ids give ErrBadInput; a
// failing Lower gives its error, wrapped. No state is left unreleased and
// the runner answers as before afterwards.
func TestForwardLowerErrors(t *testing.T) {
	for _, bc := range backbones() {
		t.Run(bc.name, func(t *testing.T) {
			raw := bc.load(t)
			bb := track(raw)
			r := model.NewRunner(bb)
			defer r.Close()
			ctx := context.Background()
			L := bb.Info().Layers
			ids := randomIDs(bb, rand.New(rand.NewPCG(41, 42)), 3, 20)
			low1 := &exactLower{bb: raw, cut: 1, amp: 0.5, phase: 0.3}
			lowTop := &exactLower{bb: raw, cut: L - 1}
			pTop := lowerParams(t, bb, r, model.AdapterBottleneck, 4, []int{L}, model.HeadClassify, 1)
			good := []model.Item{
				{IDs: ids[0], Params: pTop},
				{IDs: ids[1], Params: pTop, Lower: low1},
				{IDs: ids[2], Lower: lowTop},
			}
			want, err := r.Forward(ctx, good)
			if err != nil {
				t.Fatal(err)
			}
			pAtCut := lowerParams(t, bb, r, model.AdapterLoRA, 4, []int{L - 1}, model.HeadEmbed, 2)
			pAll := lowerParams(t, bb, r, model.AdapterBottleneck, 4, layersFrom(1, L), model.HeadEmbed, 3)
			for _, c := range []struct {
				name  string
				items []model.Item
				want  error
			}{
				{"adapter at the cut", []model.Item{good[0], {IDs: ids[1], Params: pAtCut, Lower: lowTop}}, model.ErrBadInput},
				{"adapter below the cut", []model.Item{{IDs: ids[1], Params: pAll, Lower: lowTop}, good[2]}, model.ErrBadInput},
				{"cut 0", []model.Item{good[0], {IDs: ids[1], Lower: &exactLower{bb: raw, cut: 0}}}, model.ErrBadInput},
				{"cut at the last layer", []model.Item{{IDs: ids[1], Lower: &exactLower{bb: raw, cut: L}}}, model.ErrBadInput},
				{"cut negative", []model.Item{{IDs: ids[1], Lower: &exactLower{bb: raw, cut: -1}}}, model.ErrBadInput},
				{"no ids", []model.Item{good[0], {IDs: []int32{}, Params: pTop, Lower: zeroLower{1}}}, model.ErrBadInput},
				{"lower fails alone", []model.Item{{IDs: ids[0], Lower: failLower{1}}}, errLowerFailed},
				// Full rows and cut-1 rows are in a state when the
				// Lower at the last cut fails: that state is released.
				{"lower fails mid-pass", append([]model.Item{{IDs: ids[0], Lower: failLower{L - 1}}}, good...), errLowerFailed},
			} {
				_, err := r.Forward(ctx, c.items)
				if !errors.Is(err, c.want) {
					t.Errorf("%s: got %v, want %v", c.name, err, c.want)
				}
				if len(bb.live) != 0 {
					t.Errorf("%s: %d states not released", c.name, len(bb.live))
				}
				got, err := r.Forward(ctx, good)
				if err != nil {
					t.Fatalf("after %s: %v", c.name, err)
				}
				for i := range want {
					if d := maxAbsDiff(want[i], got[i]); d > 0 {
						t.Errorf("after %s: item %d answers differently by %g", c.name, i, d)
					}
				}
			}
		})
	}
}

// zeroLower is a Lower at cut that writes zero states.
type zeroLower struct{ cut int }

func (l zeroLower) Cut() int { return l.cut }
func (l zeroLower) Lower(_ []int32, dst []float32) error {
	clear(dst)
	return nil
}

// TestForwardLowerAllocs: Forward's host buffers for plot-mode rows are
// reused, so the allocations of a pass do not grow with its tokens.
func TestForwardLowerAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are checked without -race (make test runs them so)")
	}
	for _, bc := range backbones() {
		t.Run(bc.name, func(t *testing.T) {
			bb := bc.load(t)
			r := model.NewRunner(bb)
			defer r.Close()
			ctx := context.Background()
			L := bb.Info().Layers
			p := lowerParams(t, bb, r, model.AdapterLoRA, 4, []int{L}, model.HeadClassify, 1)
			rng := rand.New(rand.NewPCG(51, 52))
			allocs := func(maxLen int) float64 {
				var items []model.Item
				for i, s := range randomIDs(bb, rng, 8, maxLen) {
					items = append(items, model.Item{IDs: s, Params: p, Lower: zeroLower{1 + i%(L-1)}})
				}
				items = append(items, model.Item{IDs: items[0].IDs, Params: p})
				return testing.AllocsPerRun(5, func() {
					if _, err := r.Forward(ctx, items); err != nil {
						t.Fatal(err)
					}
				})
			}
			short, long := allocs(4), allocs(60)
			if long > short {
				t.Errorf("%.0f allocations for short texts, %.0f for long ones", short, long)
			}
			t.Logf("%.0f allocations per pass", long)
		})
	}
}
