package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/testenv"
)

// The Client against a cluster: real HTTP servers stand for the nodes, a
// closed listener for a node that is down.

// node is a fake cluster node: answer decides each request's answer, n
// counting the requests it got (from 1).
type node struct {
	*httptest.Server
	hits atomic.Int32
}

func newNode(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int)) *node {
	t.Helper()
	nd := &node{}
	nd.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, int(nd.hits.Add(1)))
	}))
	t.Cleanup(nd.Close)
	return nd
}

// hangUp reads the request's body and closes the connection without an
// answer: the request reached the server, the client sees a broken
// exchange.
func hangUp(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // a reset, not a clean close
	}
	conn.Close()
}

func newTestClient(t *testing.T, bases ...string) *Client {
	t.Helper()
	c, err := NewClient(bases...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var okModel = Model{ID: "m", Tenant: "default", Backbone: "use-lite", Task: "classify", Labels: []string{"neg", "pos"},
	Adapter: "bottleneck", Rank: 64, Layers: []int{1}, Mode: ModeFull, Version: 1, Precision: "fp16"}

func TestNewClientEndpoints(t *testing.T) {
	c := newTestClient(t, "a:1, http://b:2/", "https://c:3,a:1", "")
	want := []string{"http://a:1", "http://b:2", "https://c:3"}
	if strings.Join(c.Endpoints, " ") != strings.Join(want, " ") || c.Base != want[0] {
		t.Fatalf("endpoints %v, base %q; want %v", c.Endpoints, c.Base, want)
	}
	for _, bad := range [][]string{nil, {""}, {" , "}, {"a:1,ftp://b:2"}, {"://x"}} {
		if _, err := NewClient(bad...); !isCode(err, CodeBadRequest) {
			t.Errorf("NewClient(%q): %v, want bad_request", bad, err)
		}
	}
}

// TestClientFailover: a node that is down is passed over, and the client
// then keeps to the node that answered.
func TestClientFailover(t *testing.T) {
	good := newNode(t, func(w http.ResponseWriter, r *http.Request, n int) { writeJSON(w, http.StatusOK, okModel) })
	c := newTestClient(t, testenv.FreeAddr(t), good.URL)
	for range 3 {
		m, err := c.Get(t.Context(), "m")
		if err != nil || m.ID != "m" {
			t.Fatalf("get: %+v, %v", m, err)
		}
	}
	if good.hits.Load() != 3 {
		t.Fatalf("%d hits on the node that is up, want 3", good.hits.Load())
	}

	// Sticky: after a node answered unavailable once, the calls that follow
	// stay on the one that answered.
	flaky := newNode(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			writeError(w, Errorf(CodeUnavailable, "leaving the cluster"))
			return
		}
		writeJSON(w, http.StatusOK, okModel)
	})
	good.hits.Store(0)
	c = newTestClient(t, flaky.URL, good.URL)
	for range 5 {
		if _, err := c.Get(t.Context(), "m"); err != nil {
			t.Fatal(err)
		}
	}
	if flaky.hits.Load() != 1 || good.hits.Load() != 5 {
		t.Fatalf("hits %d on the flaky node, %d on the good one; want 1 and 5", flaky.hits.Load(), good.hits.Load())
	}
}

