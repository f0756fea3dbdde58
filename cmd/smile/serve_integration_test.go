package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smile-vplm/smile/api"
	"github.com/smile-vplm/smile/internal/testenv"
)

// Limits the server under test runs with, small enough to hit from a test.
const (
	itMaxTextBytes = 1000
	itMaxTexts     = 8
	itMaxBodyBytes = 16 << 10
)

// TestServeEndToEnd runs the real binary: `smile serve` as a subprocess on
// a fresh data directory (holding only the use-lite backbone, so no
// network is needed), the HTTP API over real sockets (api.Client, and raw
// requests for the error cases), the CLI client commands against it, a
// restart on the same data directory (the catalog is durable) and a clean
// SIGTERM shutdown.
func TestServeEndToEnd(t *testing.T) {
	testenv.UseLite(t)
	bin := buildSmile(t)
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	// The server reads the backbone from backbones/ and blobs/ and writes
	// its catalog under db/, so links to the shared test store suffice.
	for _, d := range []string{"backbones", "blobs"} {
		if err := os.Symlink(filepath.Join(testenv.DataDir(), d), filepath.Join(data, d)); err != nil {
			t.Fatal(err)
		}
	}
	srv := startServer(t, bin, data)
	ctx := t.Context()
	c, err := api.NewClient(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + srv.addr

	// Create a classifier and an embedder.
	cls, err := c.Create(ctx, api.CreateModelRequest{ID: "sent", Task: "classify", Labels: []string{"neg", "pos"}, Adapter: "bottleneck"})
	if err != nil {
		t.Fatalf("create classify: %v", err)
	}
	if cls.ID != "sent" || cls.Task != "classify" || cls.Adapter != "bottleneck" || !slices.Equal(cls.Labels, []string{"neg", "pos"}) ||
		cls.Tenant != "default" || cls.Backbone != "use-lite" || cls.Version != 1 || cls.ParamsBytes == 0 || cls.Rank != 64 {
		t.Errorf("created %+v", cls)
	}
	emb, err := c.Create(ctx, api.CreateModelRequest{ID: "emb", Task: "embed", Adapter: "lora", Rank: 8})
	if err != nil {
		t.Fatalf("create embed: %v", err)
	}
	if emb.Task != "embed" || emb.Adapter != "lora" || emb.Rank != 8 || len(emb.Layers) == 0 {
		t.Errorf("created %+v", emb)
	}
	if l, err := c.List(ctx, "", "", 0); err != nil || !slices.Equal(modelIDs(l.Models), []string{"emb", "sent"}) {
		t.Fatalf("list = %+v, %v; want emb and sent", l, err)
	}
	for _, want := range []*api.Model{cls, emb} {
		got, err := c.Get(ctx, want.ID)
		if err != nil || got.ID != want.ID || got.ParamsDigest != want.ParamsDigest || got.Version != want.Version {
			t.Errorf("get %s = %+v, %v; want %+v", want.ID, got, err, want)
		}
	}

	// Classify: one prediction per text over the model's labels.
	texts := []string{"the movie was great", "a wonderful film", "stock prices fell"}
	cr, err := c.Classify(ctx, "sent", texts)
	if err != nil {
		t.Fatalf("classify: %v", err)
	}
	checkPredictions(t, cr, len(texts), []string{"neg", "pos"})

	// Embed: unit vectors; a fresh vPLM (identity-initialised adapter)
	// answers like the base backbone computed locally by `smile embed`.
	er, err := c.Embed(ctx, "emb", texts[:2])
	if err != nil {
		t.Fatalf("embed: %v", err)
	}
	if er.Dim != 512 || len(er.Embeddings) != 2 || er.Model != "emb" {
		t.Fatalf("embed: dim %d, %d embeddings, model %q", er.Dim, len(er.Embeddings), er.Model)
	}
	for i, e := range er.Embeddings {
		if n := norm(e); len(e) != 512 || math.Abs(n-1) > 1e-3 {
			t.Errorf("embedding %d: %d dims, norm %g", i, len(e), n)
		}
	}
	out, _ := runSmile(t, bin, data, "", 0, "embed", "--json", texts[0])
	var local struct {
		Text      string    `json:"text"`
		Embedding []float32 `json:"embedding"`
	}
	if err := json.Unmarshal([]byte(out), &local); err != nil {
		t.Fatalf("local embed output %q: %v", out, err)
	}
	if sim := cos(local.Embedding, er.Embeddings[0]); sim < 0.9999 {
		t.Errorf("fresh vPLM vs local backbone: cosine %.6f, want > 0.9999", sim)
	}

	// Errors: the stable code, its HTTP status, and the text's index.
	long := strings.Repeat("x", itMaxTextBytes+1)
	tooMany := make([]string, itMaxTexts+1)
	for i := range tooMany {
		tooMany[i] = "hello"
	}
	idx := func(i int) *int { return &i }
	for _, tc := range []struct {
		name, method, path, ctype, body string
		status                          int
		code                            string
		index                           *int
	}{
		{"classify unknown", "POST", "/v1/models/nope/classify", "", `{"texts":["x"]}`, 404, api.CodeNotFound, nil},
		{"get unknown", "GET", "/v1/models/nope", "", "", 404, api.CodeNotFound, nil},
		{"delete unknown", "DELETE", "/v1/models/nope", "", "", 404, api.CodeNotFound, nil},
		{"unknown route", "GET", "/v1/nope", "", "", 404, api.CodeNotFound, nil},
		{"duplicate", "POST", "/v1/models", "", `{"id":"sent","task":"classify","labels":["a","b"]}`, 409, api.CodeAlreadyExists, nil},
		{"bad json", "POST", "/v1/models", "", `{"id":`, 400, api.CodeBadRequest, nil},
		{"empty body", "POST", "/v1/models", "", ``, 400, api.CodeBadRequest, nil},
		{"two values", "POST", "/v1/models", "", `{"id":"a","task":"embed"} {}`, 400, api.CodeBadRequest, nil},
		{"unknown field", "POST", "/v1/models", "", `{"id":"x","task":"embed","colour":"red"}`, 400, api.CodeBadRequest, nil},
		{"missing task", "POST", "/v1/models", "", `{"id":"x"}`, 400, api.CodeBadRequest, nil},
		{"bad adapter", "POST", "/v1/models", "", `{"id":"x","task":"embed","adapter":"prefix"}`, 400, api.CodeBadRequest, nil},
		{"invalid id", "POST", "/v1/models", "", `{"id":"Bad ID!","task":"embed"}`, 400, api.CodeBadRequest, nil},
		{"one label", "POST", "/v1/models", "", `{"id":"x","task":"classify","labels":["a"]}`, 400, api.CodeBadRequest, nil},
		{"text content type", "POST", "/v1/models", "text/plain", `{"id":"x","task":"embed"}`, 400, api.CodeBadRequest, nil},
		{"bad limit", "GET", "/v1/models?limit=0", "", "", 400, api.CodeBadRequest, nil},
		{"no texts", "POST", "/v1/models/sent/classify", "", `{"texts":[]}`, 400, api.CodeBadRequest, nil},
		{"wrong task", "POST", "/v1/models/sent/embed", "", `{"texts":["x"]}`, 400, api.CodeWrongTask, nil},
		{"empty text", "POST", "/v1/models/sent/classify", "", `{"texts":["fine",""]}`, 400, api.CodeEmptyText, idx(1)},
		{"text too long", "POST", "/v1/models/emb/embed", "", jsonTexts("a", "b", long), 413, api.CodeTextTooLong, idx(2)},
		{"too many texts", "POST", "/v1/models/sent/classify", "", jsonTexts(tooMany...), 413, api.CodeTooManyTexts, nil},
		{"body too large", "POST", "/v1/models/sent/classify", "", jsonTexts(strings.Repeat("y", itMaxBodyBytes)), 413, api.CodePayloadTooLarge, nil},
	} {
		t.Run("error/"+tc.name, func(t *testing.T) {
			status, eb, raw := rawCall(t, tc.method, base+tc.path, tc.ctype, []byte(tc.body))
			if status != tc.status || eb.Error.Code != tc.code || eb.Error.Message == "" {
				t.Fatalf("HTTP %d %s, want %d %s", status, raw, tc.status, tc.code)
			}
			switch {
			case tc.index == nil && eb.Error.Index != nil:
				t.Errorf("index %d in %s, want none", *eb.Error.Index, raw)
			case tc.index != nil && (eb.Error.Index == nil || *eb.Error.Index != *tc.index):
				t.Errorf("%s: want index %d", raw, *tc.index)
			}
		})
	}
	// The client returns the same codes as *api.Error.
	if _, err := c.Classify(ctx, "nope", []string{"x"}); !isCode(err, api.CodeNotFound) {
		t.Errorf("client classify unknown: %v", err)
	}
	if _, err := c.Classify(ctx, "sent", []string{"ok", ""}); !isCode(err, api.CodeEmptyText) || err.(*api.Error).Index != 1 {
		t.Errorf("client empty text: %#v", err)
	}
	// A body that is not UTF-8 is refused whole (JSON must be UTF-8; Go's
	// decoder would silently turn each bad byte into U+FFFD).
	status, _, raw := rawCall(t, "POST", base+"/v1/models/sent/classify", "", []byte("{\"texts\":[\"ok\",\"bad \xff text\"]}"))
	var eb api.ErrorBody
	if status != http.StatusBadRequest || json.Unmarshal(raw, &eb) != nil || eb.Error.Code != api.CodeInvalidUTF8 {
		t.Errorf("invalid UTF-8 body: HTTP %d %s, want 400 invalid_utf8", status, raw)
	}
	// A lone surrogate escape is valid JSON: it decodes to U+FFFD, a real
	// character, and the text is answered.
	status, _, raw = rawCall(t, "POST", base+"/v1/models/sent/classify", "", []byte("{\"texts\":[\"ok\",\"lone \\ud800 surrogate\"]}"))
	var utf api.ClassifyResponse
	if status != http.StatusOK || json.Unmarshal(raw, &utf) != nil || len(utf.Predictions) != 2 {
		t.Errorf("lone surrogate escape: HTTP %d %s, want 200 with 2 predictions", status, raw)
	}

	// Delete: the vPLM is gone for every call.
	if err := c.Delete(ctx, "sent"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := c.Classify(ctx, "sent", []string{"x"}); !isCode(err, api.CodeNotFound) {
		t.Errorf("classify after delete: %v", err)
	}
	if err := c.Delete(ctx, "sent"); !isCode(err, api.CodeNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if l, err := c.List(ctx, "", "", 0); err != nil || !slices.Equal(modelIDs(l.Models), []string{"emb"}) {
		t.Errorf("list after delete = %+v, %v; want emb", l, err)
	}

	t.Run("CLI", func(t *testing.T) { testCLI(t, bin, data, srv.addr) })

	// Restart on the same data directory: the catalog and params survive.
	srv.stop(t)
	srv = startServer(t, bin, data)
	c, _ = api.NewClient(srv.addr)
	if l, err := c.List(ctx, "", "", 0); err != nil || !slices.Equal(modelIDs(l.Models), []string{"cliplot", "emb"}) {
		t.Fatalf("list after restart = %+v, %v; want cliplot and emb", l, err)
	}
	// A plot-mode vPLM opens its table again on its first request.
	if cr, err := c.Classify(ctx, "cliplot", texts[:2]); err != nil {
		t.Errorf("plot vPLM after restart: %v", err)
	} else {
		checkPredictions(t, cr, 2, []string{"neg", "pos"})
	}
	er2, err := c.Embed(ctx, "emb", texts[:1])
	if err != nil {
		t.Fatalf("embed after restart: %v", err)
	}
	if sim := cos(er2.Embeddings[0], er.Embeddings[0]); sim < 0.9999 {
		t.Errorf("embedding after restart: cosine %.6f to the one before", sim)
	}
	srv.stop(t)
}

// testCLI drives the client commands of the built binary against the
// server at addr.
func testCLI(t *testing.T, bin, data, addr string) {
	srv := "--server=" + addr
	out, _ := runSmile(t, bin, data, "", 0, "create", "cli1", "--task", "classify", "--labels", "a,b,c", "--rank", "16", "--json", srv)
	var m api.Model
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.ID != "cli1" || m.Rank != 16 || !slices.Equal(m.Labels, []string{"a", "b", "c"}) {
		t.Fatalf("create --json: %q %v", out, err)
	}
	// The readable forms name what matters.
	out, _ = runSmile(t, bin, data, "", 0, "show", "cli1", srv)
	for _, want := range []string{"cli1", "classify", "a, b, c", "bottleneck", "version"} {
		if !strings.Contains(out, want) {
			t.Errorf("show: %q lacks %q", out, want)
		}
	}
	out, _ = runSmile(t, bin, data, "", 0, "ls", srv)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") {
		t.Errorf("ls: %q, want a header and two rows", out)
	}

	// ls pages through everything; --limit stops early.
	var l api.ModelList
	out, _ = runSmile(t, bin, data, "", 0, "ls", "--json", srv)
	if err := json.Unmarshal([]byte(out), &l); err != nil || !slices.Equal(modelIDs(l.Models), []string{"cli1", "emb"}) || l.Next != "" {
		t.Errorf("ls --json: %q %v", out, err)
	}
	out, _ = runSmile(t, bin, data, "", 0, "ls", "--json", "--limit", "1", srv)
	l = api.ModelList{}
	if err := json.Unmarshal([]byte(out), &l); err != nil || !slices.Equal(modelIDs(l.Models), []string{"cli1"}) || l.Next != "cli1" {
		t.Errorf("ls --json --limit 1: %q %v", out, err)
	}

	out, _ = runSmile(t, bin, data, "", 0, "show", "cli1", "--json", srv)
	m = api.Model{}
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.ID != "cli1" || m.Task != "classify" {
		t.Errorf("show --json: %q %v", out, err)
	}

	var cr api.ClassifyResponse
	out, _ = runSmile(t, bin, data, "good\nbad\n", 0, "classify", "cli1", "-", "--json", srv)
	if err := json.Unmarshal([]byte(out), &cr); err != nil {
		t.Fatalf("classify --json: %q %v", out, err)
	}
	checkPredictions(t, &cr, 2, []string{"a", "b", "c"})
	out, _ = runSmile(t, bin, data, "", 0, "classify", "cli1", "nice", srv)
	if !strings.HasPrefix(out, "[0]") || !strings.Contains(out, `"nice"`) {
		t.Errorf("classify: %q", out)
	}

	var er api.EmbedResponse
	out, _ = runSmile(t, bin, data, "", 0, "embed", "--model", "emb", "--json", "hello", srv)
	if err := json.Unmarshal([]byte(out), &er); err != nil || er.Dim != 512 || len(er.Embeddings) != 1 {
		t.Errorf("embed --model --json: %q %v", out, err)
	}

	var tr api.TenantRequest
	out, _ = runSmile(t, bin, data, "", 0, "tenant", "acme", "--weight", "2", "--max-inflight", "4", "--json", srv)
	if err := json.Unmarshal([]byte(out), &tr); err != nil || tr.Weight != 2 || tr.MaxInflight != 4 {
		t.Errorf("tenant --json: %q %v", out, err)
	}

	// PLOT tables: one built from a local corpus file (its progress on
	// stderr, its id on stdout), listed and shown; a plot-mode vPLM on it
	// answers (and keeps answering after the restart below).
	corpus := filepath.Join(t.TempDir(), "corpus.txt")
	if err := os.WriteFile(corpus, []byte("the film was a delight\nthe film was a bore\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr := runSmile(t, bin, data, "", 0, "table", "build", "--data", corpus, "--budget-mb", "1", srv)
	table := strings.TrimSpace(out)
	if !strings.HasPrefix(table, "plot-") || !strings.Contains(stderr, "table "+table+": complete") {
		t.Fatalf("table build: stdout %q, stderr %q", out, stderr)
	}
	out, _ = runSmile(t, bin, data, "", 0, "table", "ls", srv)
	if !strings.Contains(out, table) || !strings.Contains(out, "complete") {
		t.Errorf("table ls: %q", out)
	}
	out, _ = runSmile(t, bin, data, "", 0, "table", "show", table, "--json", srv)
	var info struct {
		Table struct {
			ID       string `json:"id"`
			Complete bool   `json:"complete"`
		} `json:"table"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Table.ID != table || !info.Table.Complete {
		t.Errorf("table show --json: %q %v", out, err)
	}
	out, _ = runSmile(t, bin, data, "", 0, "create", "cliplot", "--task", "classify", "--labels", "neg,pos", "--table", table, "--json", srv)
	m = api.Model{}
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.Mode != "plot" || m.Table != table {
		t.Errorf("create --table: %q %v", out, err)
	}
	out, _ = runSmile(t, bin, data, "", 0, "classify", "cliplot", "the film was a delight", "--json", srv)
	cr = api.ClassifyResponse{}
	if err := json.Unmarshal([]byte(out), &cr); err != nil {
		t.Fatalf("classify with a plot vPLM: %q %v", out, err)
	}
	checkPredictions(t, &cr, 1, []string{"neg", "pos"})
	out, _ = runSmile(t, bin, data, "", 0, "jobs", srv)
	if !strings.Contains(out, "table") || !strings.Contains(out, table) {
		t.Errorf("jobs: %q", out)
	}
	runSmile(t, bin, data, "", 2, "create", "x", "--task", "embed", "--mode", "plot", srv)
	_, stderr = runSmile(t, bin, data, "", 1, "create", "x", "--task", "embed", "--table", "plot-"+strings.Repeat("0", 32), srv)
	if !strings.HasPrefix(stderr, "smile: not_found: ") {
		t.Errorf("create on an unknown table: stderr %q", stderr)
	}

	out, _ = runSmile(t, bin, data, "", 0, "rm", "cli1", "--json", srv)
	var del struct{ Deleted []string }
	if err := json.Unmarshal([]byte(out), &del); err != nil || !slices.Equal(del.Deleted, []string{"cli1"}) {
		t.Errorf("rm --json: %q %v", out, err)
	}

	// Server errors exit 1 with "smile: <code>: <message>"; usage errors 2.
	_, stderr = runSmile(t, bin, data, "", 1, "show", "cli1", srv)
	if !strings.HasPrefix(stderr, "smile: not_found: ") {
		t.Errorf("show deleted: stderr %q", stderr)
	}
	_, stderr = runSmile(t, bin, data, "", 1, "classify", "emb", "x", srv)
	if !strings.HasPrefix(stderr, "smile: wrong_task: ") {
		t.Errorf("classify an embedder: stderr %q", stderr)
	}
	_, stderr = runSmile(t, bin, data, "", 1, "embed", "--model", "emb", "fine", "", srv)
	if !strings.HasPrefix(stderr, "smile: empty_text: text 1: ") || strings.Count(stderr, "text 1") != 1 {
		t.Errorf("embed an empty text: stderr %q", stderr)
	}
	runSmile(t, bin, data, "", 2, "create", "x", "--task", "summarize", srv)
	// Nothing listening: the message names the address and `smile serve`.
	closed := testenv.FreeAddr(t)
	_, stderr = runSmile(t, bin, data, "", 1, "ls", "--server", closed)
	if !strings.Contains(stderr, closed) || !strings.Contains(stderr, "smile serve") {
		t.Errorf("no server: stderr %q", stderr)
	}
}

// checkPredictions checks n predictions whose probabilities over labels sum
// to 1 and whose label is the most probable one.
func checkPredictions(t *testing.T, cr *api.ClassifyResponse, n int, labels []string) {
	t.Helper()
	if len(cr.Predictions) != n {
		t.Fatalf("%d predictions, want %d", len(cr.Predictions), n)
	}
	for i, p := range cr.Predictions {
		var sum float64
		for l, v := range p.Probs {
			if !slices.Contains(labels, l) {
				t.Errorf("prediction %d: probability for %q, not one of %v", i, l, labels)
			}
			if v > p.Probs[p.Label] {
				t.Errorf("prediction %d: %q (%g) is likelier than the answer %q (%g)", i, l, v, p.Label, p.Probs[p.Label])
			}
			sum += float64(v)
		}
		if !slices.Contains(labels, p.Label) || labels[p.Index] != p.Label || len(p.Probs) != len(labels) || math.Abs(sum-1) > 1e-4 {
			t.Errorf("prediction %d = %+v (probabilities sum to %g), want one of %v", i, p, sum, labels)
		}
	}
}

func modelIDs(ms []api.Model) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func isCode(err error, code string) bool {
	e, ok := errors.AsType[*api.Error](err)
	return ok && e.Code == code
}

func jsonTexts(texts ...string) string {
	b, err := json.Marshal(api.TextsRequest{Texts: texts})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// rawCall makes one HTTP request and decodes an error body if there is one.
func rawCall(t *testing.T, method, url, ctype string, body []byte) (int, api.ErrorBody, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype == "" && len(body) > 0 {
		ctype = "application/json"
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
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
	var eb api.ErrorBody
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(raw, &eb); err != nil {
			t.Errorf("%s %s: HTTP %d with a body that is not an error document: %q", method, url, resp.StatusCode, raw)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: error content type %q", method, url, ct)
		}
	}
	return resp.StatusCode, eb, raw
}

// buildSmile builds the binary once per test run.
func buildSmile(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			built.err = fmt.Errorf("the go tool is needed to build the binary under test: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "smile-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		bin := filepath.Join(dir, "smile")
		if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		built.bin = bin
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// built is the binary under test, built once for every test of the
// package that runs it (TestMain removes it).
var built struct {
	once     sync.Once
	bin, dir string
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// runSmile runs the binary and checks its exit status; it returns stdout
// and stderr.
func runSmile(t *testing.T, bin, data, stdin string, wantExit int, args ...string) (string, string) {
	t.Helper()
	return runSmileIn(t, bin, data, stdin, nil, wantExit, args...)
}

// runSmileEnv is runSmile with more environment (SMILE_SERVER=...).
func runSmileEnv(t *testing.T, bin, data string, env []string, wantExit int, args ...string) (string, string) {
	t.Helper()
	return runSmileIn(t, bin, data, "", env, wantExit, args...)
}

func runSmileIn(t *testing.T, bin, data, stdin string, env []string, wantExit int, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(append(os.Environ(), "SMILE_DATA_DIR="+data, "SMILE_SERVER="), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("smile %s: %v", strings.Join(args, " "), err)
	}
	if code != wantExit {
		t.Fatalf("smile %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantExit, &stdout, &stderr)
	}
	return stdout.String(), stderr.String()
}

// server is a `smile serve` subprocess.
type server struct {
	cmd    *exec.Cmd
	addr   string
	stderr *watchWriter
	done   chan struct{} // closed when the process has exited
	err    error         // its Wait error, once done
}

// startServer starts `smile serve` on data and waits until it answers.
func startServer(t *testing.T, bin, data string) *server {
	t.Helper()
	return startServerWith(t, bin, data, testenv.FreeAddr(t))
}

// startServerWith starts `smile serve` on data at addr, with more flags.
func startServerWith(t *testing.T, bin, data, addr string, extra ...string) *server {
	t.Helper()
	s := &server{addr: addr, stderr: newWatchWriter("smile: serving http://"), done: make(chan struct{})}
	args := append([]string{"serve", "--data-dir", data, "--addr", s.addr,
		"--max-text-bytes", fmt.Sprint(itMaxTextBytes), "--max-texts", fmt.Sprint(itMaxTexts),
		"--max-body-bytes", fmt.Sprint(itMaxBodyBytes), "--log-level", "warn"}, extra...)
	if !slices.Contains(extra, "--raft-addr") {
		args = append(args, "--raft-addr", "127.0.0.1:0")
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = append(os.Environ(), "SMILE_DATA_DIR="+data)
	s.cmd.Stdout = s.stderr
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("server %s output:\n%s", s.addr, s.stderr)
		}
	})
	select {
	case <-s.stderr.seen:
	case <-s.done:
		t.Fatalf("smile serve exited (%v) before serving:\n%s", s.err, s.stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("smile serve not ready after 60s:\n%s", s.stderr)
	}
	// The line is printed once the listener is up; health must answer.
	c, _ := api.NewClient(s.addr)
	if err := c.Health(t.Context()); err != nil {
		t.Fatalf("health: %v", err)
	}
	return s
}

// stop sends SIGTERM and expects a clean exit within a few seconds.
func (s *server) stop(t *testing.T) {
	t.Helper()
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("smile serve still running 10s after SIGTERM:\n%s", s.stderr)
	}
	if s.err != nil {
		t.Fatalf("smile serve exited with %v after SIGTERM (%v):\n%s", s.err, time.Since(start), s.stderr)
	}
	if !strings.Contains(s.stderr.String(), "smile: shutting down") {
		t.Errorf("no shutdown line:\n%s", s.stderr)
	}
}

// watchWriter keeps a process's output and closes seen once a line
// containing the watched string has been written.
type watchWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	watch string
	seen  chan struct{}
	found bool
}

func newWatchWriter(watch string) *watchWriter {
	return &watchWriter{watch: watch, seen: make(chan struct{})}
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.found && strings.Contains(w.buf.String(), w.watch) {
		w.found = true
		close(w.seen)
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
