package plot_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/bert"
	"github.com/smile-vplm/smile/model/plot"
)

type bbCase struct {
	name string
	load func(t testing.TB) model.Backbone
	cut  int
}

func cases() []bbCase {
	return []bbCase{
		{"use-lite", testenv.UseLiteBackbone, 1},
		{"bert-tiny", tinyBERT, 2},
	}
}

func tinyBERT(t testing.TB) model.Backbone {
	t.Helper()
	dev, err := cpu.New(cpu.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	bb, err := bert.NewRandom(dev, bert.TinyConfig(), 7)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bb.Close(); dev.Close() })
	return bb
}

func spec(t testing.TB, bb model.Backbone) *model.TrainSpec {
	t.Helper()
	s, err := bb.(model.Trainable).TrainSpec()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// lowerOf runs ids through bb's layers 1..cut as one sequence (float32).
func lowerOf(t testing.TB, bb model.Backbone, cut int, ids []int32) []float32 {
	t.Helper()
	ctx := context.Background()
	st, err := bb.Embed(ctx, [][]int32{ids})
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Release(st)
	if err := bb.RunLayers(ctx, st, cut, nil); err != nil {
		t.Fatal(err)
	}
	h := make([]float32, st.H.Rows*st.H.Cols)
	if err := bb.Device().Download(h, st.H); err != nil {
		t.Fatal(err)
	}
	return h
}

// mapSource is an in-memory plot.Source.
type mapSource map[plot.Gram][]byte

func (m mapSource) Entry(g plot.Gram) ([]byte, bool, error) {
	b, ok := m[g]
	return b, ok, nil
}

func randIDs(rng *rand.Rand, vocab, n int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
	}
	return ids
}

func maxAbs(v []float32) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, math.Abs(float64(x)))
	}
	return m
}

func checkClose(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	scale := max(maxAbs(want), 1)
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); d > tol*scale || math.IsNaN(float64(got[i])) {
			t.Fatalf("%s: value %d = %g, want %g (|diff| %g > %g)", what, i, got[i], want[i], d, tol*scale)
		}
	}
}

// fp16 relative tolerance of a stored state, against its largest value.
const fp16Tol = 1.5e-3

// A stored entry equals the lower layers' output for its n-gram run as a
// 3-, 2- or 1-token sequence.
func TestEntryMatchesLowerLayers(t *testing.T) {
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			bb := c.load(t)
			rng := rand.New(rand.NewPCG(1, 2))
			vocab := bb.Info().VocabSize
			var grams []plot.Gram
			for n := 1; n <= 3; n++ {
				for range 4 {
					g, err := plot.GramOf(randIDs(rng, vocab, n)...)
					if err != nil {
						t.Fatal(err)
					}
					grams = append(grams, g)
				}
			}
			entries, err := plot.Compute(context.Background(), bb, c.cut, grams)
			if err != nil {
				t.Fatal(err)
			}
			w := bb.StateWidth(c.cut)
			for i, g := range grams {
				got := make([]float32, int(g.N)*w)
				if err := plot.DecodeEntry(g, w, entries[i], got); err != nil {
					t.Fatal(err)
				}
				checkClose(t, g.String(), got, lowerOf(t, bb, c.cut, g.IDs()), fp16Tol)
			}
		})
	}
}

// fullTable computes every n-gram of texts (and every unigram of them) into
// an in-memory source.
func fullTable(t testing.TB, bb model.Backbone, cut int, texts [][]int32) (mapSource, []plot.Gram) {
	t.Helper()
	set := map[plot.Gram]bool{}
	for _, ids := range texts {
		for i := range ids {
			for n := 1; n <= 3 && i+n <= len(ids); n++ {
				g, _ := plot.GramOf(ids[i : i+n]...)
				set[g] = true
			}
		}
	}
	var grams []plot.Gram
	for g := range set {
		grams = append(grams, g)
	}
	slices.SortFunc(grams, plot.Gram.Compare)
	entries, err := plot.Compute(context.Background(), bb, cut, grams)
	if err != nil {
		t.Fatal(err)
	}
	src := mapSource{}
	for i, g := range grams {
		src[g] = entries[i]
	}
	return src, grams
}