// TestClientRetriesUnavailable: unavailable and overloaded answers, and
// answers without a code from a proxy in front, are resent until one
// succeeds.
func TestClientRetriesUnavailable(t *testing.T) {
	const fails = 4
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter)
	}{
		{"unavailable", func(w http.ResponseWriter) { writeError(w, Errorf(CodeUnavailable, "no leader")) }},
		{"overloaded", func(w http.ResponseWriter) { writeError(w, Errorf(CodeOverloaded, "queue full")) }},
		{"proxy 502", func(w http.ResponseWriter) { http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway) }},
		{"reset", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nd := newNode(t, func(w http.ResponseWriter, r *http.Request, n int) {
				switch {
				case n > fails:
					writeJSON(w, http.StatusOK, ClassifyResponse{Model: "m", Predictions: []Prediction{{Label: "pos"}}})
				case tc.answer == nil:
					hangUp(w, r)
				default:
					tc.answer(w)
				}
			})
			c := newTestClient(t, nd.URL)
			r, err := c.Classify(t.Context(), "m", []string{"fine"})
			if err != nil || len(r.Predictions) != 1 || r.Predictions[0].Label != "pos" {
				t.Fatalf("classify: %+v, %v", r, err)
			}
			if nd.hits.Load() != fails+1 {
				t.Fatalf("%d hits, want %d", nd.hits.Load(), fails+1)
			}
		})
	}
}

// TestClientDefiniteErrorNotRetried: a refusal comes back at once, as the
// server's *Error, and no other node is asked.
func TestClientDefiniteErrorNotRetried(t *testing.T) {
	for _, code := range []string{CodeBadRequest, CodeNotFound, CodeQuotaExceeded, CodeWrongTask, CodeEmptyText,
		CodeRateLimited, CodeTimeout, CodeInternal, CodeAlreadyExists, CodeJobConflict} {
		t.Run(code, func(t *testing.T) {
			answer := func(w http.ResponseWriter, r *http.Request, n int) { writeError(w, TextErrorf(1, code, "no")) }
			a, b := newNode(t, answer), newNode(t, answer)
			c := newTestClient(t, a.URL, b.URL)
			_, err := c.Embed(t.Context(), "m", []string{"a", "b"})
			if e, ok := err.(*Error); !ok || e.Code != code || e.Index != 1 {
				t.Fatalf("embed: %#v, want the server's %s error itself", err, code)
			}
			if a.hits.Load()+b.hits.Load() != 1 {
				t.Fatalf("%d and %d hits, want one in all", a.hits.Load(), b.hits.Load())
			}
		})
	}
}

// TestClientDeadline: a cluster that keeps failing gets attempts until the
// call's deadline, and the error comes then, with the last answer's code.
func TestClientDeadline(t *testing.T) {
	const d, slack = 300 * time.Millisecond, 250 * time.Millisecond
	busy := newNode(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeError(w, Errorf(CodeOverloaded, "queue full"))
	})
	c := newTestClient(t, testenv.FreeAddr(t), busy.URL)
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	_, err := c.Get(ctx, "m")
	took := time.Since(start)
	if took < d || took > d+slack {
		t.Errorf("the error came after %v, want %v (+%v)", took, d, slack)
	}
	if !isCode(err, CodeOverloaded) && !isCode(err, CodeUnavailable) || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "deadline") {
		t.Errorf("error %v: want the last answer's code and the deadline", err)
	}
	if n := busy.hits.Load(); n < 3 {
		t.Errorf("%d attempts on the busy node, want several", n)
	}

	// The last answer decides the code: here always overloaded.
	c = newTestClient(t, busy.URL)
	ctx, cancel = context.WithTimeout(t.Context(), d)
	defer cancel()
	if _, err := c.Get(ctx, "m"); !isCode(err, CodeOverloaded) || !strings.Contains(err.Error(), "queue full") {
		t.Errorf("error %v: want the node's overloaded answer", err)
	}

	// Nothing listening anywhere: unavailable, the refusal in the chain.
	c = newTestClient(t, testenv.FreeAddr(t), testenv.FreeAddr(t))
	start = time.Now()
	ctx, cancel = context.WithTimeout(t.Context(), d)
	defer cancel()
	err = c.Health(ctx)
	if took := time.Since(start); took < d || took > d+slack || !isCode(err, CodeUnavailable) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("no node up: %v after %v", err, took)
	}

	// Without a deadline, the Client's own bounds the call.
	c = newTestClient(t, busy.URL)
	c.Timeout = d
	start = time.Now()
	if err := c.Health(context.Background()); time.Since(start) > d+slack || !isCode(err, CodeOverloaded) {
		t.Errorf("default deadline: %v after %v", err, time.Since(start))
	}

	// UnreachableRounds gives up early when no node is listening, not
	// when one answers.
	c = newTestClient(t, testenv.FreeAddr(t), testenv.FreeAddr(t))
	c.UnreachableRounds = 2
	start = time.Now()
	if err := c.Health(t.Context()); time.Since(start) > d || !isCode(err, CodeUnavailable) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("unreachable rounds: %v after %v", err, time.Since(start))
	}
	c = newTestClient(t, testenv.FreeAddr(t), busy.URL)
	c.UnreachableRounds, c.Timeout = 1, d
	start = time.Now()
	if err := c.Health(t.Context()); time.Since(start) < d || !isCode(err, CodeOverloaded) {
		t.Errorf("unreachable rounds with a node up: %v after %v", err, time.Since(start))
	}

	// A caller that cancels ends the retries at once.
	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	c = newTestClient(t, busy.URL)
	start = time.Now()
	if err := c.Health(ctx); time.Since(start) > slack || !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v after %v", err, time.Since(start))
	}
}

