package actors_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/model"
)

// Eval through a whole node (startNode, trainer_test.go). The vPLM is
// untrained: eval measures whatever serving answers, trained or not.

// evalNode starts a node whose vPLM requests carry at most 4 texts (so a
// few examples make several Classify batches) of at most 1000 bytes.
func evalNode(t *testing.T) (*node, model.Backbone) {
	bb := useLite(t)
	n := startNode(t, bb, t.TempDir(), func(c *cluster.NodeConfig) {
		c.VPLM.MaxTexts = 4
		c.VPLM.MaxTextBytes = 1000
	})
	return n, bb
}

// jsonl encodes examples with a blank line before every fifth, so that
// lines and example indices differ.
func jsonl(t *testing.T, ex []datasets.Example) []byte {
	t.Helper()
	var b []byte
	for i, e := range ex {
		line, err := datasets.EncodeJSONL([]datasets.Example{e})
		if err != nil {
			t.Fatal(err)
		}
		if i%5 == 4 {
			b = append(b, '\n')
		}
		b = append(b, line...)
	}
	return b
}

// TestEval: the scores of uploaded examples are those of Classify's
// answers, over several batches; the typed errors name the example.
func TestEval(t *testing.T) {
	n, _ := evalNode(t)
	ctx := ctxT(t, 60*time.Second)
	svc := n.Service()
	v := createClassifier(t, ctx, svc, "clf", "ta")
	if _, err := svc.Create(ctx, actors.CreateSpec{ID: "emb", Tenant: "ta", Task: smilepb.Task_TASK_EMBED}); err != nil {
		t.Fatal(err)
	}
	ex := imdb(t, 14)
	rep, err := svc.Eval(ctx, &smilepb.EvalRequest{Model: "clf", ExamplesJsonl: jsonl(t, ex)})
	if err != nil {
		t.Fatal(err)
	}
	// The same texts through Classify (4 at a time, the node's limit).
	right := 0
	conf := make([]uint64, 4)
	for i := 0; i < len(ex); i += 4 {
		var texts []string
		for _, e := range ex[i:min(i+4, len(ex))] {
			texts = append(texts, e.Text)
		}
		cr, err := svc.Classify(ctx, "clf", texts)
		if err != nil {
			t.Fatal(err)
		}
		for k, p := range cr.Predictions {
			gold := ex[i+k].Label
			if p.Label == gold {
				right++
			}
			conf[2*strings.Index("01", gold)+int(p.Index)]++
		}
	}
	if rep.Model != "clf" || rep.Version != v.Version || rep.N != uint64(len(ex)) || rep.Accuracy != float64(right)/float64(len(ex)) ||
		strings.Join(rep.Labels, ",") != "0,1" || len(rep.Confusion) != 4 || [4]uint64(rep.Confusion) != [4]uint64(conf) ||
		rep.MacroF1 < 0 || rep.MacroF1 > 1 {
		t.Fatalf("eval %v; classify: %d right, confusion %v", rep, right, conf)
	}

	// A text past the serving limit (1,000 bytes on this node) is scored on
	// its prefix, as training cut it: the same answer as the prefix alone.
	long := append([]datasets.Example(nil), ex...)
	long[9].Text = strings.Repeat("é", 600) // 1,200 bytes
	cut := append([]datasets.Example(nil), ex...)
	cut[9].Text = strings.Repeat("é", 500)
	rl, err := svc.Eval(ctx, &smilepb.EvalRequest{Model: "clf", ExamplesJsonl: jsonl(t, long)})
	if err != nil {
		t.Fatalf("eval with a text past the limit: %v", err)
	}
	rc, err := svc.Eval(ctx, &smilepb.EvalRequest{Model: "clf", ExamplesJsonl: jsonl(t, cut)})
	if err != nil || rl.N != rc.N || [4]uint64(rl.Confusion) != [4]uint64(rc.Confusion) {
		t.Fatalf("long text %v, its prefix %v (%v)", rl, rc, err)
	}
	unknown := append([]datasets.Example(nil), ex...)
	unknown[6].Label = "2" // line 8
	for _, tc := range []struct {
		name   string
		req    *smilepb.EvalRequest
		target error
		code   string
		names  string
		index  int
	}{
		{"unknown label", &smilepb.EvalRequest{Model: "clf", ExamplesJsonl: jsonl(t, unknown)}, datasets.ErrUnknownLabel, actors.CodeBadDataset, "examples_jsonl:8", -1},
		{"malformed", &smilepb.EvalRequest{Model: "clf", ExamplesJsonl: []byte("{\"text\":\"a\",\"label\":\"0\"}\nnot json\n")}, datasets.ErrMalformed, actors.CodeBadDataset, "examples_jsonl:2", -1},
		{"embed vPLM", &smilepb.EvalRequest{Model: "emb", Dataset: "imdb"}, actors.ErrWrongTask, actors.CodeWrongTask, "emb", -1},
		{"unknown vPLM", &smilepb.EvalRequest{Model: "nope", Dataset: "imdb"}, actors.ErrNotFound, actors.CodeNotFound, "nope", -1},
		{"nothing", &smilepb.EvalRequest{Model: "clf"}, actors.ErrBadRequest, actors.CodeBadRequest, "no examples", -1},
		{"both", &smilepb.EvalRequest{Model: "clf", Dataset: "imdb", ExamplesJsonl: jsonl(t, ex)}, actors.ErrBadRequest, actors.CodeBadRequest, "both", -1},
		{"split of an upload", &smilepb.EvalRequest{Model: "clf", Split: "test", ExamplesJsonl: jsonl(t, ex)}, actors.ErrBadRequest, actors.CodeBadRequest, "split", -1},
		{"bad split", &smilepb.EvalRequest{Model: "clf", Dataset: "imdb", Split: "dev"}, actors.ErrBadRequest, actors.CodeBadRequest, "dev", -1},
		{"unknown dataset", &smilepb.EvalRequest{Model: "clf", Dataset: "nosuch"}, actors.ErrBadDataset, actors.CodeBadDataset, "nosuch", -1},
	} {
		_, err := svc.Eval(ctx, tc.req)
		if !errors.Is(err, tc.target) || actors.Code(err) != tc.code || !strings.Contains(actors.Message(err), tc.names) || actors.TextIndex(err) != tc.index {
			t.Errorf("%s: %v (code %s, index %d), want %v / %s naming %q, index %d", tc.name, err, actors.Code(err), actors.TextIndex(err),
				tc.target, tc.code, tc.names, tc.index)
		}
	}
}

