package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/datasets"
)

// fakeTrainer answers the training routes from functions; a method left
// nil panics (the handler answers 500).
type fakeTrainer struct {
	trainer
	watch func(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) error
	job   func(ctx context.Context, id string) (*smilepb.TrainJob, error)
	eval  func(ctx context.Context, req *smilepb.EvalRequest) (*smilepb.EvalReply, error)
}

func (f *fakeTrainer) WatchJob(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) error {
	return f.watch(ctx, id, fn)
}

func (f *fakeTrainer) Job(ctx context.Context, id string) (*smilepb.TrainJob, error) {
	return f.job(ctx, id)
}

func (f *fakeTrainer) Eval(ctx context.Context, req *smilepb.EvalRequest) (*smilepb.EvalReply, error) {
	return f.eval(ctx, req)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fakeServer serves a handler whose training routes f answers.
func fakeServer(t *testing.T, cfg HTTPConfig, f *fakeTrainer, ioTimeout time.Duration) (*httptest.Server, *Client) {
	t.Helper()
	h := NewHandler(nil, cfg, quietLog())
	h.trainer = f
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ReadTimeout = ioTimeout
	srv.Config.WriteTimeout = ioTimeout
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

// TestJobEventsStream: the events route sends each record as one NDJSON
// line as it comes (the client reads record i before the service makes
// record i+1), ends with the job, and is cut neither by the request
// deadline nor by the server's read and write timeouts, all shorter than
// the stream.
func TestJobEventsStream(t *testing.T) {
	cfg := DefaultHTTPConfig()
	cfg.RequestTimeout = 100 * time.Millisecond
	read := make(chan struct{})
	var streams atomic.Int32
	f := &fakeTrainer{watch: func(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) error {
		if id != "j1" {
			return fmt.Errorf("%w: no job %q", actors.ErrNotFound, id)
		}
		streams.Add(1)
		for i := range 4 {
			st := smilepb.JobState_JOB_TRAINING
			if i == 3 {
				st = smilepb.JobState_JOB_SUCCEEDED
			}
			if err := fn(&smilepb.TrainJob{Id: id, Step: uint64(i), State: st, ValAccuracy: -1}); err != nil {
				return err
			}
			if i < 3 {
				select {
				case <-read: // the record was flushed: the client has it
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(5 * time.Second):
					return errors.New("record not flushed")
				}
				time.Sleep(120 * time.Millisecond) // past the deadline and ReadTimeout in all
			}
		}
		return nil
	}}
	srv, c := fakeServer(t, cfg, f, 200*time.Millisecond)
	start := time.Now()
	var steps []uint64
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := c.WatchJob(ctx, "j1", func(j *smilepb.TrainJob) error {
		steps = append(steps, j.Step)
		if !JobEnded(j) {
			select {
			case read <- struct{}{}:
			case <-time.After(5 * time.Second):
				return errors.New("the service's stream is gone")
			}
		}
		return nil
	})
	if err != nil || !slices.Equal(steps, []uint64{0, 1, 2, 3}) || streams.Load() != 1 {
		t.Fatalf("watch: %v, steps %v over %d streams; want 0..3 over one", err, steps, streams.Load())
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Fatalf("stream took %v: the test did not outlast the timeouts", el)
	}

	// The wire: NDJSON, one compact protojson record a line.
	f.watch = func(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) error {
		return fn(&smilepb.TrainJob{Id: id, State: smilepb.JobState_JOB_FAILED, Stage: "line\nbreak",
			Error: &smilepb.Error{Code: "bad_request", Message: "x"}})
	}
	resp, err := http.Get(srv.URL + "/v1/jobs/j2/events")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/x-ndjson" {
		t.Fatalf("HTTP %d %q", resp.StatusCode, ct)
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	var rec map[string]any
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &rec) != nil || rec["state"] != "JOB_FAILED" ||
		rec["stage"] != "line\nbreak" || rec["val_accuracy"] != 0.0 || strings.Contains(lines[0], ": ") {
		t.Fatalf("body %q", body)
	}
}

// TestJobEventsErrors: an error before the first record is an ordinary
// error answer, and WatchJob returns it at once.
func TestJobEventsErrors(t *testing.T) {
	f := &fakeTrainer{watch: func(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) error {
		return fmt.Errorf("%w: no job %q", actors.ErrNotFound, id)
	}}
	srv, c := fakeServer(t, DefaultHTTPConfig(), f, 0)
	if err := c.WatchJob(t.Context(), "nope", func(*smilepb.TrainJob) error { return nil }); !isCode(err, CodeNotFound) {
		t.Fatalf("watch unknown job: %v", err)
	}
	resp, err := http.Get(srv.URL + "/v1/jobs/nope/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestJobEventsClientGone: when the client goes away the service's watch
// sees its context end.
func TestJobEventsClientGone(t *testing.T) {
	gone := make(chan error, 1)
	f := &fakeTrainer{watch: func(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) error {
		if err := fn(&smilepb.TrainJob{Id: id, State: smilepb.JobState_JOB_QUEUED}); err != nil {
			gone <- err
			return err
		}
		<-ctx.Done()
		gone <- ctx.Err()
		return ctx.Err()
	}}
	_, c := fakeServer(t, DefaultHTTPConfig(), f, 0)
	ctx, cancel := context.WithCancel(t.Context())
	err := c.WatchJob(ctx, "j", func(*smilepb.TrainJob) error {
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("watch: %v, want context.Canceled", err)
	}
	select {
	case err := <-gone:
		if err == nil {
			t.Fatal("the watch ended without an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the service's watch still runs 5s after the client left")
	}
}

// TestStopStreams: a server shutting down ends its open event streams
// (http.Server.Shutdown would otherwise wait for them until its timeout).
func TestStopStreams(t *testing.T) {
	ended := make(chan error, 1)
	f := &fakeTrainer{watch: func(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) error {
		if err := fn(&smilepb.TrainJob{Id: id, State: smilepb.JobState_JOB_TRAINING}); err != nil {
			return err
		}
		<-ctx.Done()
		ended <- ctx.Err()
		return ctx.Err()
	}}
	h := NewHandler(nil, DefaultHTTPConfig(), quietLog())
	h.trainer = f
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/v1/jobs/j/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := bufio.NewReader(resp.Body).ReadBytes('\n'); err != nil {
		t.Fatal(err)
	}
	h.StopStreams()
	h.StopStreams() // idempotent
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the watch ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream still runs 5s after StopStreams")
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("the stream did not end cleanly: %v", err)
	}
}

// TestRequestDeadline: routes other than the stream are bounded by the
// request timeout, or the client's shorter timeout_ms.
func TestRequestDeadline(t *testing.T) {
	cfg := DefaultHTTPConfig()
	cfg.RequestTimeout = 50 * time.Millisecond
	cfg.EvalTimeout = 20 * time.Second
	wait := func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return errors.New("no deadline")
		}
	}
	var evalLeft time.Duration
	f := &fakeTrainer{
		job: func(ctx context.Context, id string) (*smilepb.TrainJob, error) { return nil, wait(ctx) },
		eval: func(ctx context.Context, req *smilepb.EvalRequest) (*smilepb.EvalReply, error) {
			dl, _ := ctx.Deadline()
			evalLeft = time.Until(dl)
			return &smilepb.EvalReply{Model: req.Model}, nil
		},
	}
	srv, c := fakeServer(t, cfg, f, 0)
	start := time.Now()
	if _, err := c.Job(t.Context(), "j"); !isCode(err, CodeTimeout) || time.Since(start) > 5*time.Second {
		t.Fatalf("job: %v after %v, want timeout after ~50ms", err, time.Since(start))
	}
	resp, err := http.Get(srv.URL + "/v1/jobs/j?timeout_ms=soon")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("timeout_ms=soon: HTTP %d, want 400", resp.StatusCode)
	}
	// Eval has its own, longer deadline.
	if _, err := c.Eval(t.Context(), &smilepb.EvalRequest{Model: "m", Dataset: "imdb"}); err != nil || evalLeft <= 10*time.Second {
		t.Fatalf("eval: %v, %v left, want the eval timeout", err, evalLeft)
	}
}

// TestWatchJobReconnects: a stream that breaks before the job ended is
// reopened (after a refused attempt, with backoff) and the watch goes on.
func TestWatchJobReconnects(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		line := func(j *smilepb.TrainJob) {
			b, _ := protoOut.Marshal(j)
			w.Write(append(compactJSON(b), '\n'))
		}
		switch conns.Add(1) {
		case 1:
			w.Header().Set("Content-Type", "application/x-ndjson")
			line(&smilepb.TrainJob{Id: "j", Step: 1, State: smilepb.JobState_JOB_TRAINING})
			// ... and the stream ends, the job not.
		case 2:
			writeError(w, Errorf(CodeOverloaded, "busy"))
		default:
			line(&smilepb.TrainJob{Id: "j", Step: 2, State: smilepb.JobState_JOB_TRAINING})
			line(&smilepb.TrainJob{Id: "j", Step: 3, State: smilepb.JobState_JOB_SUCCEEDED})
			line(&smilepb.TrainJob{Id: "j", Step: 4, State: smilepb.JobState_JOB_SUCCEEDED}) // never read
		}
	}))
	defer srv.Close()
	c, _ := NewClient(srv.URL)
	var steps []uint64
	err := c.WatchJob(t.Context(), "j", func(j *smilepb.TrainJob) error {
		steps = append(steps, j.Step)
		return nil
	})
	if err != nil || !slices.Equal(steps, []uint64{1, 2, 3}) || conns.Load() != 3 {
		t.Fatalf("watch: %v, steps %v over %d connections", err, steps, conns.Load())
	}

	// fn's error ends the watch, unchanged.
	conns.Store(2)
	stop := errors.New("stop")
	if err := c.WatchJob(t.Context(), "j", func(*smilepb.TrainJob) error { return stop }); err != stop {
		t.Fatalf("watch with a failing fn: %v", err)
	}
	// A context that ends while the stream keeps breaking ends the watch.
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := protoOut.Marshal(&smilepb.TrainJob{Id: "j", State: smilepb.JobState_JOB_TRAINING})
		w.Write(append(b, '\n'))
	}))
	defer broken.Close()
	bc, _ := NewClient(broken.URL)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := bc.WatchJob(ctx, "j", func(*smilepb.TrainJob) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("watch until the deadline: %v", err)
	}
	// Nothing listening on the first attempt: an error at once.
	srv.Close()
	if err := c.WatchJob(t.Context(), "j", func(*smilepb.TrainJob) error { return nil }); !isCode(err, CodeUnavailable) {
		t.Fatalf("watch, no server: %v", err)
	}
}