// catalog is a fake node's catalog of one model, for the create tests.
type catalog struct {
	mu    sync.Mutex
	model *Model
	posts atomic.Int32
	gets  atomic.Int32
}

// serve answers create and get. failFirst answers the first create:
// applying it or not, then failing it.
func (cat *catalog) serve(failFirst func(w http.ResponseWriter, r *http.Request, apply func())) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/models":
			var req CreateModelRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				writeError(w, Errorf(CodeBadRequest, "%v", err))
				return
			}
			m := okModel
			m.ID, m.Task, m.Labels = req.ID, req.Task, req.Labels
			apply := func() {
				cat.mu.Lock()
				defer cat.mu.Unlock()
				if cat.model == nil {
					cat.model = &m
				}
			}
			if cat.posts.Add(1) == 1 && failFirst != nil {
				failFirst(w, r, apply)
				return
			}
			cat.mu.Lock()
			exists := cat.model != nil
			cat.mu.Unlock()
			if exists {
				writeError(w, Errorf(CodeAlreadyExists, "vPLM %q exists", req.ID))
				return
			}
			apply()
			writeJSON(w, http.StatusCreated, m)
		case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/models/"):
			cat.gets.Add(1)
			cat.mu.Lock()
			m := cat.model
			cat.mu.Unlock()
			if m == nil {
				writeError(w, Errorf(CodeNotFound, "no vPLM"))
				return
			}
			writeJSON(w, http.StatusOK, m)
		default:
			writeError(w, Errorf(CodeNotFound, "no route"))
		}
	}
}