// TestEvalModelChanged: a vPLM that gets another version in the middle of
// an evaluation fails it with model_changed instead of mixing answers.
func TestEvalModelChanged(t *testing.T) {
	n, _ := evalNode(t)
	ctx := ctxT(t, 60*time.Second)
	svc := n.Service()
	v := createClassifier(t, ctx, svc, "clf", "ta")
	req := &smilepb.EvalRequest{Model: "clf", ExamplesJsonl: jsonl(t, imdb(t, 40))}
	start := time.Now()
	if _, err := svc.Eval(ctx, req); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// Bump the version a third of the way into an evaluation; if it lands
	// before the first batch or after the last (a slow or fast moment of
	// the machine), try again.
	for try := 1; try <= 4; try++ {
		errc := make(chan error, 1)
		go func() {
			_, err := svc.Eval(ctx, req)
			errc <- err
		}()
		time.Sleep(took / 3)
		version := v.Version + uint64(try)
		if _, err := n.cat.Apply(&smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_NewVersion{NewVersion: &smilepb.NewVersion{
			Id: "clf", Version: version, ParamsDigest: v.ParamsDigest}}}); err != nil {
			t.Fatal(err)
		}
		err := <-errc
		if err == nil {
			t.Logf("try %d: the new version landed outside the evaluation", try)
			continue
		}
		if !errors.Is(err, actors.ErrModelChanged) || actors.Code(err) != actors.CodeModelChanged || !strings.Contains(err.Error(), "evaluate again") {
			t.Fatalf("eval across a new version: %v (code %s)", err, actors.Code(err))
		}
		return
	}
	t.Fatal("the version never changed in the middle of an evaluation")
}