// TestDecodeTrain: the train body's refusals, each with its code and a
// message naming the field or line.
func TestDecodeTrain(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	good := "{\"text\":\"great\",\"label\":\"pos\"}\n\n{\"text\":\"awful\",\"label\":\"neg\"}\n"
	h := &Handler{cfg: DefaultHTTPConfig()}
	for _, tc := range []struct {
		name, body string
		labels     []string
		code, msg  string
		n          int
	}{
		{"dataset", `{"dataset":"imdb","config":{"epochs":2,"lr":0.001}}`, nil, "", "", 0},
		{"camelCase names", `{"dataset":"imdb","config":{"batchSize":8,"weightDecay":0.1}}`, nil, "", "", 0},
		{"upload", `{"examples_jsonl":"` + b64(good) + `"}`, []string{"neg", "pos"}, "", "", 2},
		{"model matches path", `{"model":"m","dataset":"imdb"}`, nil, "", "", 0},
		{"other model", `{"model":"other","dataset":"imdb"}`, nil, CodeBadRequest, `"other"`, 0},
		{"nothing", `{}`, nil, CodeBadRequest, "no examples", 0},
		{"both", `{"dataset":"imdb","examples_jsonl":"` + b64(good) + `"}`, nil, CodeBadRequest, "both", 0},
		{"empty", ``, nil, CodeBadRequest, "empty", 0},
		{"unknown field", `{"dataset":"imdb","colour":"red"}`, nil, CodeBadRequest, "colour", 0},
		{"negative epochs", `{"dataset":"imdb","config":{"epochs":-1}}`, nil, CodeBadRequest, "epochs", 0},
		{"not base64", `{"examples_jsonl":"%%%"}`, nil, CodeBadRequest, "examplesJsonl", 0},
		{"not UTF-8", "{\"dataset\":\"\xff\"}", nil, CodeInvalidUTF8, "UTF-8", 0},
		{"two values", `{"dataset":"imdb"}{}`, nil, CodeBadRequest, "", 0},
		{"unknown label", `{"examples_jsonl":"` + b64(good+"{\"text\":\"meh\",\"label\":\"mid\"}\n") + `"}`, []string{"neg", "pos"},
			CodeBadDataset, "examples_jsonl:4", 0},
		{"bad line", `{"examples_jsonl":"` + b64(good+"[1]\n") + `"}`, nil, CodeBadDataset, "examples_jsonl:4", 0},
		{"one class", `{"examples_jsonl":"` + b64("{\"text\":\"a\",\"label\":\"x\"}\n") + `"}`, nil, CodeBadDataset, "fewer than two labels", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v1/models/m/train", strings.NewReader(tc.body))
			r.SetPathValue("id", "m")
			req, err := h.decodeTrain(httptest.NewRecorder(), r)
			var ex []datasets.Example
			if err == nil && len(req.ExamplesJsonl) > 0 {
				ex, err = trainExamples(req.ExamplesJsonl, tc.labels)
			}
			if tc.code == "" {
				if err != nil || req.Model != "m" || len(ex) != tc.n {
					t.Fatalf("%v: %v, %d examples", req, err, len(ex))
				}
				return
			}
			if e := ToError(err); err == nil || e.Code != tc.code || !strings.Contains(e.Message, tc.msg) {
				t.Fatalf("err %v, want %s naming %q", err, tc.code, tc.msg)
			}
		})
	}
	// A body over the upload bound.
	small := DefaultHTTPConfig()
	small.MaxUploadBytes = 1024
	h = &Handler{cfg: small}
	r := httptest.NewRequest(http.MethodPost, "/v1/models/m/train", bytes.NewReader(bytes.Repeat([]byte(" "), 2048)))
	if _, err := h.decodeTrain(httptest.NewRecorder(), r); ToError(err).Code != CodePayloadTooLarge {
		t.Fatalf("large body: %v", err)
	}
}