// TestClientCreateResent: a create whose first attempt may have been
// applied is resent; the resend's already_exists is checked against the
// stored vPLM: the same spec is success, another is the refusal.
func TestClientCreateResent(t *testing.T) {
	req := CreateModelRequest{ID: "m", Task: "classify", Labels: []string{"neg", "pos"}}
	appliedThen503 := func(w http.ResponseWriter, r *http.Request, apply func()) {
		apply()
		writeError(w, Errorf(CodeUnavailable, "forwarding to the owner timed out"))
	}
	appliedThenReset := func(w http.ResponseWriter, r *http.Request, apply func()) {
		apply()
		hangUp(w, r)
	}
	for _, tc := range []struct {
		name      string
		existing  *Model
		failFirst func(w http.ResponseWriter, r *http.Request, apply func())
		req       CreateModelRequest
		code      string // "": success
		posts     int32
		gets      int32
	}{
		{"503 after applying", nil, appliedThen503, req, "", 2, 1},
		{"reset after applying", nil, appliedThenReset, req, "", 2, 1},
		{"defaults named", nil, appliedThen503, CreateModelRequest{ID: "m", Task: "classify", Labels: []string{"neg", "pos"},
			Tenant: "default", Backbone: "use-lite", Adapter: "bottleneck", Rank: 64, Layers: []int{1}, Mode: ModeFull, Precision: "fp16"}, "", 2, 1},
		{"other labels stored", &Model{ID: "m", Tenant: "default", Task: "classify", Labels: []string{"a", "b"}, Mode: ModeFull},
			func(w http.ResponseWriter, r *http.Request, apply func()) {
				writeError(w, Errorf(CodeUnavailable, "no leader"))
			},
			req, CodeAlreadyExists, 2, 1},
		{"other tenant stored", &Model{ID: "m", Tenant: "acme", Task: "classify", Labels: []string{"neg", "pos"}, Mode: ModeFull},
			appliedThenReset, req, CodeAlreadyExists, 2, 1},
		{"other backbone asked", nil, appliedThen503, CreateModelRequest{ID: "m", Task: "classify", Labels: []string{"neg", "pos"},
			Backbone: "bert-base"}, CodeAlreadyExists, 2, 1},
		{"exists at once", &okModel, nil, req, CodeAlreadyExists, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cat := &catalog{model: tc.existing}
			srv := httptest.NewServer(cat.serve(tc.failFirst))
			defer srv.Close()
			m, err := newTestClient(t, srv.URL).Create(t.Context(), tc.req)
			switch {
			case tc.code == "" && (err != nil || m.ID != "m" || m.Task != "classify"):
				t.Errorf("create: %+v, %v; want the model", m, err)
			case tc.code != "" && (!isCode(err, tc.code) || m != nil):
				t.Errorf("create: %+v, %v; want %s", m, err, tc.code)
			}
			if cat.posts.Load() != tc.posts || cat.gets.Load() != tc.gets {
				t.Errorf("%d creates and %d gets sent, want %d and %d", cat.posts.Load(), cat.gets.Load(), tc.posts, tc.gets)
			}
		})
	}
}

// TestClientDeleteResent: a delete resent after an attempt that may have
// applied it, answered not_found, has done its work.
func TestClientDeleteResent(t *testing.T) {
	nd := newNode(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			writeError(w, Errorf(CodeUnavailable, "applied, but the answer was lost"))
			return
		}
		writeError(w, Errorf(CodeNotFound, "no vPLM"))
	})
	c := newTestClient(t, nd.URL)
	if err := c.Delete(t.Context(), "m"); err != nil || nd.hits.Load() != 2 {
		t.Fatalf("delete: %v after %d hits", err, nd.hits.Load())
	}
	// Without an earlier attempt, not_found is the answer.
	if err := c.Delete(t.Context(), "m"); !isCode(err, CodeNotFound) {
		t.Fatalf("delete of nothing: %v", err)
	}
}

// TestClientTrainNotResent: a train starts a job, so it is resent only
// when it surely reached no node.
func TestClientTrainNotResent(t *testing.T) {
	job := &smilepb.TrainJob{Id: "j1", Model: "m", State: smilepb.JobState_JOB_QUEUED}
	okJob := func(w http.ResponseWriter) {
		b, _ := protoOut.Marshal(job)
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	}
	req := &smilepb.TrainRequest{Model: "m", Dataset: "imdb"}
	for _, tc := range []struct {
		name  string
		first func(w http.ResponseWriter, r *http.Request)
	}{
		{"503", func(w http.ResponseWriter, r *http.Request) { writeError(w, Errorf(CodeUnavailable, "maybe started")) }},
		{"overloaded", func(w http.ResponseWriter, r *http.Request) { writeError(w, Errorf(CodeOverloaded, "busy")) }},
		{"reset", hangUp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer := func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 1 {
					tc.first(w, r)
					return
				}
				okJob(w)
			}
			a, b := newNode(t, answer), newNode(t, answer)
			_, err := newTestClient(t, a.URL, b.URL).Train(t.Context(), req)
			if !isCode(err, CodeUnavailable) && !isCode(err, CodeOverloaded) || a.hits.Load() != 1 || b.hits.Load() != 0 {
				t.Fatalf("train: %v after %d and %d hits; want the first failure, one hit", err, a.hits.Load(), b.hits.Load())
			}
			// Building a table starts a job too.
			a.hits.Store(0)
			_, err = newTestClient(t, a.URL, b.URL).BuildTable(t.Context(), &smilepb.TableRequest{Dataset: "imdb"})
			if err == nil || a.hits.Load() != 1 || b.hits.Load() != 0 {
				t.Fatalf("build table: %v after %d and %d hits", err, a.hits.Load(), b.hits.Load())
			}
		})
	}
	// A node that is down got nothing: the next one gets the train.
	up := newNode(t, func(w http.ResponseWriter, r *http.Request, n int) { okJob(w) })
	j, err := newTestClient(t, testenv.FreeAddr(t), up.URL).Train(t.Context(), req)
	if err != nil || j.GetId() != "j1" || up.hits.Load() != 1 {
		t.Fatalf("train past a node that is down: %v, %v after %d hits", j, err, up.hits.Load())
	}
}

