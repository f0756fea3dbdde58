package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/storage"
)

// startNode serves the HTTP API of a node on the real use-lite backbone,
// an on-disk Badger in a temp dir, and the shared test data directory for
// datasets (imdb pulled there if missing). opts adjust the node's
// configuration.
func startNode(t *testing.T, opts ...func(*cluster.NodeConfig)) (*Client, string) {
	t.Helper()
	z := testenv.UseLite(t)
	ensureIMDB(t)
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
	cfg := cluster.DefaultNodeConfig()
	cfg.Log = quietLog()
	cfg.Trainer.DataDir = testenv.DataDir()
	cfg.Trainer.Pull = func(ctx context.Context, dataDir, name string) error {
		return errors.New("no dataset pulls in this test")
	}
	for _, o := range opts {
		o(&cfg)
	}
	n, err := cluster.Start(context.Background(), cfg, store, storage.NewCatalog(store), bb)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(n.Service(), DefaultHTTPConfig(), quietLog()))
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			t.Error(err)
		}
		bb.Close()
		dev.Close()
		store.Close()
	})
	c, err := NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c, srv.URL
}

func ensureIMDB(t *testing.T) {
	t.Helper()
	dir := testenv.DataDir()
	if _, err := datasets.ReadMeta(dir, "imdb"); errors.Is(err, datasets.ErrNotPulled) {
		if _, err := datasets.Pull(context.Background(), dir, "imdb", "", nil); err != nil {
			t.Fatalf("the imdb dataset is needed: %v", err)
		}
	}
}