// posAtCut is the embeddings' position rows carried along a pre-LN
// backbone's residual path to the cut (nil when the backbone normalises
// its embeddings or is post-LN).
func posAtCut(s *model.TrainSpec, cut int) []float32 {
	e := &s.Embedding
	if e.LNGamma != nil || len(e.Positions) == 0 {
		return nil
	}
	p, w := slices.Clone(e.Positions), e.Width
	rows := e.MaxPositions
	for l := range cut {
		b := &s.Blocks[l]
		if !b.PreLN {
			return nil
		}
		if b.ResW == nil {
			continue
		}
		q := make([]float32, rows*b.Out)
		for r := range rows {
			for k := range w {
				for j := range b.Out {
					q[r*b.Out+j] += p[r*w+k] * b.ResW[k*b.Out+j]
				}
			}
		}
		p, w = q, b.Out
	}
	return p
}

// direct is the merge written out plainly: for every position the n-gram
// that covers its window (trigram, left bigram, right bigram, unigram) per
// the set have, its rows from the backbone itself (float32), each position
// the mean of the rows it gets, then the position shift (pre-LN) or the
// cut layer's output norm (post-LN). It also returns the levels.
func direct(t testing.TB, bb model.Backbone, s *model.TrainSpec, cut int, ids []int32, have func(plot.Gram) bool) ([]float32, plot.Levels) {
	w := bb.StateWidth(cut)
	n := len(ids)
	sum := make([]float64, n*w)
	cnt := make([]int, n)
	slotCnt := make([][3]int, n)
	var lv plot.Levels
	try := func(lo, hi int) bool {
		g, _ := plot.GramOf(ids[lo:hi]...)
		if !have(g) {
			return false
		}
		h := lowerOf(t, bb, cut, ids[lo:hi])
		for j := range hi - lo {
			for x := range w {
				sum[(lo+j)*w+x] += float64(h[j*w+x])
			}
			cnt[lo+j]++
			slotCnt[lo+j][j]++
		}
		return true
	}
	for i := range n {
		lo, hi := max(0, i-1), min(n, i+2)
		switch {
		case try(lo, hi):
			lv.Full++
		case hi-lo == 3 && (try(i-1, i+1) || try(i, i+2)):
			lv.Partial++
		case hi-lo > 1 && try(i, i+1):
			lv.Unigram++
		default:
			lv.Zero++
		}
	}
	out := make([]float32, n*w)
	pos := posAtCut(s, cut)
	b := &s.Blocks[cut-1]
	for p := range n {
		row := make([]float64, w)
		for x := range w {
			if cnt[p] > 0 {
				row[x] = sum[p*w+x] / float64(cnt[p])
			}
		}
		if pos != nil {
			for x := range w {
				row[x] += float64(pos[p*w+x])
				for j := range 3 {
					if cnt[p] > 0 {
						row[x] -= float64(slotCnt[p][j]) / float64(cnt[p]) * float64(pos[j*w+x])
					}
				}
			}
		}
		if !b.PreLN {
			// The rows are the cut layer's norm outputs: take its affine
			// part off, normalise, put it back.
			var mean, vr float64
			for x := range row {
				row[x] = (row[x] - float64(b.LN2B[x])) / float64(b.LN2G[x])
				mean += row[x]
			}
			mean /= float64(w)
			for _, v := range row {
				vr += (v - mean) * (v - mean)
			}
			inv := 1 / math.Sqrt(vr/float64(w)+float64(b.LNEps))
			for x := range row {
				row[x] = (row[x]-mean)*inv*float64(b.LN2G[x]) + float64(b.LN2B[x])
			}
		}
		for x := range w {
			out[p*w+x] = float32(row[x])
		}
	}
	return out, lv
}

