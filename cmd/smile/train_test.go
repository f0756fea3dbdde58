package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/testenv"
)

var updateGolden = flag.Bool("update", false, "rewrite cmd/smile/testdata/*.golden")

// progressRun is a two-epoch job's records as the server sends them: 4
// steps an epoch, the validation accuracy of an epoch arriving after its
// last step, and the final record.
func progressRun(final smilepb.JobState) []*smilepb.TrainJob {
	rec := func(st smilepb.JobState, epoch uint32, step uint64, loss, val, best float64, eta int64) *smilepb.TrainJob {
		return &smilepb.TrainJob{Id: "job-1", Model: "reviews", State: st, Epoch: epoch, Epochs: 2, Step: step, Steps: 8,
			Loss: loss, ValAccuracy: val, BestValAccuracy: best, ExamplesPerS: 412.4, EtaMs: eta, BaseVersion: 1}
	}
	queued := rec(smilepb.JobState_JOB_QUEUED, 0, 0, 0, -1, -1, 0)
	queued.Steps, queued.Epochs = 0, 2
	caching := rec(smilepb.JobState_JOB_CACHING, 0, 0, 0, -1, -1, 0)
	caching.Stage = "caching 0/200 examples"
	cached := rec(smilepb.JobState_JOB_CACHING, 0, 0, 0, -1, -1, 0)
	cached.Stage = "caching 200/200 examples"
	T := smilepb.JobState_JOB_TRAINING
	starting := rec(T, 0, 0, 0, -1, -1, 0)
	starting.Stage, starting.Steps = "training", 0
	validated := rec(T, 1, 4, 0.6400, 0.70, 0.70, 0) // epoch 1 validated
	validated.ExamplesPerS = 0
	out := []*smilepb.TrainJob{queued, caching, cached, starting,
		rec(T, 1, 1, 0.6931, -1, -1, 65_000),
		rec(T, 1, 3, 0.6512, -1, -1, 3_723_000),
		rec(T, 1, 4, 0.6400, -1, -1, 2_000),
		validated,
		rec(T, 2, 6, 0.5000, 0.70, 0.70, 1_000),
	}
	end := rec(final, 2, 8, 0.4500, 0.65, 0.70, 0)
	if final == smilepb.JobState_JOB_CANCELED {
		end = rec(final, 2, 6, 0.5000, 0.70, 0.70, 0)
	}
	if final == smilepb.JobState_JOB_SUCCEEDED {
		end.Version = 2
	}
	return append(out, end)
}

// TestProgressRendering: the progress lines of a run on a terminal (redrawn
// in place with \r, a line left per epoch) and elsewhere (a line per stage
// and per epoch), against testdata/progress.golden (go test -update
// rewrites it).
func TestProgressRendering(t *testing.T) {
	var got bytes.Buffer
	for _, tc := range []struct {
		name  string
		tty   bool
		final smilepb.JobState
	}{
		{"plain, succeeded", false, smilepb.JobState_JOB_SUCCEEDED},
		{"terminal, succeeded", true, smilepb.JobState_JOB_SUCCEEDED},
		{"plain, canceled", false, smilepb.JobState_JOB_CANCELED},
		{"terminal, canceled", true, smilepb.JobState_JOB_CANCELED},
	} {
		var out bytes.Buffer
		p := &progress{w: &out, tty: tc.tty}
		run := progressRun(tc.final)
		for _, j := range run {
			p.update(j)
		}
		p.done()
		writeJobSummary(&out, run[len(run)-1])
		got.WriteString("== " + tc.name + "\n")
		got.WriteString(strings.ReplaceAll(out.String(), "\r", "<CR>"))
		if !tc.tty && strings.Contains(out.String(), "\r") {
			t.Errorf("%s: a carriage return outside a terminal", tc.name)
		}
	}
	path := filepath.Join("testdata", "progress.golden")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run TestProgressRendering -update writes it)", err)
	}
	if got.String() != string(want) {
		t.Errorf("progress output differs from %s (rerun with -update if the change is meant):\n%s", path, got.String())
	}
}