// TestEvalRoute: protojson in and out (snake_case names, 64-bit integers
// as strings, every field), the model taken from the path.
func TestEvalRoute(t *testing.T) {
	var got *smilepb.EvalRequest
	f := &fakeTrainer{eval: func(ctx context.Context, req *smilepb.EvalRequest) (*smilepb.EvalReply, error) {
		got = req
		if req.Dataset == "none" {
			return nil, fmt.Errorf("%w: dataset none is not pulled", actors.ErrNotFound)
		}
		return &smilepb.EvalReply{Model: req.Model, Version: 3, N: 4, Accuracy: 0.75, Labels: []string{"a", "b"}, Confusion: []uint64{2, 0, 1, 1}}, nil
	}}
	srv, c := fakeServer(t, DefaultHTTPConfig(), f, 0)
	resp, err := http.Post(srv.URL+"/v1/models/m/eval", "application/json", strings.NewReader(`{"dataset":"imdb","split":"validation"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `{"model":"m","version":"3","n":"4","accuracy":0.75,"macro_f1":0,"labels":["a","b"],"confusion":["2","0","1","1"]}` + "\n"
	if resp.StatusCode != 200 || string(body) != want || got.Model != "m" || got.Split != "validation" {
		t.Fatalf("HTTP %d %s (request %v)", resp.StatusCode, body, got)
	}
	rep, err := c.Eval(t.Context(), &smilepb.EvalRequest{Model: "m", Dataset: "imdb"})
	if err != nil || rep.N != 4 || rep.Accuracy != 0.75 || len(rep.Confusion) != 4 {
		t.Fatalf("client eval: %v %v", rep, err)
	}
	if _, err := c.Eval(t.Context(), &smilepb.EvalRequest{Model: "m", Dataset: "none"}); !isCode(err, CodeNotFound) {
		t.Fatalf("eval of a missing dataset: %v", err)
	}
	for _, body := range []string{`{"model":"x","dataset":"imdb"}`, `{"dataset":"imdb","top":1}`, `[]`} {
		resp, err := http.Post(srv.URL+"/v1/models/m/eval", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%s: HTTP %d, want 400", body, resp.StatusCode)
		}
	}
}

func isCode(err error, code string) bool {
	e, ok := errors.AsType[*Error](err)
	return ok && e.Code == code
}