// The merged states equal the direct computation, with every window found
// whole and with every fallback level exercised.
func TestMergeMatchesDirect(t *testing.T) {
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			bb := c.load(t)
			s := spec(t, bb)
			rng := rand.New(rand.NewPCG(3, 4))
			vocab := min(bb.Info().VocabSize, 8000)
			texts := [][]int32{randIDs(rng, vocab, 1), randIDs(rng, vocab, 2), randIDs(rng, vocab, 3), randIDs(rng, vocab, 9)}
			src, grams := fullTable(t, bb, c.cut, texts)
			m, err := plot.NewMerger(s, c.cut)
			if err != nil {
				t.Fatal(err)
			}
			w := m.Width()
			long := texts[3]
			// Drop n-grams so that the long text's positions use each
			// level: position 2 loses its trigram and left bigram (right
			// bigram), 4 its trigram (left bigram), 6 its trigram and
			// both bigrams (unigram), 8 (the end) its whole window and
			// its unigram (nothing).
			drop := map[plot.Gram]bool{}
			dropIDs := func(ids ...int32) { g, _ := plot.GramOf(ids...); drop[g] = true }
			dropIDs(long[1:4]...)
			dropIDs(long[1:3]...)
			dropIDs(long[3:6]...)
			dropIDs(long[5:8]...)
			dropIDs(long[5:7]...)
			dropIDs(long[6:8]...)
			dropIDs(long[7:9]...)
			dropIDs(long[8])
			var kept []plot.Gram
			for _, g := range grams {
				if !drop[g] {
					kept = append(kept, g)
				}
			}
			have := func(g plot.Gram) bool { _, ok := src[g]; return ok && !drop[g] }
			for _, variant := range []struct {
				name  string
				grams []plot.Gram
				have  func(plot.Gram) bool
			}{{"whole", grams, func(g plot.Gram) bool { _, ok := src[g]; return ok }}, {"fallbacks", kept, have}} {
				tab := plot.NewTable("t", m, variant.grams, src, 1<<20, nil)
				var total plot.Levels
				for i, ids := range texts {
					got := make([]float32, len(ids)*w)
					if err := tab.Lower(ids, got); err != nil {
						t.Fatal(err)
					}
					want, lv := direct(t, bb, s, c.cut, ids, variant.have)
					total.Add(lv)
					checkClose(t, variant.name+" text "+string(rune('0'+i)), got, want, 4*fp16Tol)
				}
				st := tab.Stats()
				if st.Levels != total {
					t.Fatalf("%s: levels %+v, want %+v", variant.name, st.Levels, total)
				}
				if variant.name == "fallbacks" {
					// Text lengths 1+2+3+9: the long text has 4 dropped windows.
					if total.Partial != 2 || total.Unigram != 1 || total.Zero != 1 {
						t.Fatalf("fallbacks exercised %+v, want 2 partial (left and right bigram), 1 unigram, 1 zero", total)
					}
				} else if total.Full != 15 {
					t.Fatalf("whole windows: %+v, want 15 full", total)
				}
			}
		})
	}
}