// imdbJSONL is n examples of a pulled imdb split, half of each label, as
// JSONL.
func imdbJSONL(t *testing.T, split string, n int) []byte {
	t.Helper()
	ex, err := datasets.ReadSplit(testenv.DataDir(), "imdb", split)
	if err != nil {
		t.Fatal(err)
	}
	var out []datasets.Example
	count := map[string]int{}
	for _, e := range ex {
		if count[e.Label] < n/2 {
			count[e.Label]++
			out = append(out, e)
		}
	}
	b, err := datasets.EncodeJSONL(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTrainHTTP trains a vPLM through the HTTP API of a real node: a job
// on 32 uploaded imdb examples (small: under -race a text costs about 0.1 s
// of training and caching), its events streamed to the end, the new
// version served and scored by eval; then the error answers.
func TestTrainHTTP(t *testing.T) {
	c, base := startNode(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	m, err := c.Create(ctx, CreateModelRequest{ID: "rev", Task: "classify", Labels: []string{"0", "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, CreateModelRequest{ID: "emb", Task: "embed"}); err != nil {
		t.Fatal(err)
	}

	// Start: 202 with the queued record and where to find it.
	body, _ := protoOut.Marshal(&smilepb.TrainRequest{ExamplesJsonl: imdbJSONL(t, datasets.Train, 32),
		Config: &smilepb.TrainConfig{Epochs: 1, BatchSize: 16}})
	status, raw := call(t, "POST", base+"/v1/models/rev/train", body)
	var job smilepb.TrainJob
	if status != http.StatusAccepted || protoRead.Unmarshal(raw, &job) != nil || job.Id == "" || job.Model != "rev" ||
		job.State != smilepb.JobState_JOB_QUEUED || !strings.HasPrefix(job.Dataset, "upload:") || job.BaseVersion != m.Version {
		t.Fatalf("train: HTTP %d %s", status, raw)
	}

	// The events, to the end: states in order, the last one final.
	var states []smilepb.JobState
	var final *smilepb.TrainJob
	if err := c.WatchJob(ctx, job.Id, func(j *smilepb.TrainJob) error {
		if len(states) == 0 || states[len(states)-1] != j.State {
			states = append(states, j.State)
		}
		final = j
		return nil
	}); err != nil {
		t.Fatalf("watch: %v", err)
	}
	if final.State != smilepb.JobState_JOB_SUCCEEDED || final.Version != m.Version+1 || final.BestValAccuracy < 0 ||
		!slices.IsSorted(states) || final.TrainExamples+final.ValidationExamples == 0 {
		t.Fatalf("job ended %v after states %v", final, states)
	}
	if got, err := c.Get(ctx, "rev"); err != nil || got.Version != final.Version {
		t.Fatalf("model after training: %+v %v, want version %d", got, err, final.Version)
	}
	// The stream of an ended job: its one record, then the end.
	resp, err := http.Get(base + "/v1/jobs/" + job.Id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/x-ndjson" || bytes.Count(raw, []byte("\n")) != 1 || !bytes.Contains(raw, []byte(`"JOB_SUCCEEDED"`)) {
		t.Fatalf("events of an ended job: %s %q", resp.Header.Get("Content-Type"), raw)
	}

	// Job, jobs, and cancel of an ended job (its record, as it is).
	if j, err := c.Job(ctx, job.Id); err != nil || j.State != final.State || j.Version != final.Version {
		t.Fatalf("job: %v %v", j, err)
	}
	if js, err := c.Jobs(ctx, "rev"); err != nil || len(js) != 1 || js[0].Id != job.Id {
		t.Fatalf("jobs of rev: %v %v", js, err)
	}
	if js, err := c.Jobs(ctx, "emb"); err != nil || len(js) != 0 {
		t.Fatalf("jobs of emb: %v %v", js, err)
	}
	if j, err := c.CancelJob(ctx, job.Id); err != nil || j.State != smilepb.JobState_JOB_SUCCEEDED {
		t.Fatalf("cancel an ended job: %v %v", j, err)
	}

	// Eval of the trained version by dataset name: the whole test split.
	byName, err := c.Eval(ctx, &smilepb.EvalRequest{Model: "rev", Dataset: "imdb"})
	if err != nil {
		t.Fatal(err)
	}
	testSplit, err := datasets.ReadSplit(testenv.DataDir(), "imdb", datasets.Test)
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, v := range byName.Confusion {
		sum += v
	}
	if byName.Model != "rev" || byName.Version != final.Version || byName.N != uint64(len(testSplit)) || sum != byName.N ||
		!slices.Equal(byName.Labels, []string{"0", "1"}) || len(byName.Confusion) != 4 || byName.Accuracy < 0 || byName.Accuracy > 1 ||
		byName.MacroF1 < 0 || byName.MacroF1 > 1 {
		t.Fatalf("eval by name: %v", byName)
	}
	// Uploaded examples score exactly what classify answers.
	few := testSplit[:20]
	upload, _ := datasets.EncodeJSONL(few)
	byUpload, err := c.Eval(ctx, &smilepb.EvalRequest{Model: "rev", ExamplesJsonl: upload})
	if err != nil {
		t.Fatal(err)
	}
	texts := make([]string, len(few))
	for i, e := range few {
		texts[i] = e.Text
	}
	cr, err := c.Classify(ctx, "rev", texts)
	if err != nil {
		t.Fatal(err)
	}
	right := 0
	for i, p := range cr.Predictions {
		if p.Label == few[i].Label {
			right++
		}
	}
	if byUpload.N != 20 || byUpload.Version != final.Version || byUpload.Accuracy != float64(right)/20 {
		t.Fatalf("eval by upload: %v; classify has %d of 20 right", byUpload, right)
	}

	// Errors: the code, its status, and what the message names.
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	two := "{\"text\":\"great\",\"label\":\"1\"}\n{\"text\":\"awful\",\"label\":\"0\"}\n"
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code, names              string
	}{
		{"train unknown model", "POST", "/v1/models/nope/train", `{"dataset":"imdb"}`, 404, CodeNotFound, "nope"},
		{"train bad config", "POST", "/v1/models/rev/train", `{"dataset":"imdb","config":{"epochs":5000}}`, 400, CodeBadRequest, "epochs"},
		{"train unknown dataset", "POST", "/v1/models/rev/train", `{"dataset":"nosuch"}`, 400, CodeBadDataset, "nosuch"},
		{"train unknown label", "POST", "/v1/models/rev/train", `{"examples_jsonl":"` + b64(two+"{\"text\":\"meh\",\"label\":\"2\"}\n") + `"}`,
			400, CodeBadDataset, "examples_jsonl:3"},
		{"train malformed", "POST", "/v1/models/rev/train", `{"dataset":`, 400, CodeBadRequest, ""},
		{"train nothing", "POST", "/v1/models/rev/train", `{}`, 400, CodeBadRequest, "no examples"},
		{"eval unknown model", "POST", "/v1/models/nope/eval", `{"dataset":"imdb"}`, 404, CodeNotFound, "nope"},
		{"eval embed model", "POST", "/v1/models/emb/eval", `{"dataset":"imdb"}`, 400, CodeWrongTask, "emb"},
		{"eval unknown label", "POST", "/v1/models/rev/eval", `{"examples_jsonl":"` + b64(two+"\n{\"text\":\"meh\",\"label\":\"pos\"}\n") + `"}`,
			400, CodeBadDataset, "examples_jsonl:4"},
		{"eval bad split", "POST", "/v1/models/rev/eval", `{"dataset":"imdb","split":"dev"}`, 400, CodeBadRequest, "dev"},
		{"unknown job", "GET", "/v1/jobs/job-nope", "", 404, CodeJobNotFound, "job-nope"},
		{"cancel unknown job", "DELETE", "/v1/jobs/job-nope", "", 404, CodeJobNotFound, "job-nope"},
		{"events of unknown job", "GET", "/v1/jobs/job-nope/events", "", 404, CodeJobNotFound, "job-nope"},
	} {
		t.Run("error/"+tc.name, func(t *testing.T) {
			status, raw := call(t, tc.method, base+tc.path, []byte(tc.body))
			e := errorOf(status, raw)
			if status != tc.status || e.Code != tc.code || !strings.Contains(e.Message, tc.names) ||
				(tc.code == CodeTextTooLong && e.Index != 2) {
				t.Fatalf("HTTP %d %s, want %d %s naming %q", status, raw, tc.status, tc.code, tc.names)
			}
		})
	}

	// A text past the serving byte limit is scored on its prefix (as
	// training cut it), not refused.
	status, raw = call(t, "POST", base+"/v1/models/rev/eval", []byte(`{"examples_jsonl":"`+b64(two+"{\"text\":\""+strings.Repeat("a", 70_000)+"\",\"label\":\"0\"}\n")+`"}`))
	if status != 200 || !strings.Contains(string(raw), `"n":"3"`) {
		t.Fatalf("eval with a 70 KB text: HTTP %d %s", status, raw)
	}

	// A second job while one is active is refused; cancel ends the first
	// and leaves the model as it was.
	long, err := c.Train(ctx, &smilepb.TrainRequest{Model: "rev", ExamplesJsonl: imdbJSONL(t, datasets.Train, 32),
		Config: &smilepb.TrainConfig{Epochs: 1000, BatchSize: 8, Patience: -1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Train(ctx, &smilepb.TrainRequest{Model: "rev", Dataset: "imdb"}); !isCode(err, CodeJobConflict) || err.(*Error).Status() != 409 {
		t.Fatalf("second job: %v, want job_conflict", err)
	}
	canceled, err := c.CancelJob(ctx, long.Id)
	if err != nil || canceled.State != smilepb.JobState_JOB_CANCELED {
		t.Fatalf("cancel: %v %v", canceled, err)
	}
	if got, err := c.Get(ctx, "rev"); err != nil || got.Version != final.Version {
		t.Fatalf("model after a canceled job: %+v %v, want version %d", got, err, final.Version)
	}
}

// call makes one raw request and returns the status and body.
func call(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw
}