func TestProgressPieces(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{bar(0, 4), "[................]"},
		{bar(3, 4), "[############....]"},
		{bar(4, 4), "[################]"},
		{bar(1, 0), "[................]"},
		{eta(0), "-"},
		{eta(44_600), "45s"},
		{eta(185_000), "3m05s"},
		{eta(3_723_000), "1h02m"},
		{percent(-1), "-"},
		{percent(0.8125), "81.2%"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

// TestParseData: what --data names.
func TestParseData(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "reviews.csv")
	odd := filepath.Join(dir, "reviews.txt")
	for _, p := range []string{file, odd} {
		if err := os.WriteFile(p, []byte("text,label\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		arg, name, file string
		usage           bool
	}{
		{"imdb", "imdb", "", false},
		{file, "", file, false},
		{odd, "", "", true},
		{dir, "", "", true},
		{filepath.Join(dir, "missing.jsonl"), "", "", true},
		{"missing.jsonl", "", "", true},
		{"some/dir/imdb", "", "", true},
		{"", "", "", true},
	} {
		d, err := parseData("train", c.arg)
		_, usage := errors.AsType[*usageError](err)
		if d.name != c.name || d.file != c.file || usage != c.usage || (err != nil && !usage) {
			t.Errorf("parseData(%q) = %+v, %v", c.arg, d, err)
		}
	}
}

// TestTrainUsageErrors: bad flags of train, eval, jobs, job and cancel are
// usage errors (exit 2), caught before any server is asked.
func TestTrainUsageErrors(t *testing.T) {
	dir := t.TempDir()
	txt := filepath.Join(dir, "data.txt")
	jsonl := filepath.Join(dir, "data.jsonl")
	for _, p := range []string{txt, jsonl} {
		if err := os.WriteFile(p, []byte("{\"text\":\"a\",\"label\":\"x\"}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	closed := testenv.FreeAddr(t)
	for _, args := range [][]string{
		{"train"},
		{"train", "m"},
		{"train", "m", "n", "--data", "imdb"},
		{"train", "m", "--data", "imdb", "--epochs", "-1"},
		{"train", "m", "--data", "imdb", "--epochs", "1001"},
		{"train", "m", "--data", "imdb", "--batch-size", "-2"},
		{"train", "m", "--data", "imdb", "--lr", "0"},
		{"train", "m", "--data", "imdb", "--lr", "-0.1"},
		{"train", "m", "--data", "imdb", "--lr", "NaN"},
		{"train", "m", "--data", "imdb", "--weight-decay", "1"},
		{"train", "m", "--data", "imdb", "--weight-decay", "-0.5"},
		{"train", "m", "--data", "imdb", "--warmup", "1.5"},
		{"train", "m", "--data", "imdb", "--clip-norm", "Inf"},
		{"train", "m", "--data", "imdb", "--seed", "-1"},
		{"train", "m", "--data", "imdb", "--epochs", "two"},
		{"train", "m", "--data", txt},
		{"train", "m", "--data", dir},
		{"train", "m", "--data", filepath.Join(dir, "nope.csv")},
		{"eval"},
		{"eval", "m"},
		{"eval", "m", "--data", "imdb", "--split", "dev"},
		{"eval", "m", "--data", jsonl, "--split", "test"},
		{"eval", "m", "--data", txt},
		{"jobs", "a", "b"},
		{"job"},
		{"job", "a", "b"},
		{"cancel"},
		{"cancel", "a", "b"},
	} {
		_, err := run(t, "", append(args, "--server", closed)...)
		if _, ok := errors.AsType[*usageError](err); !ok {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
}

// TestTrainNoServer: with nothing listening, the training commands say
// where they looked, like every client command.
func TestTrainNoServer(t *testing.T) {
	addr := testenv.FreeAddr(t)
	for _, args := range [][]string{
		{"train", "m", "--data", "imdb"},
		{"eval", "m", "--data", "imdb"},
		{"jobs"},
		{"job", "j"},
		{"job", "j", "--watch"},
		{"cancel", "j"},
	} {
		_, err := run(t, "", append(args, "--server", addr)...)
		if !errors.Is(err, errNoServer) || !strings.Contains(err.Error(), addr) {
			t.Errorf("%v: err = %v", args, err)
		}
	}
}

// TestJobError: a job's final state decides the exit status.
func TestJobError(t *testing.T) {
	ok := &smilepb.TrainJob{Id: "j", State: smilepb.JobState_JOB_SUCCEEDED}
	failed := &smilepb.TrainJob{Id: "j", State: smilepb.JobState_JOB_FAILED, Error: &smilepb.Error{Code: "internal", Message: "boom"}}
	canceled := &smilepb.TrainJob{Id: "j", State: smilepb.JobState_JOB_CANCELED}
	if jobError(ok) != nil {
		t.Error("a succeeded job is an error")
	}
	if err := jobError(failed); err == nil || !strings.Contains(err.Error(), "internal: boom") {
		t.Errorf("failed: %v", err)
	}
	if e, isAPI := errors.AsType[*api.Error](jobError(failed)); !isAPI || e.Code != "internal" {
		t.Errorf("failed: the cause is not the job's *api.Error")
	}
	if err := jobError(canceled); err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Errorf("canceled: %v", err)
	}
}

// fakeAPI is a server speaking the training routes of the HTTP API from
// canned records, for the CLI's wiring: what it sends, what it prints, its
// exit status and Ctrl-C. (api's tests train on a real node.)
type fakeAPI struct {
	t        *testing.T
	mu       sync.Mutex
	train    *smilepb.TrainRequest
	eval     *smilepb.EvalRequest
	canceled []string
	// records is the events stream of job-1; hold, if set, is waited for
	// after the records while the job is not over.
	records []*smilepb.TrainJob
	hold    chan struct{}
}

func (f *fakeAPI) start() string {
	out := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	writeProto := func(w http.ResponseWriter, status int, m proto.Message) {
		b, _ := out.Marshal(m)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(b)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models/m", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.Model{ID: "m", Task: "classify", Labels: []string{"neg", "pos"}, Version: 1})
	})
	mux.HandleFunc("POST /v1/models/m/train", func(w http.ResponseWriter, r *http.Request) {
		var req smilepb.TrainRequest
		b, _ := io.ReadAll(r.Body)
		if err := protojson.Unmarshal(b, &req); err != nil {
			f.t.Errorf("train body %s: %v", b, err)
		}
		f.mu.Lock()
		f.train = &req
		f.mu.Unlock()
		writeProto(w, http.StatusAccepted, &smilepb.TrainJob{Id: "job-1", Model: "m", State: smilepb.JobState_JOB_QUEUED, Dataset: "upload:abc"})
	})
	mux.HandleFunc("GET /v1/jobs/job-1/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		for _, j := range f.records {
			b, _ := out.Marshal(j)
			w.Write(append(b, '\n'))
		}
		w.(http.Flusher).Flush()
		if f.hold != nil {
			select {
			case <-f.hold:
			case <-r.Context().Done():
			}
		}
	})
	mux.HandleFunc("GET /v1/jobs/job-1", func(w http.ResponseWriter, r *http.Request) {
		writeProto(w, 200, f.records[len(f.records)-1])
	})
	mux.HandleFunc("GET /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		b, _ := out.Marshal(f.records[len(f.records)-1])
		fmt.Fprintf(w, `{"jobs":[%s]}`, b)
	})
	mux.HandleFunc("DELETE /v1/jobs/job-1", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.canceled = append(f.canceled, "job-1")
		f.mu.Unlock()
		writeProto(w, 200, &smilepb.TrainJob{Id: "job-1", Model: "m", State: smilepb.JobState_JOB_CANCELED})
	})
	mux.HandleFunc("POST /v1/models/m/eval", func(w http.ResponseWriter, r *http.Request) {
		var req smilepb.EvalRequest
		b, _ := io.ReadAll(r.Body)
		if err := protojson.Unmarshal(b, &req); err != nil {
			f.t.Errorf("eval body %s: %v", b, err)
		}
		f.mu.Lock()
		f.eval = &req
		f.mu.Unlock()
		writeProto(w, 200, &smilepb.EvalReply{Model: "m", Version: 2, N: 4, Accuracy: 0.75, MacroF1: 0.7333,
			Labels: []string{"neg", "pos"}, Confusion: []uint64{2, 0, 1, 1}})
	})
	srv := httptest.NewServer(mux)
	f.t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// runCtx is run with a context of the caller's and stderr returned.
func runCtx(ctx context.Context, stderr io.Writer, args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(stderr)
	cmd.SetIn(strings.NewReader(""))
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func twoEpochs(final smilepb.JobState) []*smilepb.TrainJob {
	run := progressRun(final)
	for _, j := range run {
		j.Model = "m"
	}
	return run
}

// TestTrainCLI: `smile train` checks and converts a local CSV file, sends
// the flags as the config, shows progress on stderr and ends with the
// summary or one JSON line, failing for a failed job.
func TestTrainCLI(t *testing.T) {
	f := &fakeAPI{t: t, records: twoEpochs(smilepb.JobState_JOB_SUCCEEDED)}
	addr := f.start()
	dir := t.TempDir()
	csv := filepath.Join(dir, "reviews.csv")
	if err := os.WriteFile(csv, []byte("label,text\npos,a fine film\nneg,\"dull, tiresome\"\n\npos,great\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	out, err := runCtx(t.Context(), &stderr, "train", "m", "--data", csv, "--epochs", "2", "--lr", "0.01", "--patience", "-1",
		"--seed", "7", "--full", "--json", "--server", addr)
	if err != nil {
		t.Fatalf("train: %v\n%s", err, &stderr)
	}
	var final map[string]any
	if strings.Count(out, "\n") != 1 || json.Unmarshal([]byte(out), &final) != nil || final["state"] != "JOB_SUCCEEDED" || final["version"] != "2" {
		t.Fatalf("train --json: %q", out)
	}
	if !strings.Contains(stderr.String(), "epoch 2/2 [################] 4/4 loss 0.4500 val 65.0% best 70.0%") {
		t.Errorf("progress: %q", &stderr)
	}
	req := f.train
	c := req.GetConfig()
	if req.Model != "m" || req.Dataset != "" || c.Epochs != 2 || c.Lr != 0.01 || c.Patience != -1 || c.Seed != 7 || c.BatchSize != 0 || !req.Full {
		t.Errorf("request %v", req)
	}
	want := "{\"text\":\"a fine film\",\"label\":\"pos\"}\n{\"text\":\"dull, tiresome\",\"label\":\"neg\"}\n{\"text\":\"great\",\"label\":\"pos\"}\n"
	if string(req.ExamplesJsonl) != want {
		t.Errorf("uploaded %q, want %q", req.ExamplesJsonl, want)
	}

	// The readable summary; a dataset name goes as the name.
	stderr.Reset()
	out, err = runCtx(t.Context(), &stderr, "train", "m", "--data", "imdb", "--server", addr)
	if err != nil || out != "m: version 2 committed (was 1); best validation accuracy 70.0%; ran all 2 epochs\n" || f.train.Dataset != "imdb" || f.train.Full {
		t.Errorf("train: %q %v (dataset %q)", out, err, f.train.Dataset)
	}
	// --detach: the id, nothing followed.
	out, err = runCtx(t.Context(), io.Discard, "train", "m", "--data", "imdb", "--detach", "--server", addr)
	if err != nil || out != "job-1\n" {
		t.Errorf("train --detach: %q %v", out, err)
	}
	// A failed job: the summary, and an error naming the job's error.
	f.records = twoEpochs(smilepb.JobState_JOB_FAILED)
	f.records[len(f.records)-1].Error = &smilepb.Error{Code: "model_changed", Message: "m was deleted"}
	_, err = runCtx(t.Context(), io.Discard, "train", "m", "--data", "imdb", "--server", addr)
	if err == nil || !strings.Contains(err.Error(), "job-1 failed: model_changed: m was deleted") {
		t.Errorf("failed job: %v", err)
	}
	// A label the model does not have: refused here, naming the line.
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"text\":\"a\",\"label\":\"pos\"}\n{\"text\":\"b\",\"label\":\"meh\"}\n"), 0o644)
	f.train = nil
	if _, err := runCtx(t.Context(), io.Discard, "train", "m", "--data", bad, "--server", addr); err == nil ||
		!strings.Contains(err.Error(), "bad.jsonl:2") || !strings.Contains(err.Error(), `"meh"`) || f.train != nil {
		t.Errorf("unknown label: %v (sent: %v)", err, f.train != nil)
	}
}

// TestTrainCLIInterrupt: Ctrl-C (the command's context ending) while the
// job runs cancels the job and fails.
func TestTrainCLIInterrupt(t *testing.T) {
	f := &fakeAPI{t: t, records: twoEpochs(smilepb.JobState_JOB_SUCCEEDED)[:5], hold: make(chan struct{})}
	defer close(f.hold)
	addr := f.start()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	w := &cancelOn{watch: "caching", cancel: cancel}
	_, err := runCtx(ctx, w, "train", "m", "--data", "imdb", "--server", addr)
	if err == nil || !strings.Contains(err.Error(), "interrupted: job job-1 canceled") || !slices.Equal(f.canceled, []string{"job-1"}) ||
		!errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("interrupted train: %v, canceled %v", err, f.canceled)
	}
}

// cancelOn calls cancel once what is written contains watch.
type cancelOn struct {
	buf    bytes.Buffer
	watch  string
	cancel func()
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.buf.Write(p)
	if strings.Contains(c.buf.String(), c.watch) {
		c.cancel()
	}
	return len(p), nil
}

// TestEvalCLI: `smile eval --json` is one line starting with accuracy,
// macro_f1 and n; the table names the labels; a file is uploaded.
func TestEvalCLI(t *testing.T) {
	f := &fakeAPI{t: t, records: twoEpochs(smilepb.JobState_JOB_SUCCEEDED)}
	addr := f.start()
	out, err := runCtx(t.Context(), io.Discard, "eval", "m", "--data", "imdb", "--json", "--server", addr)
	want := `{"accuracy":0.75,"macro_f1":0.7333,"n":4,"model":"m","version":2,"data":"imdb/test","labels":["neg","pos"],"confusion":[[2,0],[1,1]]}` + "\n"
	if err != nil || out != want || f.eval.Dataset != "imdb" || f.eval.Split != "test" {
		t.Fatalf("eval --json: %q %v (request %v)", out, err, f.eval)
	}
	out, err = runCtx(t.Context(), io.Discard, "eval", "m", "--data", "imdb", "--split", "validation", "--server", addr)
	wantText := "m version 2 on imdb/validation: 4 examples\naccuracy  0.7500\nmacro-F1  0.7333\n\n" +
		"confusion (rows: gold label, columns: predicted)\n       neg  pos\n  neg    2    0\n  pos    1    1\n"
	if err != nil || out != wantText {
		t.Fatalf("eval:\n%s\nwant:\n%s", out, wantText)
	}
	// A file with one class is fine for scoring.
	file := filepath.Join(t.TempDir(), "one.jsonl")
	os.WriteFile(file, []byte("{\"text\":\"a\",\"label\":\"pos\"}\n"), 0o644)
	if _, err := runCtx(t.Context(), io.Discard, "eval", "m", "--data", file, "--server", addr); err != nil ||
		string(f.eval.ExamplesJsonl) != "{\"text\":\"a\",\"label\":\"pos\"}\n" || f.eval.Dataset != "" || f.eval.Split != "" {
		t.Fatalf("eval of a file: %v (request %v)", err, f.eval)
	}
}

// TestJobsCLI: jobs, job and cancel print what the server answers.
func TestJobsCLI(t *testing.T) {
	f := &fakeAPI{t: t, records: twoEpochs(smilepb.JobState_JOB_SUCCEEDED)}
	addr := f.start()
	out, err := runCtx(t.Context(), io.Discard, "jobs", "--server", addr)
	if err != nil || !strings.HasPrefix(out, "ID") || !strings.Contains(out, "job-1") || !strings.Contains(out, "succeeded") {
		t.Errorf("jobs: %q %v", out, err)
	}
	out, err = runCtx(t.Context(), io.Discard, "job", "job-1", "--server", addr)
	if err != nil || !strings.Contains(out, "version") || !strings.Contains(out, "2 (from 1)") {
		t.Errorf("job: %q %v", out, err)
	}
	var stderr bytes.Buffer
	out, err = runCtx(t.Context(), &stderr, "job", "job-1", "--watch", "--json", "--server", addr)
	var rec map[string]any
	if err != nil || json.Unmarshal([]byte(out), &rec) != nil || rec["state"] != "JOB_SUCCEEDED" || !strings.Contains(stderr.String(), "epoch 2/2") {
		t.Errorf("job --watch --json: %q %v\n%s", out, err, &stderr)
	}
	out, err = runCtx(t.Context(), io.Discard, "cancel", "job-1", "--server", addr)
	if err != nil || out != "job job-1: canceled\n" {
		t.Errorf("cancel: %q %v", out, err)
	}
}