// A corrupted entry is detected by its checksum: counted, reported once,
// and the position falls back to the next level.
func TestCorruptEntryDetected(t *testing.T) {
	bb := tinyBERT(t)
	s := spec(t, bb)
	const cut = 2
	rng := rand.New(rand.NewPCG(5, 6))
	ids := randIDs(rng, bb.Info().VocabSize, 5)
	src, grams := fullTable(t, bb, cut, [][]int32{ids})
	m, err := plot.NewMerger(s, cut)
	if err != nil {
		t.Fatal(err)
	}
	tri, _ := plot.GramOf(ids[1:4]...)
	bad := slices.Clone(src[tri])
	bad[7] ^= 0x40
	src[tri] = bad
	var reported []error
	tab := plot.NewTable("t", m, grams, src, 1<<20, func(g plot.Gram, err error) {
		if g != tri {
			t.Errorf("reported %v, want %v", g, tri)
		}
		reported = append(reported, err)
	})
	w := m.Width()
	got := make([]float32, len(ids)*w)
	for range 2 {
		if err := tab.Lower(ids, got); err != nil {
			t.Fatal(err)
		}
	}
	if st := tab.Stats(); st.Corrupt != 1 || st.Partial != 2 || st.Full != 8 {
		t.Fatalf("stats %+v: want 1 corrupt entry, read once, and position 2 twice from a bigram", st)
	}
	if len(reported) != 1 || !errors.Is(reported[0], plot.ErrCorrupt) {
		t.Fatalf("reported %v, want one ErrCorrupt", reported)
	}
	want, _ := direct(t, bb, s, cut, ids, func(g plot.Gram) bool { return g != tri })
	checkClose(t, "fallback", got, want, 4*fp16Tol)

	// Listed but not stored is corrupt too.
	delete(src, tri)
	tab = plot.NewTable("t", m, grams, src, 1<<20, nil)
	if err := tab.Lower(ids, got); err != nil {
		t.Fatal(err)
	}
	if st := tab.Stats(); st.Corrupt != 1 {
		t.Fatalf("missing entry: %+v", st)
	}

	// The entry checks themselves.
	good, err := plot.EncodeEntry(tri, w, make([]float32, 3*w))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := plot.GramOf(ids[0:3]...)
	for name, b := range map[string][]byte{"short": good[:len(good)-1], "flipped": append(slices.Clone(good[:10]), append([]byte{good[10] ^ 1}, good[11:]...)...), "empty": nil} {
		if _, err := plot.CheckEntry(tri, w, b); !errors.Is(err, plot.ErrCorrupt) {
			t.Errorf("%s entry: %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := plot.CheckEntry(other, w, good); !errors.Is(err, plot.ErrCorrupt) {
		t.Errorf("entry under another n-gram's key: %v, want ErrCorrupt", err)
	}
	if _, err := plot.EncodeEntry(tri, w, append(make([]float32, 3*w-1), 1e6)); !errors.Is(err, model.ErrBadInput) {
		t.Errorf("an entry beyond fp16: %v, want ErrBadInput", err)
	}
}

// A small memory budget keeps the cache within it and changes no answer.
func TestTableCacheBound(t *testing.T) {
	bb := tinyBERT(t)
	s := spec(t, bb)
	rng := rand.New(rand.NewPCG(7, 8))
	var texts [][]int32
	for range 6 {
		texts = append(texts, randIDs(rng, bb.Info().VocabSize, 12))
	}
	src, grams := fullTable(t, bb, 1, texts)
	m, err := plot.NewMerger(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	w := m.Width()
	big := plot.NewTable("big", m, grams, src, 1<<30, nil)
	limit := int64(10 * 2 * 3 * w)
	small := plot.NewTable("small", m, grams, src, limit, nil)
	if n := big.Warm(grams); n != len(grams) {
		t.Fatalf("warmed %d of %d", n, len(grams))
	}
	for round := range 2 {
		for _, ids := range texts {
			a, b := make([]float32, len(ids)*w), make([]float32, len(ids)*w)
			if err := big.Lower(ids, a); err != nil {
				t.Fatal(err)
			}
			if err := small.Lower(ids, b); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a, b) {
				t.Fatalf("round %d: a bounded cache changed the states", round)
			}
		}
	}
	ss, bs := small.Stats(), big.Stats()
	// Every lookup of the second round repeats one of the first: reads
	// beyond half the lookups are re-reads of evicted entries.
	if ss.MemoryBytes > limit || ss.SourceReads <= ss.Full/2 {
		t.Fatalf("small cache: %+v (limit %d, %d n-grams): want bounded memory and re-reads", ss, limit, len(grams))
	}
	if bs.SourceReads != int64(len(grams)) || bs.MemoryHits == 0 {
		t.Fatalf("warm cache: %+v", bs)
	}
}

func TestCounterExtendID(t *testing.T) {
	c := plot.NewCounter()
	c.Add([]int32{1, 2, 3, 1, 2})
	c.Add([]int32{1, 2})
	c.Add([]int32{7})
	g := func(ids ...int32) plot.Gram { x, _ := plot.GramOf(ids...); return x }
	// Windows: [1 2] [1 2 3] [2 3 1] [3 1 2] [1 2], and [1 2] twice (a
	// 2-id text's two windows); pairs: [1 2] [2 3] [3 1] [1 2], [1 2].
	for _, tc := range []struct {
		g    plot.Gram
		want int64
	}{{g(1, 2), 7}, {g(2, 3), 1}, {g(1, 2, 3), 1}, {g(3, 1, 2), 1}, {g(7), 0}} {
		if got := c.Count(tc.g); got != tc.want {
			t.Errorf("count %v = %d, want %d", tc.g, got, tc.want)
		}
	}
	if c.Sequences() != 3 || c.Positions() != 8 {
		t.Errorf("sequences %d positions %d", c.Sequences(), c.Positions())
	}
	ranked := c.Ranked()
	if ranked[0] != g(1, 2) || len(ranked) != c.Len() {
		t.Fatalf("ranked %v", ranked)
	}
	base := plot.Vocabulary(10)
	const w = 4
	all, added := plot.Extend(base, ranked, w, 0)
	if added != len(ranked) || len(all) != 10+len(ranked) {
		t.Fatalf("extend without budget: added %d", added)
	}
	budget := int64(plot.EntryLen(2, w) + plot.EntryLen(2, w)) // [1 2] then [2 3]... stops before a trigram that does not fit
	some, added := plot.Extend(base, ranked, w, budget)
	if plot.Bytes(some[10:], w) > budget || added != len(some)-10 || added == 0 || some[10] != g(1, 2) {
		t.Fatalf("extend with budget %d: %v (added %d)", budget, some[10:], added)
	}
	id1, err := plot.TableID("bb", 1, all)
	if err != nil {
		t.Fatal(err)
	}
	rev := slices.Clone(all)
	slices.Reverse(rev)
	id2, _ := plot.TableID("bb", 1, rev)
	id3, _ := plot.TableID("bb", 2, all)
	if id1 != id2 || id1 == id3 {
		t.Fatalf("table ids: %s %s %s: want order-independent, cut-dependent", id1, id2, id3)
	}
	if _, err := plot.TableID("bb", 1, append(all, g(1, 2))); !errors.Is(err, model.ErrBadInput) {
		t.Fatalf("duplicate n-gram: %v", err)
	}
	back, err := plot.DecodeGrams(plot.EncodeGrams(all))
	if err != nil || !slices.Equal(back, all) {
		t.Fatalf("grams round trip: %v", err)
	}
	enc := plot.EncodeGrams(all)
	enc[3] ^= 1
	if _, err := plot.DecodeGrams(enc); !errors.Is(err, plot.ErrCorrupt) {
		t.Fatalf("corrupt gram list: %v", err)
	}
	if _, err := plot.GramOf(); err == nil {
		t.Fatal("empty gram accepted")
	}
	if _, err := plot.GramOf(1, -2); err == nil {
		t.Fatal("negative id accepted")
	}
	if _, err := plot.NewMerger(&model.TrainSpec{Blocks: make([]model.BlockSpec, 2)}, 2); !errors.Is(err, model.ErrBadInput) {
		t.Fatalf("cut at the top: %v", err)
	}
}

func FuzzDecodeGrams(f *testing.F) {
	f.Add(plot.EncodeGrams(plot.Vocabulary(3)))
	f.Add([]byte{2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		grams, err := plot.DecodeGrams(b)
		if err != nil {
			if !errors.Is(err, plot.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if !slices.Equal(plot.EncodeGrams(grams), b) {
			t.Fatal("decoded list does not encode back to its bytes")
		}
	})
}

func FuzzCheckEntry(f *testing.F) {
	g, _ := plot.GramOf(1, 2, 3)
	e, _ := plot.EncodeEntry(g, 2, []float32{1, 2, 3, 4, 5, 6})
	f.Add(uint8(3), e)
	f.Add(uint8(1), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, n uint8, b []byte) {
		ids := []int32{1, 2, 3}[:1+int(n)%3]
		g, _ := plot.GramOf(ids...)
		dst := make([]float32, len(ids)*2)
		if err := plot.DecodeEntry(g, 2, b, dst); err != nil && !errors.Is(err, plot.ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
		if k, err := plot.ParseKey(b); err == nil && !slices.Equal(k.AppendKey(nil), b) {
			t.Fatal("parsed key does not encode back")
		}
	})
}

// memKV is an in-memory plot.KeyValue.
type memKV map[string][]byte

func (m memKV) Get(k []byte) ([]byte, bool, error) { v, ok := m[string(k)]; return v, ok, nil }
func (m memKV) Has(ks [][]byte) ([]bool, error) {
	out := make([]bool, len(ks))
	for i, k := range ks {
		_, out[i] = m[string(k)]
	}
	return out, nil
}
func (m memKV) Put(ks, vs [][]byte) error {
	for i, k := range ks {
		m[string(k)] = vs[i]
	}
	return nil
}

// An interrupted build keeps what it stored; a rerun computes only the
// rest, and the entries are what Compute gives.
func TestBuildResumes(t *testing.T) {
	bb := tinyBERT(t)
	grams := plot.Vocabulary(bb.Info().VocabSize)
	c := plot.NewCounter()
	rng := rand.New(rand.NewPCG(9, 9))
	for range 5 {
		c.Add(randIDs(rng, bb.Info().VocabSize, 10))
	}
	grams, _ = plot.Extend(grams, c.Ranked(), bb.StateWidth(1), 0)
	kv := memKV{}
	e := plot.Entries{KV: kv}
	ctx, cancel := context.WithCancel(context.Background())
	var seen [][2]int
	n, err := plot.Build(ctx, bb, 1, grams, e, 32, nil, func(done, total int) {
		seen = append(seen, [2]int{done, total})
		if done >= 64 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || n != 64 || len(kv) != 64 {
		t.Fatalf("interrupted build: computed %d, stored %d, err %v", n, len(kv), err)
	}
	if seen[0] != [2]int{0, len(grams)} {
		t.Fatalf("progress %v", seen)
	}
	execs := 0
	n, err = plot.Build(context.Background(), bb, 1, grams, e, 0, func(_ context.Context, tokens int, work func() error) error {
		execs++
		if tokens <= 0 {
			t.Errorf("work of %d tokens", tokens)
		}
		return work()
	}, nil)
	if err != nil || n != len(grams)-64 || len(kv) != len(grams) || execs != (n+plot.DefaultBatch-1)/plot.DefaultBatch {
		t.Fatalf("resumed build: computed %d of %d, stored %d, %d work items, %v", n, len(grams), len(kv), execs, err)
	}
	want, err := plot.Compute(context.Background(), bb, 1, grams)
	if err != nil {
		t.Fatal(err)
	}
	// Values agree up to the GEMM's rounding in batches of other sizes.
	w := bb.StateWidth(1)
	for i, g := range grams {
		b, ok, _ := e.Entry(g)
		if !ok {
			t.Fatalf("entry %v not stored", g)
		}
		got, exp := make([]float32, int(g.N)*w), make([]float32, int(g.N)*w)
		if err := plot.DecodeEntry(g, w, b, got); err != nil {
			t.Fatal(err)
		}
		if err := plot.DecodeEntry(g, w, want[i], exp); err != nil {
			t.Fatal(err)
		}
		checkClose(t, g.String(), got, exp, 2e-3)
	}
	if miss, err := e.Missing(grams); err != nil || len(miss) != 0 {
		t.Fatalf("missing after build: %d %v", len(miss), err)
	}
}

// Leave-one-out lookups hide the n-grams only the text itself holds and
// find the ones another text shares.
func TestLeaveOneOut(t *testing.T) {
	bb := tinyBERT(t)
	s := spec(t, bb)
	a := []int32{5, 6, 7, 8}
	b := []int32{9, 6, 7, 3} // shares [6 7] with a
	src, grams := fullTable(t, bb, 1, [][]int32{a, b})
	m, err := plot.NewMerger(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	tab := plot.NewTable("t", m, grams, src, 1<<20, nil)
	counts := plot.NewCounter()
	counts.Add(a)
	counts.Add(b)
	loo := plot.LeaveOneOut{Table: tab, Counts: counts}
	w := m.Width()
	got := make([]float32, len(a)*w)
	if err := loo.Lower(a, got); err != nil {
		t.Fatal(err)
	}
	shared := func(g plot.Gram) bool {
		if g.N == 1 {
			return true
		}
		return counts.Count(g) > 1 && (g == plot.Gram{N: 2, T: [3]int32{6, 7}})
	}
	want, lv := direct(t, bb, s, 1, a, shared)
	checkClose(t, "leave-one-out", got, want, 4*fp16Tol)
	// a's windows: [5 6] unique -> unigram; [5 6 7] unique -> [6 7]
	// (right bigram); [6 7 8] -> [6 7] (left); [7 8] unique -> unigram.
	// Hidden lookups are training's: the table's (serving's) hit levels
	// do not count them.
	if lv.Partial != 2 || lv.Unigram != 2 || tab.Stats().Levels != (plot.Levels{}) {
		t.Fatalf("levels %+v (table %+v)", lv, tab.Stats().Levels)
	}
	if loo.Cut() != 1 {
		t.Fatal("cut")
	}
}

// Where a position's state comes from one row (a 1-token text: its
// unigram), the merge gives the backbone's own state back.
func TestMergeSingleRowExact(t *testing.T) {
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			bb := c.load(t)
			m, err := plot.NewMerger(spec(t, bb), c.cut)
			if err != nil {
				t.Fatal(err)
			}
			ids := []int32{17}
			src, grams := fullTable(t, bb, c.cut, [][]int32{ids})
			tab := plot.NewTable("t", m, grams, src, 1<<20, nil)
			got := make([]float32, m.Width())
			if err := tab.Lower(ids, got); err != nil {
				t.Fatal(err)
			}
			checkClose(t, "one token", got, lowerOf(t, bb, c.cut, ids), 2*fp16Tol)
		})
	}
}

// errSource fails every read.
type errSource struct{}

func (errSource) Entry(plot.Gram) ([]byte, bool, error) {
	return nil, false, errors.New("disk on fire")
}

// A failed read (not a corrupt entry) fails the call: an answer from
// shorter n-grams would be wrong without saying so.
func TestReadErrorFails(t *testing.T) {
	bb := tinyBERT(t)
	m, err := plot.NewMerger(spec(t, bb), 1)
	if err != nil {
		t.Fatal(err)
	}
	tab := plot.NewTable("t", m, plot.Vocabulary(bb.Info().VocabSize), errSource{}, 1<<20, nil)
	dst := make([]float32, 2*m.Width())
	if err := tab.Lower([]int32{3, 4}, dst); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("read error: %v", err)
	}
	if st := tab.Stats(); st.ReadErrors == 0 || st.Corrupt != 0 || st.Sequences != 0 {
		t.Fatalf("stats %+v", st)
	}
}
