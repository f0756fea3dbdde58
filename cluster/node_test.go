package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/storage"
)

type testNode struct {
	*Node
	store *storage.Store
	cat   *storage.Catalog
	bb    model.Backbone
}

// startNode starts a node on the real use-lite backbone and an on-disk
// Badger in a temp dir.
func startNode(t *testing.T, cfg NodeConfig) *testNode {
	t.Helper()
	z := testenv.UseLite(t)
	dev, err := cpu.New(cpu.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	bb, err := z.Load(dev, "use-lite")
	if err != nil {
		t.Fatal(err)
	}
	store, err := storage.Open(storage.DefaultOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	cat := storage.NewCatalog(store)
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	n, err := Start(context.Background(), cfg, store, cat, bb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			t.Error(err)
		}
		bb.Close()
		dev.Close()
		store.Close()
	})
	return &testNode{Node: n, store: store, cat: cat, bb: bb}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestNodeServesThroughActors creates vPLMs through the service and checks
// each answer against the same params run directly on a Runner, with many
// vPLMs' requests in flight together (so batches are mixed).
func TestNodeServesThroughActors(t *testing.T) {
	n := startNode(t, DefaultNodeConfig())
	ctx := ctxT(t)
	svc := n.Service()
	const models = 12
	for i := range models {
		spec := actors.CreateSpec{ID: fmt.Sprintf("m%02d", i), Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"neg", "pos", "mixed"}}
		if i%2 == 1 {
			spec = actors.CreateSpec{ID: fmt.Sprintf("m%02d", i), Task: smilepb.Task_TASK_EMBED, Adapter: model.AdapterLoRA, Rank: 8}
		}
		if _, err := svc.Create(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	// Give every vPLM distinct non-zero params (a trained adapter) so a
	// mix-up between vPLMs in a batch would show.
	ref := map[string]*model.Params{}
	for i := range models {
		id := fmt.Sprintf("m%02d", i)
		v, err := n.cat.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		spec := model.ParamsSpec{Adapter: model.AdapterBottleneck, Rank: model.DefaultRank, Head: model.HeadClassify, Labels: v.Labels}
		if v.Task == smilepb.Task_TASK_EMBED {
			spec = model.ParamsSpec{Adapter: model.AdapterLoRA, Rank: 8, Head: model.HeadEmbed}
		}
		p, err := model.RandomParams(n.bb, spec, uint64(100+i), 0.05)
		if err != nil {
			t.Fatal(err)
		}
		dg, err := n.store.PutBlob(p.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.cat.Apply(&smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_NewVersion{NewVersion: &smilepb.NewVersion{Id: id, Version: 2, ParamsDigest: dg}}}); err != nil {
			t.Fatal(err)
		}
		ref[id] = p
	}
	texts := []string{"the movie was great", "a dull and tiresome film", "stock prices fell sharply on monday", "ok"}
	type answer struct {
		id   string
		outs [][]float32
		ver  uint64
	}
	var mu sync.Mutex
	var got []answer
	var wg sync.WaitGroup
	errc := make(chan error, models*4)
	for rep := range 4 {
		for i := range models {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("m%02d", i)
				ts := texts[rep%len(texts):]
				var a answer
				a.id = id
				if i%2 == 0 {
					r, err := svc.Classify(ctx, id, ts)
					if err != nil {
						errc <- err
						return
					}
					for _, p := range r.Predictions {
						a.outs = append(a.outs, p.Probs)
					}
					a.ver = r.Version
				} else {
					r, err := svc.Embed(ctx, id, ts)
					if err != nil {
						errc <- err
						return
					}
					for _, v := range r.Embeddings {
						a.outs = append(a.outs, v.Values)
					}
					a.ver = r.Version
				}
				mu.Lock()
				got = append(got, a)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// Reference: a second copy of the backbone, each vPLM alone.
	dev, _ := cpu.New(cpu.DefaultConfig())
	defer dev.Close()
	z := testenv.UseLite(t)
	bb2, err := z.Load(dev, "use-lite")
	if err != nil {
		t.Fatal(err)
	}
	defer bb2.Close()
	r := model.NewRunner(bb2)
	defer r.Close()
	want := map[string][][]float32{}
	for id, p := range ref {
		dp, err := r.UploadParams(p)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := model.Tokenize(bb2, texts, model.DefaultEmbedOptions())
		if err != nil {
			t.Fatal(err)
		}
		var items []model.Item
		for _, s := range ids {
			items = append(items, model.Item{IDs: s, Params: dp})
		}
		out, err := r.Forward(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = out
		dp.Free()
	}
	const tol = 1e-5 // summation order differs between batch shapes
	for _, a := range got {
		if a.ver != 2 {
			t.Errorf("%s answered version %d, want 2", a.id, a.ver)
		}
		w := want[a.id][len(want[a.id])-len(a.outs):]
		for k := range a.outs {
			if len(a.outs[k]) != len(w[k]) {
				t.Fatalf("%s text %d: %d outputs, want %d", a.id, k, len(a.outs[k]), len(w[k]))
			}
			for j := range w[k] {
				if d := math.Abs(float64(a.outs[k][j] - w[k][j])); d > tol {
					t.Fatalf("%s text %d output %d: %g vs alone %g", a.id, k, j, a.outs[k][j], w[k][j])
				}
			}
		}
	}
	st, err := svc.DeviceStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("device: %d batches, %d rows, host tier %d entries, device tier %d entries", st[0].Batches, st[0].Rows, st[0].HostEntries, st[0].DeviceEntries)
	if st[0].Batches >= st[0].Rows {
		t.Errorf("no batching: %d batches for %d rows", st[0].Batches, st[0].Rows)
	}
}

func TestNodeErrors(t *testing.T) {
	cfg := DefaultNodeConfig()
	cfg.VPLM.MaxTexts = 4
	cfg.VPLM.MaxTextBytes = 100
	n := startNode(t, cfg)
	ctx := ctxT(t)
	svc := n.Service()
	if _, err := svc.Create(ctx, actors.CreateSpec{ID: "c", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	long := string(make([]byte, 101))
	cases := []struct {
		name  string
		call  func() error
		want  error
		code  string
		index int
	}{
		{"unknown model", func() error { _, err := svc.Classify(ctx, "nope", []string{"x"}); return err }, actors.ErrNotFound, actors.CodeNotFound, -1},
		{"invalid id", func() error { _, err := svc.Classify(ctx, "NO/PE", []string{"x"}); return err }, actors.ErrNotFound, actors.CodeNotFound, -1},
		{"wrong task", func() error { _, err := svc.Embed(ctx, "c", []string{"x"}); return err }, actors.ErrWrongTask, actors.CodeWrongTask, -1},
		{"too many texts", func() error { _, err := svc.Classify(ctx, "c", []string{"a", "b", "c", "d", "e"}); return err }, actors.ErrTooManyTexts, actors.CodeTooManyTexts, -1},
		{"text too long", func() error { _, err := svc.Classify(ctx, "c", []string{"fine", long}); return err }, model.ErrTextTooLong, actors.CodeTextTooLong, 1},
		{"empty text", func() error { _, err := svc.Classify(ctx, "c", []string{"fine", "ok", ""}); return err }, model.ErrEmptyText, actors.CodeEmptyText, 2},
		{"invalid utf-8", func() error { _, err := svc.Classify(ctx, "c", []string{"\xff\xfe"}); return err }, nil, actors.CodeInvalidUTF8, 0},
		{"no texts", func() error { _, err := svc.Classify(ctx, "c", nil); return err }, actors.ErrBadRequest, actors.CodeBadRequest, -1},
		{"duplicate", func() error {
			_, err := svc.Create(ctx, actors.CreateSpec{ID: "c", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"a", "b"}})
			return err
		}, nil, actors.CodeExists, -1},
		{"bad spec", func() error {
			_, err := svc.Create(ctx, actors.CreateSpec{ID: "d", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"only-one"}})
			return err
		}, actors.ErrBadRequest, actors.CodeBadRequest, -1},
		{"bad rank", func() error {
			_, err := svc.Create(ctx, actors.CreateSpec{ID: "d", Task: smilepb.Task_TASK_EMBED, Rank: 100000})
			return err
		}, actors.ErrBadRequest, actors.CodeBadRequest, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if err == nil {
				t.Fatal("no error")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("error %v is not %v", err, c.want)
			}
			if got := actors.Code(err); got != c.code {
				t.Errorf("code %q, want %q (%v)", got, c.code, err)
			}
			if got := actors.TextIndex(err); got != c.index {
				t.Errorf("text index %d, want %d", got, c.index)
			}
		})
	}
	// Delete: the active actor must stop answering.
	if _, err := svc.Classify(ctx, "c", []string{"warm it up"}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Classify(ctx, "c", []string{"x"}); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("classify after delete: %v", err)
	}
	if err := svc.Delete(ctx, "c"); !errors.Is(err, storage.ErrNotFound) && actors.Code(err) != actors.CodeNotFound {
		t.Fatalf("second delete: %v", err)
	}
}

// TestNodePassivation: an idle vPLM actor stops and a later request
// activates it again, transparently.
func TestNodePassivation(t *testing.T) {
	cfg := DefaultNodeConfig()
	cfg.VPLM.PassivateAfter = 50 * time.Millisecond
	n := startNode(t, cfg)
	ctx := ctxT(t)
	svc := n.Service()
	if _, err := svc.Create(ctx, actors.CreateSpec{ID: "p", Task: smilepb.Task_TASK_EMBED}); err != nil {
		t.Fatal(err)
	}
	a, err := svc.Embed(ctx, "p", []string{"hello"})
	if err != nil {
		t.Fatal(err)
	}
	kind := n.cl.GetClusterKind(actors.KindVPLM)
	deadline := time.Now().Add(5 * time.Second)
	for kind.Count() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c := kind.Count(); c != 0 {
		t.Fatalf("%d vPLM actors still active after the idle time", c)
	}
	b, err := svc.Embed(ctx, "p", []string{"hello"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.Embeddings[0].Values {
		if a.Embeddings[0].Values[i] != b.Embeddings[0].Values[i] {
			t.Fatal("answer changed across passivation")
		}
	}
}

// TestNodeOverloadSheds: a flood beyond the queue bound gets overloaded or
// tenant errors quickly instead of queueing without bound, and the node
// keeps answering.
func TestNodeOverloadSheds(t *testing.T) {
	cfg := DefaultNodeConfig()
	cfg.Device.Sched.MaxQueued = 8
	cfg.Device.Sched.MaxQueuedPerTenant = 8
	n := startNode(t, cfg)
	ctx := ctxT(t)
	svc := n.Service()
	if _, err := svc.Create(ctx, actors.CreateSpec{ID: "o", Task: smilepb.Task_TASK_EMBED}); err != nil {
		t.Fatal(err)
	}
	if err := svc.PutTenant(ctx, &smilepb.Tenant{Name: "default", Weight: 1, MaxInflight: 200}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := svc.Embed(ctx, "o", []string{"a text that takes a little while to embed, repeated a few times over"})
			mu.Lock()
			codes[actors.Code(err)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("answers by code: %v", codes)
	if codes[""] == 0 || codes[actors.CodeOverloaded] == 0 {
		t.Fatalf("want some served and some shed as overloaded, got %v", codes)
	}
	if len(codes) != 2 {
		t.Fatalf("unexpected codes: %v", codes)
	}
	if _, err := svc.Embed(ctx, "o", []string{"still alive"}); err != nil {
		t.Fatal(err)
	}
	// A tenant over its in-flight limit gets its own code.
	if err := svc.PutTenant(ctx, &smilepb.Tenant{Name: "default", Weight: 1, MaxInflight: 1}); err != nil {
		t.Fatal(err)
	}
	codes = map[string]int{}
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := svc.Embed(ctx, "o", []string{"another text"})
			mu.Lock()
			codes[actors.Code(err)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("with max_inflight 1: %v", codes)
	if codes[actors.CodeTenantOverLimit] == 0 || codes[""] == 0 {
		t.Fatalf("want served and tenant_over_limit answers, got %v", codes)
	}
}

// TestNodeDeleteWithRequestsInFlight: deleting a busy vPLM answers every
// request in flight (served, or not_found) without any waiting out its
// deadline.
func TestNodeDeleteWithRequestsInFlight(t *testing.T) {
	n := startNode(t, DefaultNodeConfig())
	ctx := ctxT(t)
	svc := n.Service()
	if _, err := svc.Create(ctx, actors.CreateSpec{ID: "busy", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	start := time.Now()
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := svc.Classify(ctx, "busy", []string{"a text for the device to chew on for a moment"})
			mu.Lock()
			codes[actors.Code(err)]++
			mu.Unlock()
		}()
	}
	time.Sleep(5 * time.Millisecond)
	if err := svc.Delete(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	took := time.Since(start)
	t.Logf("answers around a delete: %v in %v", codes, took)
	if codes[""]+codes[actors.CodeNotFound] != 40 {
		t.Fatalf("answers by code %v: want only served or not_found", codes)
	}
	if took > 10*time.Second {
		t.Fatalf("answers took %v: some waited for a deadline", took)
	}
}