// TestClientWatchJobEndpoints: a watch opens on a node that is up, and a
// broken stream reopens on the next node.
func TestClientWatchJobEndpoints(t *testing.T) {
	line := func(w http.ResponseWriter, step uint64, state smilepb.JobState) {
		b, _ := protoOut.Marshal(&smilepb.TrainJob{Id: "j", Step: step, State: state})
		w.Write(append(compactJSON(b), '\n'))
	}
	breaks := newNode(t, func(w http.ResponseWriter, r *http.Request, n int) {
		line(w, 1, smilepb.JobState_JOB_TRAINING) // and the stream ends, the job not
	})
	ends := newNode(t, func(w http.ResponseWriter, r *http.Request, n int) {
		line(w, 2, smilepb.JobState_JOB_TRAINING)
		line(w, 3, smilepb.JobState_JOB_SUCCEEDED)
	})
	var steps []uint64
	watch := func(c *Client) error {
		steps = nil
		return c.WatchJob(t.Context(), "j", func(j *smilepb.TrainJob) error {
			steps = append(steps, j.Step)
			return nil
		})
	}
	if err := watch(newTestClient(t, testenv.FreeAddr(t), breaks.URL, ends.URL)); err != nil || len(steps) != 3 || steps[2] != 3 {
		t.Fatalf("watch: %v, steps %v", err, steps)
	}
	// Every node down: the error at once, after one try each.
	start := time.Now()
	if err := watch(newTestClient(t, testenv.FreeAddr(t), testenv.FreeAddr(t))); !isCode(err, CodeUnavailable) || time.Since(start) > time.Second {
		t.Fatalf("watch, no node up: %v after %v", err, time.Since(start))
	}
	// An unknown job is a refusal: no other node is asked.
	unknown := func(w http.ResponseWriter, r *http.Request, n int) { writeError(w, Errorf(CodeJobNotFound, "no job")) }
	a, b := newNode(t, unknown), newNode(t, unknown)
	if err := watch(newTestClient(t, a.URL, b.URL)); !isCode(err, CodeJobNotFound) || a.hits.Load()+b.hits.Load() != 1 {
		t.Fatalf("watch of an unknown job: %v after %d and %d hits", err, a.hits.Load(), b.hits.Load())
	}
}

// TestClientConcurrent: many calls at once on a client whose first node
// is down and second flaky all succeed (run with -race).
func TestClientConcurrent(t *testing.T) {
	nd := newNode(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n%3 == 0 {
			writeError(w, Errorf(CodeOverloaded, "busy"))
			return
		}
		writeJSON(w, http.StatusOK, okModel)
	})
	c := newTestClient(t, testenv.FreeAddr(t), nd.URL)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			if _, err := c.Get(t.Context(), "m"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
