package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/plot"
	"github.com/smile-vplm/smile/storage"
)

// Tests of PLOT tables (lower-layer skipping) through a whole node on the
// real use-lite backbone: building tables as jobs, sharing and extending
// them, resuming a build, corrupt entries, and plot-mode vPLMs that serve
// and train from a table.

// corpusJSONL is uploaded corpus texts, one {"text"} a line (labels
// optional).
func corpusJSONL(texts ...string) []byte {
	var b strings.Builder
	for i, s := range texts {
		rec := map[string]any{"text": s}
		if i%2 == 0 {
			rec["label"] = "x" // ignored
		}
		j, _ := json.Marshal(rec)
		b.Write(j)
		b.WriteString("\n")
	}
	return []byte(b.String())
}

// buildTable builds a table and waits for its job to end.
func buildTable(t *testing.T, ctx context.Context, svc *actors.Service, req *smilepb.TableRequest) *smilepb.TrainJob {
	t.Helper()
	job, err := svc.BuildTable(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if job.Kind != actors.JobKindTable || job.Table == "" {
		t.Fatalf("table job %v", job)
	}
	final, _ := wait(t, ctx, svc, job.Id)
	if final.State != smilepb.JobState_JOB_SUCCEEDED {
		t.Fatalf("table job ended %v", final)
	}
	return final
}

// tableList reads a table's stored n-gram list.
func tableList(t *testing.T, store *storage.Store, m *smilepb.PlotTable) []plot.Gram {
	t.Helper()
	var out []plot.Gram
	for i := range int(m.ListChunks) {
		b, err := store.GetRecord(storage.NSPlotTable, fmt.Sprintf("%s/g/%08d", m.Id, i))
		if err != nil {
			t.Fatal(err)
		}
		g, err := plot.DecodeGrams(b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, g...)
	}
	return out
}

func tableInfo(t *testing.T, ctx context.Context, svc *actors.Service, id string) *smilepb.PlotTableInfo {
	t.Helper()
	info, err := svc.Table(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// computeEntries runs plot.Compute for grams on the node's device.
func computeEntries(t *testing.T, ctx context.Context, n *node, bb model.Backbone, cut int, grams []plot.Gram) [][]byte {
	t.Helper()
	dev, _ := n.Device(bb.Info().Name)
	var out [][]byte
	if err := dev.Do(ctx, n.ActorSystem(), &actors.Work{Tenant: "test", Run: func(bb model.Backbone) error {
		var err error
		out, err = plot.Compute(ctx, bb, cut, grams)
		return err
	}}); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkEntries compares stored entries of grams with entries computed now,
// value by value (a batch of other n-grams may round differently).
func checkEntries(t *testing.T, ctx context.Context, n *node, bb model.Backbone, m *smilepb.PlotTable, grams []plot.Gram) {
	t.Helper()
	pe, err := n.store.PlotEntries(m.BackboneFingerprint, int(m.Cut))
	if err != nil {
		t.Fatal(err)
	}
	want := computeEntries(t, ctx, n, bb, int(m.Cut), grams)
	w := int(m.Width)
	worst := 0.0
	for i, g := range grams {
		got, ok, err := pe.Get(g.AppendKey(nil))
		if err != nil || !ok {
			t.Fatalf("entry of %v: %v %v", g, ok, err)
		}
		a, b := make([]float32, int(g.N)*w), make([]float32, int(g.N)*w)
		if err := plot.DecodeEntry(g, w, got, a); err != nil {
			t.Fatalf("stored entry of %v: %v", g, err)
		}
		if err := plot.DecodeEntry(g, w, want[i], b); err != nil {
			t.Fatal(err)
		}
		for k := range a {
			d := math.Abs(float64(a[k]-b[k])) / max(1, math.Abs(float64(b[k])))
			worst = max(worst, d)
		}
	}
	// fp16 keeps 11 bits: two roundings of nearly equal values differ by
	// at most about an ulp.
	if worst > 2e-3 {
		t.Fatalf("stored entries differ from computed ones by %g (relative)", worst)
	}
}

// directLower answers texts with params run directly on the node's
// backbone (a Runner inside device work; rows in plot mode when lower is
// set), for comparison with serving.
func directLower(t *testing.T, ctx context.Context, n *node, bb model.Backbone, p *model.Params, lower model.Lower, texts []string) [][]float32 {
	t.Helper()
	ids, err := model.Tokenize(bb, texts, model.DefaultEmbedOptions())
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := n.Device(bb.Info().Name)
	var out [][]float32
	err = dev.Do(ctx, n.ActorSystem(), &actors.Work{Tenant: "test", Run: func(bb model.Backbone) error {
		r := model.NewRunner(bb)
		defer r.Close()
		dp, err := r.UploadParams(p)
		if err != nil {
			return err
		}
		defer dp.Free()
		items := make([]model.Item, len(ids))
		for i := range ids {
			items[i] = model.Item{IDs: ids[i], Params: dp, Lower: lower}
		}
		out, err = r.Forward(ctx, items)
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func paramsOf(t *testing.T, n *node, v *smilepb.VPLM) *model.Params {
	t.Helper()
	blob, err := n.store.GetBlob(v.ParamsDigest)
	if err != nil {
		t.Fatal(err)
	}
	p, err := model.DecodeParams(blob)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func probsOf(rep *smilepb.ClassifyReply) [][]float32 {
	out := make([][]float32, len(rep.Predictions))
	for i, p := range rep.Predictions {
		out[i] = p.Probs
	}
	return out
}

var rareTexts = []string{
	"zebra quantum marmalade orbits the velvet lighthouse",
	"velvet lighthouse and zebra quantum marmalade again",
}

// imdbTable is a request for a table of every unigram and the most
// frequent bigrams and trigrams of imdb's train split.
func imdbTable() *smilepb.TableRequest {
	return &smilepb.TableRequest{Dataset: "imdb", BudgetBytes: 1 << 20, Tenant: "ta"}
}

// TestPlotTables: tables built as jobs on a dataset or uploaded texts,
// shared, extended, canceled and built again; a corrupt entry; typed
// errors.
func TestPlotTables(t *testing.T) {
	bb := useLite(t)
	var hold atomic.Bool // table jobs wait after their first batch while set
	n := startNode(t, bb, t.TempDir(), func(c *cluster.NodeConfig) {
		c.Trainer.AfterCheckpoint = func(ctx context.Context, _ string, batch int) {
			if batch == 1 && hold.Load() {
				<-ctx.Done()
			}
		}
	})
	ctx := ctxT(t, 120*time.Second)
	svc := n.Service()
	info := bb.Info()
	cut := info.Layers / 2

	// A table on a pulled dataset's train split, then one extending it
	// with uploaded texts.
	start := time.Now()
	j1 := buildTable(t, ctx, svc, imdbTable())
	m1 := tableInfo(t, ctx, svc, j1.Table).Table
	t.Logf("table %s: %d entries (%d uni, %d bi, %d tri), %d bytes, built in %v: %s", m1.Id, m1.Entries, m1.Unigrams, m1.Bigrams, m1.Trigrams,
		m1.EntryBytes, time.Since(start).Round(time.Millisecond), j1.Stage)
	trainSplit, err := datasets.ReadSplit(testenv.DataDir(), "imdb", datasets.Train)
	if err != nil {
		t.Fatal(err)
	}
	w := bb.StateWidth(cut)
	list1 := tableList(t, n.store, m1)
	switch {
	case !m1.Complete || int(m1.Cut) != cut || int(m1.Width) != w || m1.Backbone != info.Name || m1.Base != "" || m1.Corpus != "imdb":
		t.Fatalf("manifest %v", m1)
	case m1.Unigrams != uint64(info.VocabSize) || m1.Bigrams+m1.Trigrams == 0 || m1.Entries != m1.Unigrams+m1.Bigrams+m1.Trigrams:
		t.Fatalf("manifest counts %v", m1)
	case m1.CorpusSequences != uint64(len(trainSplit)):
		t.Fatalf("the corpus was %d texts, the train split has %d (never validation or test)", m1.CorpusSequences, len(trainSplit))
	case uint64(len(list1)) != m1.Entries || m1.EntryBytes != uint64(plot.Bytes(list1, w)):
		t.Fatalf("list of %d n-grams of %d bytes, manifest %v", len(list1), plot.Bytes(list1, w), m1)
	case m1.EntryBytes-uint64(plot.Bytes(plot.Vocabulary(info.VocabSize), w)) > 1<<20:
		t.Fatalf("n-grams of %d bytes beyond the unigrams, over the budget", m1.EntryBytes-uint64(plot.Bytes(plot.Vocabulary(info.VocabSize), w)))
	case j1.Step != j1.Steps || j1.Steps != m1.Entries || j1.CachedExamples != 0:
		t.Fatalf("job progress %v", j1)
	}

	// The same request again: the same table, complete at once, no device work.
	works := deviceWorks(t, ctx, svc)
	req := imdbTable()
	req.Tenant = "tb"
	again, err := svc.BuildTable(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if again.Table != m1.Id || again.State != smilepb.JobState_JOB_SUCCEEDED || again.Id == j1.Id {
		t.Fatalf("the same request again: %v", again)
	}
	if w2 := deviceWorks(t, ctx, svc); w2 != works {
		t.Fatalf("an already complete table cost %d device work items", w2-works)
	}

	// Extending it stores only the new n-grams' entries.
	j2 := buildTable(t, ctx, svc, &smilepb.TableRequest{Base: m1.Id, ExamplesJsonl: corpusJSONL(rareTexts...), Tenant: "ta"})
	m2 := tableInfo(t, ctx, svc, j2.Table).Table
	list2 := tableList(t, n.store, m2)
	if m2.Id == m1.Id || m2.Base != m1.Id || m2.Entries <= m1.Entries || !slices.Equal(list2[:len(list1)], list1) || !strings.HasPrefix(m2.Corpus, "upload:") {
		t.Fatalf("extended table %v", m2)
	}
	if j2.CachedExamples != m1.Entries {
		t.Fatalf("the extension found %d entries stored, want the base's %d (it computes only its %d new ones)", j2.CachedExamples, m1.Entries, m2.Entries-m1.Entries)
	}
	if inf := tableInfo(t, ctx, svc, m2.Id); inf.SharedEntries != m2.Entries || inf.Open {
		t.Fatalf("entries stored for the backbone and cut: %d, want %d (shared); open %v", inf.SharedEntries, m2.Entries, inf.Open)
	}
	t.Logf("extension %s: %d bigrams, %d trigrams more: %s", m2.Id, m2.Bigrams-m1.Bigrams, m2.Trigrams-m1.Trigrams, j2.Stage)
	// A stored trigram's entry is what plot.Compute gives for it; so are a
	// unigram's and a bigram's.
	var sample []plot.Gram
	for _, size := range []uint8{3, 2, 1} {
		if k := slices.IndexFunc(list2, func(g plot.Gram) bool { return g.N == size }); k >= 0 {
			sample = append(sample, list2[k])
		} else {
			t.Fatalf("the extension holds no n-gram of %d tokens", size)
		}
	}
	checkEntries(t, ctx, n, bb, m2, sample)
	if jobs, err := svc.Jobs(ctx, m1.Id); err != nil || len(jobs) != 2 {
		t.Fatalf("jobs of table %s: %v %v", m1.Id, jobs, err)
	}
	if tabs, err := svc.Tables(ctx); err != nil || len(tabs) != 2 || tabs[0].Id != m2.Id {
		t.Fatalf("tables: %v %v", tabs, err)
	}

	// A corrupt entry of the extension (its bytes overwritten in Badger,
	// before the table is opened) is detected and skipped; the answer
	// comes from the shorter n-grams.
	rare, err := model.Tokenize(bb, rareTexts[:1], model.DefaultEmbedOptions())
	if err != nil {
		t.Fatal(err)
	}
	tri, _ := plot.GramOf(rare[0][1:4]...)
	if !slices.Contains(list2, tri) || slices.Contains(list1, tri) {
		t.Fatalf("trigram %v of the uploaded text is not one of the extension's own", tri)
	}
	pe, err := n.store.PlotEntries(m2.BackboneFingerprint, int(m2.Cut))
	if err != nil {
		t.Fatal(err)
	}
	key := tri.AppendKey(nil)
	good, ok, err := pe.Get(key)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	bad := slices.Clone(good)
	bad[10] ^= 0x40
	if err := pe.Put([][]byte{key}, [][]byte{bad}); err != nil {
		t.Fatal(err)
	}

	t.Run("errors", func(t *testing.T) { testPlotErrors(t, ctx, n, m1) })
	t.Run("corrupt entry", func(t *testing.T) {
		v, err := svc.Create(ctx, actors.CreateSpec{ID: "plot-rare", Tenant: "ta", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"0", "1"},
			Mode: actors.ModePlot, Table: m2.Id})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := svc.Classify(ctx, v.Id, rareTexts[:1])
		if err != nil || len(rep.Predictions) != 1 {
			t.Fatalf("classify over a corrupt entry: %v %v", rep, err)
		}
		inf := tableInfo(t, ctx, svc, m2.Id)
		if !inf.Open || inf.Corrupt != 1 || inf.Sequences == 0 || inf.HitsFull+inf.HitsPartial+inf.HitsUnigram+inf.HitsZero != inf.Positions {
			t.Fatalf("table record after a corrupt entry: %v", inf)
		}
		// The answer is that of the table without the trigram.
		tab, err := svc.OpenTable(ctx, m2.Id, "ta")
		if err != nil {
			t.Fatal(err)
		}
		without := hiding{tab, tri}
		want := directLower(t, ctx, n, bb, paramsOf(t, n, v), without, rareTexts[:1])
		if d := maxDiff(probsOf(rep), want); d > 1e-4 {
			t.Fatalf("served answer differs from the direct one by %g", d)
		}
		t.Logf("corrupt entry: %d corrupt, hit rate %.2f over %d positions, %d memory hits, %d source reads",
			inf.Corrupt, inf.HitRate, inf.Positions, inf.MemoryHits, inf.SourceReads)

		// The node recomputes it in the background; then the trigram
		// serves again.
		deadline := time.Now().Add(60 * time.Second)
		for {
			b, ok, err := pe.Get(key)
			if err == nil && ok {
				if _, err = plot.CheckEntry(tri, w, b); err == nil {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("corrupt entry not repaired: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for tab.Stats().Corrupt != 1 || !repaired(tab, tri) {
			if time.Now().After(deadline) {
				t.Fatal("the table does not read the repaired entry")
			}
			time.Sleep(20 * time.Millisecond)
		}
		rep2, err := svc.Classify(ctx, v.Id, rareTexts[:1])
		if err != nil {
			t.Fatal(err)
		}
		want2 := directLower(t, ctx, n, bb, paramsOf(t, n, v), tab, rareTexts[:1])
		if d := maxDiff(probsOf(rep2), want2); d > 1e-4 || maxDiff(want2, want) == 0 {
			t.Fatalf("after the repair: served differs by %g from the table with the trigram (which differs by %g from without)", d, maxDiff(want2, want))
		}
		if inf := tableInfo(t, ctx, svc, m2.Id); inf.Corrupt != 1 {
			t.Fatalf("corrupt count after the repair: %d", inf.Corrupt)
		}
	})
	t.Run("cancel and build again", func(t *testing.T) {
		hold.Store(true)
		req := &smilepb.TableRequest{Dataset: "imdb", BudgetBytes: 2 << 20, Tenant: "tb"} // two batches more than the first table
		job, err := svc.BuildTable(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.WatchJob(ctx, job.Id, func(r *smilepb.TrainJob) error {
			if r.Step > r.CachedExamples && r.CachedExamples > 0 {
				return errors.New("computing")
			}
			return nil
		}); err == nil || err.Error() != "computing" {
			t.Fatalf("watch: %v", err)
		}
		if _, err := svc.BuildTable(ctx, req); !errors.Is(err, actors.ErrJobConflict) {
			t.Fatalf("a second build beside a running one: %v", err)
		}
		rec, err := svc.CancelJob(ctx, job.Id)
		hold.Store(false)
		if err != nil || rec.State != smilepb.JobState_JOB_CANCELED || rec.Step >= rec.Steps {
			t.Fatalf("canceled table job: %v %v", rec, err)
		}
		_, err = svc.Create(ctx, actors.CreateSpec{ID: "plot-early", Tenant: "ta", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"0", "1"},
			Mode: actors.ModePlot, Table: job.Table})
		if !errors.Is(err, actors.ErrTableIncomplete) || actors.Code(err) != actors.CodeBadRequest {
			t.Fatalf("create on an incomplete table: %v", err)
		}
		again := buildTable(t, ctx, svc, req)
		if again.Table != job.Table || again.CachedExamples < rec.Step {
			t.Fatalf("built again: %v (the canceled job had stored %d)", again, rec.Step)
		}
		t.Logf("canceled at %d/%d; built again from %d stored: %s", rec.Step, rec.Steps, again.CachedExamples, again.Stage)
	})
}

// TestPlotVPLMs: plot-mode vPLMs serve, alone and mixed in batches with
// full-mode ones, and train in plot mode.
func TestPlotVPLMs(t *testing.T) {
	bb := useLite(t)
	n := startNode(t, bb, t.TempDir(), func(c *cluster.NodeConfig) {
		// Concurrent requests of two vPLMs share a batch.
		c.Device.MaxWait = 30 * time.Millisecond
	})
	ctx := ctxT(t, 120*time.Second)
	m := tableInfo(t, ctx, n.Service(), buildTable(t, ctx, n.Service(), imdbTable()).Table).Table
	t.Run("serve", func(t *testing.T) { testPlotServe(t, ctx, n, bb, m) })
	t.Run("train", func(t *testing.T) { testPlotTrain(t, ctx, n, bb, m) })
}

// testPlotErrors: typed errors of plot-mode creates, trains and builds.
func testPlotErrors(t *testing.T, ctx context.Context, n *node, m1 *smilepb.PlotTable) {
	svc := n.Service()
	// Forged manifests: one incomplete, one of another backbone, one of
	// other weights of this backbone.
	forge := func(id string, mod func(m *smilepb.PlotTable)) string {
		m := proto.CloneOf(m1)
		m.Id = id
		mod(m)
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.store.PutRecords(storage.Record{NS: storage.NSPlotTable, Key: id + "/h", Value: b}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	incomplete := forge("plot-"+strings.Repeat("1", 32), func(m *smilepb.PlotTable) { m.Complete = false })
	otherBackbone := forge("plot-"+strings.Repeat("2", 32), func(m *smilepb.PlotTable) { m.Backbone = "bert-base" })
	otherWeights := forge("plot-"+strings.Repeat("3", 32), func(m *smilepb.PlotTable) { m.BackboneFingerprint = "sha256:" + strings.Repeat("0", 64) })

	spec := func(id, mode, table string, layers ...int) actors.CreateSpec {
		return actors.CreateSpec{ID: id, Tenant: "ta", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"0", "1"}, Mode: mode, Table: table, Layers: layers}
	}
	for _, tc := range []struct {
		name   string
		spec   actors.CreateSpec
		target error
		code   string
	}{
		{"unknown table", spec("e1", actors.ModePlot, "plot-"+strings.Repeat("f", 32)), actors.ErrTableNotFound, actors.CodeNotFound},
		{"malformed table id", spec("e1", actors.ModePlot, "../x"), actors.ErrTableNotFound, actors.CodeNotFound},
		{"incomplete table", spec("e1", actors.ModePlot, incomplete), actors.ErrTableIncomplete, actors.CodeBadRequest},
		{"table of another backbone", spec("e1", actors.ModePlot, otherBackbone), actors.ErrBadRequest, actors.CodeBadRequest},
		{"table of other weights", spec("e1", actors.ModePlot, otherWeights), actors.ErrBadRequest, actors.CodeBadRequest},
		{"adapter at the cut", spec("e1", actors.ModePlot, m1.Id, int(m1.Cut)), actors.ErrBadRequest, actors.CodeBadRequest},
		{"plot without table", spec("e1", actors.ModePlot, ""), actors.ErrBadRequest, actors.CodeBadRequest},
		{"full with table", spec("e1", actors.ModeFull, m1.Id), actors.ErrBadRequest, actors.CodeBadRequest},
		{"unknown mode", spec("e1", "half", ""), actors.ErrBadRequest, actors.CodeBadRequest},
	} {
		_, err := svc.Create(ctx, tc.spec)
		if !errors.Is(err, tc.target) || actors.Code(err) != tc.code {
			t.Errorf("%s: %v (code %s), want %v / %s", tc.name, err, actors.Code(err), tc.target, tc.code)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	if _, err := svc.Get(ctx, "e1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a refused create left a vPLM: %v", err)
	}

	// Full fine-tuning of a plot vPLM.
	if _, err := svc.Create(ctx, spec("plot-full", actors.ModePlot, m1.Id)); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Train(ctx, actors.TrainRequest{Model: "plot-full", Examples: imdb(t, 16), Full: true})
	if !errors.Is(err, actors.ErrBadRequest) {
		t.Fatalf("full fine-tuning of a plot vPLM: %v", err)
	}

	for _, tc := range []struct {
		name   string
		req    *smilepb.TableRequest
		target error
		code   string
	}{
		{"cut above the layers", &smilepb.TableRequest{Dataset: "imdb", Cut: 2}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"cut far above", &smilepb.TableRequest{Dataset: "imdb", Cut: 300}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"negative budget", &smilepb.TableRequest{Dataset: "imdb", BudgetBytes: -1}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"budget too big", &smilepb.TableRequest{Dataset: "imdb", BudgetBytes: 1 << 50}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"unknown base", &smilepb.TableRequest{Dataset: "imdb", Base: "plot-" + strings.Repeat("e", 32)}, actors.ErrTableNotFound, actors.CodeNotFound},
		{"base of another backbone", &smilepb.TableRequest{Dataset: "imdb", Base: otherBackbone}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"unknown backbone", &smilepb.TableRequest{Dataset: "imdb", Backbone: "bert-base"}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"bad tenant", &smilepb.TableRequest{Dataset: "imdb", Tenant: "A B"}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"no corpus", &smilepb.TableRequest{}, actors.ErrBadDataset, actors.CodeBadDataset},
		{"dataset and upload", &smilepb.TableRequest{Dataset: "imdb", ExamplesJsonl: corpusJSONL("a")}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"unknown dataset", &smilepb.TableRequest{Dataset: "nosuch"}, actors.ErrBadDataset, actors.CodeBadDataset},
		{"malformed upload", &smilepb.TableRequest{ExamplesJsonl: []byte("{\"text\": \"fine\"}\nnot json\n")}, actors.ErrBadDataset, actors.CodeBadDataset},
		{"empty text", &smilepb.TableRequest{ExamplesJsonl: []byte("{\"text\": \"  \"}\n")}, actors.ErrBadDataset, actors.CodeBadDataset},
	} {
		_, err := svc.BuildTable(ctx, tc.req)
		if !errors.Is(err, tc.target) || actors.Code(err) != tc.code {
			t.Errorf("build %s: %v (code %s), want %v / %s", tc.name, err, actors.Code(err), tc.target, tc.code)
		} else {
			t.Logf("build %s: %v", tc.name, err)
		}
	}
	_, err = svc.BuildTable(ctx, &smilepb.TableRequest{ExamplesJsonl: []byte("{\"text\": \"fine\"}\n\nnot json\n")})
	if err == nil || !strings.Contains(err.Error(), "examples_jsonl:3") {
		t.Errorf("a malformed line's error does not name it: %v", err)
	}
}

// testPlotServe: a plot-mode vPLM answers as its table and params run
// directly do, alone and in batches mixed with a full-mode vPLM.
func testPlotServe(t *testing.T, ctx context.Context, n *node, bb model.Backbone, m1 *smilepb.PlotTable) {
	svc := n.Service()
	pv, err := svc.Create(ctx, actors.CreateSpec{ID: "plot-clf", Tenant: "ta", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"0", "1"},
		Mode: actors.ModePlot, Table: m1.Id})
	if err != nil {
		t.Fatal(err)
	}
	wantLayers := []uint32{}
	for _, l := range model.DefaultAdapterLayers(bb.Info().Layers) {
		if l > int(m1.Cut) {
			wantLayers = append(wantLayers, uint32(l))
		}
	}
	if pv.Mode != actors.ModePlot || pv.Table != m1.Id || !slices.Equal(pv.Adapter.Layers, wantLayers) {
		t.Fatalf("plot vPLM %v", pv)
	}
	fv := createClassifier(t, ctx, svc, "full-clf", "tb")
	if fv.Mode != actors.ModeFull || fv.Table != "" {
		t.Fatalf("full vPLM %v", fv)
	}
	if inf := tableInfo(t, ctx, svc, m1.Id); !inf.Open {
		t.Fatalf("a plot-mode create leaves its table closed")
	}
	tab, err := svc.OpenTable(ctx, m1.Id, "ta")
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{"a wonderful, moving film with a great cast", "the worst movie i have ever seen", "it was fine"}
	wantPlot := directLower(t, ctx, n, bb, paramsOf(t, n, pv), tab, texts)
	wantFull := directLower(t, ctx, n, bb, paramsOf(t, n, fv), nil, texts)
	if d := maxDiff(wantPlot, directLower(t, ctx, n, bb, paramsOf(t, n, pv), nil, texts)); d == 0 {
		t.Fatalf("the plot vPLM's params answer the same in plot and full mode: the table is not used")
	} else {
		t.Logf("the plot vPLM's params, plot vs full mode: probabilities differ by up to %.4f", d)
	}
	rep, err := svc.Classify(ctx, pv.Id, texts)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(probsOf(rep), wantPlot); d > 1e-4 {
		t.Fatalf("plot answer alone differs from the direct one by %g", d)
	}
	// Mixed batches: both vPLMs at once, until a batch held both.
	mixed := 0
	for round := 0; round < 20 && mixed == 0; round++ {
		var wg sync.WaitGroup
		reps := make([]*smilepb.ClassifyReply, 2)
		errs := make([]error, 2)
		for i, id := range []string{pv.Id, fv.Id} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				reps[i], errs[i] = svc.Classify(ctx, id, texts)
			}()
		}
		wg.Wait()
		for i, want := range [][][]float32{wantPlot, wantFull} {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if d := maxDiff(probsOf(reps[i]), want); d > 1e-4 {
				t.Fatalf("round %d: vPLM %d's answer (batch of %d vPLMs) differs from the direct one by %g", round, i, reps[i].Timings.BatchVplms, d)
			}
			if reps[i].Timings.BatchVplms >= 2 {
				mixed++
			}
		}
	}
	if mixed == 0 {
		t.Fatalf("no batch held both vPLMs")
	}
	inf := tableInfo(t, ctx, svc, m1.Id)
	t.Logf("table after serving: %d sequences, %d positions, levels %d/%d/%d/%d (hit rate %.2f), %d memory hits, %d source reads, %d bytes in memory",
		inf.Sequences, inf.Positions, inf.HitsFull, inf.HitsPartial, inf.HitsUnigram, inf.HitsZero, inf.HitRate, inf.MemoryHits, inf.SourceReads, inf.MemoryBytes)
	if inf.Sequences == 0 || inf.Positions != inf.HitsFull+inf.HitsPartial+inf.HitsUnigram+inf.HitsZero || inf.HitsZero != 0 || inf.Corrupt != 0 {
		t.Fatalf("table record %v", inf)
	}
}

// testPlotTrain: a plot vPLM trains in plot mode and commits; its new
// version answers as its params and table run directly.
func testPlotTrain(t *testing.T, ctx context.Context, n *node, bb model.Backbone, m1 *smilepb.PlotTable) {
	svc := n.Service()
	if _, err := svc.Create(ctx, actors.CreateSpec{ID: "plot-train", Tenant: "ta", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"0", "1"},
		Mode: actors.ModePlot, Table: m1.Id}); err != nil {
		t.Fatal(err)
	}
	ex := imdb(t, 32)
	job, err := svc.Train(ctx, actors.TrainRequest{Model: "plot-train", Examples: ex, Config: &smilepb.TrainConfig{Epochs: 1, BatchSize: 16}})
	if err != nil {
		t.Fatal(err)
	}
	final, _ := wait(t, ctx, svc, job.Id)
	if final.State != smilepb.JobState_JOB_SUCCEEDED || final.Version != 2 {
		t.Fatalf("plot training job ended %v", final)
	}
	v, err := svc.Get(ctx, "plot-train")
	if err != nil || v.Version != 2 || v.Mode != actors.ModePlot || v.Table != m1.Id {
		t.Fatalf("after training: %v %v", v, err)
	}
	tab, err := svc.OpenTable(ctx, m1.Id, "ta")
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{ex[0].Text, ex[len(ex)-1].Text}
	rep, err := svc.Classify(ctx, v.Id, texts)
	if err != nil || rep.Version != 2 {
		t.Fatalf("classify after training: %v %v", rep, err)
	}
	if d := maxDiff(probsOf(rep), directLower(t, ctx, n, bb, paramsOf(t, n, v), tab, texts)); d > 1e-4 {
		t.Fatalf("trained plot vPLM's answer differs from its params and table run directly by %g", d)
	}
	// A full-mode vPLM trained on the same texts computes its own
	// representations: the caches of the two modes never mix.
	createClassifier(t, ctx, svc, "full-train", "ta")
	job2, err := svc.Train(ctx, actors.TrainRequest{Model: "full-train", Examples: ex, Config: &smilepb.TrainConfig{Epochs: 1, BatchSize: 16}})
	if err != nil {
		t.Fatal(err)
	}
	final2, _ := wait(t, ctx, svc, job2.Id)
	if final2.State != smilepb.JobState_JOB_SUCCEEDED || final2.CachedExamples != 0 {
		t.Fatalf("full-mode job beside a plot-mode one on the same texts: %v", final2)
	}
	t.Logf("plot training: %s, best val acc %.3f", final.Stage, final.BestValAccuracy)
}

// TestPlotTableResumesAfterCrash: a node stops (as in a crash) in the
// middle of a table build; a node started on the same data continues the
// job, computes only the entries still missing, and completes the table.
func TestPlotTableResumesAfterCrash(t *testing.T) {
	bb := useLite(t)
	dir := t.TempDir()
	ctx := ctxT(t, 120*time.Second)
	stopped := make(chan string, 1)
	n1 := startNode(t, bb, dir, func(c *cluster.NodeConfig) {
		c.Trainer.AfterCheckpoint = func(jctx context.Context, id string, batch int) {
			if batch == 3 {
				stopped <- id
				<-jctx.Done() // held here until the node goes down
			}
		}
	})
	req := &smilepb.TableRequest{ExamplesJsonl: corpusJSONL(rareTexts...), Tenant: "ta"}
	job, err := n1.Service().BuildTable(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("no third batch")
	}
	n1.stop(t)

	n2 := startNode(t, bb, dir, nil)
	svc := n2.Service()
	left, err := svc.Job(ctx, job.Id)
	if err != nil {
		t.Fatal(err)
	}
	if left.State != smilepb.JobState_JOB_CACHING {
		t.Fatalf("job left by the stop: %v", left)
	}
	if _, err := svc.BuildTable(ctx, req); !errors.Is(err, actors.ErrJobConflict) {
		t.Fatalf("build beside a job left unfinished: %v", err)
	}
	if err := svc.ResumeJobs(ctx); err != nil {
		t.Fatal(err)
	}
	final, _ := wait(t, ctx, svc, job.Id)
	batch := uint64(actors.DefaultPlotConfig().BatchGrams)
	if final.State != smilepb.JobState_JOB_SUCCEEDED || final.Step != final.Steps || final.CachedExamples != 3*batch {
		t.Fatalf("resumed table job ended %v (want %d entries found stored)", final, 3*batch)
	}
	m := tableInfo(t, ctx, svc, job.Table).Table
	if !m.Complete {
		t.Fatalf("manifest after the resumed build %v", m)
	}
	list := tableList(t, n2.store, m)
	// Entries from before the stop, around it and after it.
	var sample []plot.Gram
	for _, i := range []int{0, 1, int(batch) - 1, 3*int(batch) - 1, 3 * int(batch), 3*int(batch) + 1, len(list) - 2, len(list) - 1} {
		sample = append(sample, list[i])
	}
	checkEntries(t, ctx, n2, bb, m, sample)
	pe, err := n2.store.PlotEntries(m.BackboneFingerprint, int(m.Cut))
	if err != nil {
		t.Fatal(err)
	}
	if n, _, err := pe.Usage(); err != nil || n != int64(m.Entries) {
		t.Fatalf("%d entries stored for a table of %d: %v", n, m.Entries, err)
	}
	t.Logf("resumed: %s", final.Stage)
}

// hiding is a table with one n-gram hidden.
type hiding struct {
	tab *plot.Table
	g   plot.Gram
}

func (h hiding) Cut() int { return h.tab.Cut() }
func (h hiding) Lower(ids []int32, dst []float32) error {
	return h.tab.LowerHiding(ids, dst, func(g plot.Gram) bool { return g == h.g })
}

// repaired reports whether tab reads g again: g's ids as a text get other
// states with g than with g hidden.
func repaired(tab *plot.Table, g plot.Gram) bool {
	with := make([]float32, int(g.N)*tab.Width())
	without := make([]float32, len(with))
	if tab.Lower(g.IDs(), with) != nil || (hiding{tab, g}).Lower(g.IDs(), without) != nil {
		return false
	}
	return !slices.Equal(with, without)
}
