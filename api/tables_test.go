package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/internal/datasets"
)

// corpusTexts are uploaded corpus texts: their bigrams and trigrams are
// what a small budget takes beyond the vocabulary's unigrams.
var corpusTexts = []string{
	"the film was a delight from start to finish",
	"the film was a bore from start to finish",
	"a delight of a film, the best of the year",
	"a bore of a film, the worst of the year",
}

func textsJSONL(texts ...string) []byte {
	var b strings.Builder
	for _, s := range texts {
		j, _ := json.Marshal(map[string]string{"text": s})
		b.Write(j)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// TestTablesHTTP builds a PLOT table through the HTTP API of a real node
// (uploaded texts, a small budget), follows its job through the job
// routes, lists and shows it, serves a plot-mode vPLM from it next to a
// full-mode one, cancels a second build, and checks the error answers.
func TestTablesHTTP(t *testing.T) {
	var hold atomic.Bool // table jobs wait after their first batch while set
	c, base := startNode(t, func(cfg *cluster.NodeConfig) {
		cfg.Trainer.AfterCheckpoint = func(ctx context.Context, _ string, batch int) {
			if batch == 1 && hold.Load() {
				<-ctx.Done()
			}
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// Start: 202 with the queued job of kind "table", and where to find it.
	body, _ := protoOut.Marshal(&smilepb.TableRequest{ExamplesJsonl: textsJSONL(corpusTexts...), BudgetBytes: 32 << 10})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/tables", strings.NewReader(string(body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var job smilepb.TrainJob
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted || protoRead.Unmarshal(raw, &job) != nil || job.Kind != "table" ||
		!strings.HasPrefix(job.Table, "plot-") || resp.Header.Get("Location") != "/v1/jobs/"+job.Id ||
		!strings.HasPrefix(job.Dataset, "upload:") || job.Model != "" {
		t.Fatalf("build: HTTP %d %s (Location %q)", resp.StatusCode, raw, resp.Header.Get("Location"))
	}
	// Its progress through the job routes, to the end.
	var final *smilepb.TrainJob
	records := 0
	if err := c.WatchJob(ctx, job.Id, func(j *smilepb.TrainJob) error {
		records++
		if j.Step > j.Steps || j.Kind != "table" || j.Table != job.Table {
			t.Errorf("record %v", j)
		}
		final = j
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if final.State != smilepb.JobState_JOB_SUCCEEDED || final.Step != final.Steps || final.Steps == 0 {
		t.Fatalf("table job ended %v after %d records", final, records)
	}
	if j, err := c.Job(ctx, job.Id); err != nil || j.Kind != "table" || j.State != final.State {
		t.Fatalf("job: %v %v", j, err)
	}
	if js, err := c.Jobs(ctx, job.Table); err != nil || len(js) != 1 || js[0].Id != job.Id {
		t.Fatalf("jobs of the table: %v %v", js, err)
	}

	// Listed and shown.
	tabs, err := c.Tables(ctx)
	if err != nil || len(tabs) != 1 || tabs[0].Id != job.Table {
		t.Fatalf("tables: %v %v", tabs, err)
	}
	m := tabs[0]
	if !m.Complete || m.Cut == 0 || m.Unigrams == 0 || m.Bigrams+m.Trigrams == 0 || m.Entries != m.Unigrams+m.Bigrams+m.Trigrams ||
		m.Entries != final.Steps || m.CorpusSequences != uint64(len(corpusTexts)) || m.BudgetBytes != 32<<10 || m.Corpus != job.Dataset {
		t.Fatalf("manifest %v", m)
	}
	info, err := c.Table(ctx, job.Table)
	if err != nil || info.Table.GetId() != job.Table || info.SharedEntries != m.Entries || info.SharedEntryBytes == 0 {
		t.Fatalf("table: %v %v", info, err)
	}
	status, raw := call(t, "GET", base+"/v1/tables", nil)
	if status != 200 || !strings.HasPrefix(string(raw), `{"tables":[{"id":"`+job.Table+`"`) {
		t.Fatalf("GET /v1/tables: HTTP %d %s", status, raw)
	}

	// A plot-mode vPLM on it: its adapters sit above the cut; it answers,
	// and the table records its lookups.
	pm, err := c.Create(ctx, CreateModelRequest{ID: "rev-plot", Task: "classify", Labels: []string{"neg", "pos"}, Mode: "plot", Table: job.Table})
	if err != nil {
		t.Fatal(err)
	}
	if pm.Mode != "plot" || pm.Table != job.Table || len(pm.Layers) == 0 || pm.Layers[0] <= int(m.Cut) {
		t.Fatalf("plot model %+v", pm)
	}
	fm, err := c.Create(ctx, CreateModelRequest{ID: "rev-full", Task: "classify", Labels: []string{"neg", "pos"}, Mode: "full"})
	if err != nil || fm.Mode != "full" || fm.Table != "" {
		t.Fatalf("full model %+v %v", fm, err)
	}
	if got, err := c.Get(ctx, "rev-plot"); err != nil || got.Mode != "plot" || got.Table != job.Table {
		t.Fatalf("plot model read back %+v %v", got, err)
	}
	status, raw = call(t, "POST", base+"/v1/models/rev-plot/classify", []byte(`{"texts":["the film was a delight","a bore"]}`))
	var cr ClassifyResponse
	if status != 200 || json.Unmarshal(raw, &cr) != nil || len(cr.Predictions) != 2 || cr.Predictions[0].Label == "" {
		t.Fatalf("classify with the plot model: HTTP %d %s", status, raw)
	}
	if info, err = c.Table(ctx, job.Table); err != nil || !info.Open || info.Sequences < 2 || info.Positions == 0 ||
		info.HitsFull+info.HitsPartial == 0 || info.HitRate <= 0 || info.MemoryBudgetBytes == 0 {
		t.Fatalf("table after serving: %v %v", info, err)
	}

	// The same request again: the same table, SUCCEEDED at once.
	again, err := c.BuildTable(ctx, &smilepb.TableRequest{ExamplesJsonl: textsJSONL(corpusTexts...), BudgetBytes: 32 << 10})
	if err != nil || again.Table != job.Table || again.State != smilepb.JobState_JOB_SUCCEEDED {
		t.Fatalf("the same build again: %v %v", again, err)
	}

	// A build canceled through DELETE /v1/jobs/{id} in the middle: the
	// table stays incomplete, and no vPLM can use it.
	hold.Store(true)
	long, err := c.BuildTable(ctx, &smilepb.TableRequest{Dataset: "imdb", BudgetBytes: 2 << 20, Base: job.Table})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.BuildTable(ctx, &smilepb.TableRequest{Dataset: "imdb", BudgetBytes: 2 << 20, Base: job.Table}); !isCode(err, CodeJobConflict) {
		t.Fatalf("a second build of the same table: %v, want job_conflict", err)
	}
	canceled, err := c.CancelJob(ctx, long.Id)
	hold.Store(false)
	if err != nil || canceled.State != smilepb.JobState_JOB_CANCELED || canceled.Kind != "table" {
		t.Fatalf("cancel: %v %v", canceled, err)
	}
	if inf, err := c.Table(ctx, long.Table); err != nil || inf.Table.Complete || inf.Table.Base != job.Table {
		t.Fatalf("the canceled build's table: %v %v", inf, err)
	}
	if _, err := c.Create(ctx, CreateModelRequest{ID: "early", Task: "classify", Labels: []string{"a", "b"}, Mode: "plot", Table: long.Table}); !isCode(err, CodeBadRequest) {
		t.Fatalf("create on an incomplete table: %v, want bad_request", err)
	}

	// Errors: the code, its status, and what the message names.
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	unknown := "plot-" + strings.Repeat("f", 32)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code, names              string
	}{
		{"build bad JSON", "POST", "/v1/tables", `{"dataset":`, 400, CodeBadRequest, "request body"},
		{"build unknown field", "POST", "/v1/tables", `{"dataset":"imdb","budget":1}`, 400, CodeBadRequest, "budget"},
		{"build empty body", "POST", "/v1/tables", ``, 400, CodeBadRequest, "empty"},
		{"build no corpus", "POST", "/v1/tables", `{}`, 400, CodeBadRequest, "no corpus"},
		{"build two corpora", "POST", "/v1/tables", `{"dataset":"imdb","examples_jsonl":"` + b64("{\"text\":\"a\"}\n") + `"}`, 400, CodeBadRequest, "both"},
		{"build negative budget", "POST", "/v1/tables", `{"dataset":"imdb","budget_bytes":"-1"}`, 400, CodeBadRequest, "budget"},
		{"build budget over the max", "POST", "/v1/tables", `{"dataset":"imdb","budget_bytes":"99999999999999"}`, 400, CodeBadRequest, "budget"},
		{"build cut at the top", "POST", "/v1/tables", `{"dataset":"imdb","cut":2}`, 400, CodeBadRequest, "cut 2"},
		{"build cut far too high", "POST", "/v1/tables", `{"dataset":"imdb","cut":4000000000}`, 400, CodeBadRequest, "cut"},
		{"build unknown base", "POST", "/v1/tables", `{"dataset":"imdb","base":"` + unknown + `"}`, 404, CodeNotFound, unknown},
		{"build unknown backbone", "POST", "/v1/tables", `{"dataset":"imdb","backbone":"bert-huge"}`, 400, CodeBadRequest, "bert-huge"},
		{"build unknown dataset", "POST", "/v1/tables", `{"dataset":"nosuch"}`, 400, CodeBadDataset, "nosuch"},
		{"build malformed upload", "POST", "/v1/tables", `{"examples_jsonl":"` + b64("{\"text\":\"a\"}\nnot json\n") + `"}`, 400, CodeBadDataset, "examples_jsonl:2"},
		{"build empty text", "POST", "/v1/tables", `{"examples_jsonl":"` + b64("{\"text\":\"  \"}\n") + `"}`, 400, CodeBadDataset, "examples_jsonl:1"},
		{"show unknown table", "GET", "/v1/tables/" + unknown, "", 404, CodeNotFound, unknown},
		{"show malformed id", "GET", "/v1/tables/nope", "", 404, CodeNotFound, "nope"},
		{"create unknown mode", "POST", "/v1/models", `{"id":"e1","task":"classify","labels":["a","b"],"mode":"half"}`, 400, CodeBadRequest, "half"},
		{"create plot without table", "POST", "/v1/models", `{"id":"e1","task":"classify","labels":["a","b"],"mode":"plot"}`, 400, CodeBadRequest, "table"},
		{"create table in full mode", "POST", "/v1/models", `{"id":"e1","task":"classify","labels":["a","b"],"mode":"full","table":"` + job.Table + `"}`, 400, CodeBadRequest, job.Table},
		{"create table without mode", "POST", "/v1/models", `{"id":"e1","task":"classify","labels":["a","b"],"table":"` + job.Table + `"}`, 400, CodeBadRequest, job.Table},
		{"create unknown table", "POST", "/v1/models", `{"id":"e1","task":"classify","labels":["a","b"],"mode":"plot","table":"` + unknown + `"}`, 404, CodeNotFound, unknown},
		{"create adapter at the cut", "POST", "/v1/models", `{"id":"e1","task":"classify","labels":["a","b"],"mode":"plot","table":"` + job.Table + `","layers":[1]}`, 400, CodeBadRequest, "layer 1"},
	} {
		t.Run("error/"+tc.name, func(t *testing.T) {
			status, raw := call(t, tc.method, base+tc.path, []byte(tc.body))
			e := errorOf(status, raw)
			if status != tc.status || e.Code != tc.code || !strings.Contains(e.Message, tc.names) {
				t.Fatalf("HTTP %d %s, want %d %s naming %q", status, raw, tc.status, tc.code, tc.names)
			}
		})
	}
	if _, err := c.Get(ctx, "e1"); !isCode(err, CodeNotFound) {
		t.Fatalf("a refused create left a model: %v", err)
	}
	if tabs, err := c.Tables(ctx); err != nil || len(tabs) != 2 {
		t.Fatalf("refused builds stored tables: %v %v", tabs, err)
	}
	// An upload's labels are ignored: a labelled training file is a corpus.
	j, err := c.BuildTable(ctx, &smilepb.TableRequest{ExamplesJsonl: imdbJSONL(t, datasets.Train, 4), BudgetBytes: 1})
	if err != nil || j.Kind != "table" {
		t.Fatalf("build on labelled examples: %v %v", j, err)
	}
	if err := c.WatchJob(ctx, j.Id, func(r *smilepb.TrainJob) error { j = r; return nil }); err != nil || j.State != smilepb.JobState_JOB_SUCCEEDED {
		t.Fatalf("build on labelled examples: %v %v", j, err)
	}
}
