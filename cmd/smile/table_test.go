package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/internal/testenv"
)

// TestTableUsageErrors: bad flags and arguments of the table commands and
// of create's --mode and --table are usage errors (exit 2), caught before
// any server is asked.
func TestTableUsageErrors(t *testing.T) {
	dir := t.TempDir()
	odd := filepath.Join(dir, "corpus.md")
	if err := os.WriteFile(odd, []byte("a text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	closed := testenv.FreeAddr(t)
	for _, args := range [][]string{
		{"table", "nope"},
		{"table", "build"},
		{"table", "build", "extra", "--data", "imdb"},
		{"table", "build", "--data", "imdb", "--cut", "-1"},
		{"table", "build", "--data", "imdb", "--cut", "5000000000"},
		{"table", "build", "--data", "imdb", "--cut", "two"},
		{"table", "build", "--data", "imdb", "--budget-mb", "-1"},
		{"table", "build", "--data", "imdb", "--budget-mb", "9000000000000"},
		{"table", "build", "--data", "imdb", "--budget-mb", "1.5"},
		{"table", "build", "--data", odd},
		{"table", "build", "--data", dir},
		{"table", "build", "--data", filepath.Join(dir, "missing.txt")},
		{"table", "build", "--data", "missing.jsonl"},
		{"table", "ls", "extra"},
		{"table", "show"},
		{"table", "show", "a", "b"},
		{"create", "x", "--task", "embed", "--mode", "half"},
		{"create", "x", "--task", "embed", "--mode", "plot"},
		{"create", "x", "--task", "embed", "--mode", "full", "--table", "plot-x"},
	} {
		_, err := run(t, "", append(args, "--server", closed)...)
		if _, ok := errors.AsType[*usageError](err); !ok {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
}

// TestTableNoServer: with nothing listening, the table commands say where
// they looked, like every client command.
func TestTableNoServer(t *testing.T) {
	addr := testenv.FreeAddr(t)
	for _, args := range [][]string{
		{"table", "build", "--data", "imdb"},
		{"table", "ls"},
		{"table", "show", "plot-x"},
		{"create", "m", "--task", "embed", "--table", "plot-x"},
	} {
		_, err := run(t, "", append(args, "--server", addr)...)
		if !errors.Is(err, errNoServer) || !strings.Contains(err.Error(), addr) {
			t.Errorf("%v: err = %v", args, err)
		}
	}
}

// TestReadCorpus: local corpus files become the JSONL the server takes,
// one {"text"} a line; every refusal names the file and line.
func TestReadCorpus(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	want := "{\"text\":\"a <fine> film\"}\n{\"text\":\"dull, tiresome\"}\n"
	for _, tc := range []struct {
		name, content string
	}{
		{"c.jsonl", "\ufeff{\"text\":\"a <fine> film\",\"label\":\"pos\"}\n\n{\"text\":\"dull, tiresome\",\"id\":7}\n"},
		{"c.csv", "Label,TEXT\npos,a <fine> film\nneg,\"dull, tiresome\"\n"},
		{"c.csv2.csv", "text\na <fine> film\n\"dull, tiresome\"\n"},
		{"c.txt", "a <fine> film\n   \ndull, tiresome"},
	} {
		got, err := readCorpus(write(tc.name, tc.content))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q %v, want %q", tc.name, got, err, want)
		}
	}
	for _, tc := range []struct {
		name, content string
		target        error
		names         string
	}{
		{"e1.jsonl", "{\"text\":\"a\"}\n[1]\n", datasets.ErrMalformed, "e1.jsonl:2"},
		{"e2.jsonl", "{\"text\":\"a\"}\n{\"text\":5}\n", datasets.ErrMalformed, "e2.jsonl:2"},
		{"e3.jsonl", "{\"label\":\"a\"}\n", datasets.ErrEmptyText, "e3.jsonl:1"},
		{"e4.jsonl", "{\"text\":\" \"}\n", datasets.ErrEmptyText, "e4.jsonl:1"},
		{"e5.txt", "fine\nbad \xff byte\n", datasets.ErrInvalidUTF8, "e5.txt:2"},
		{"e6.csv", "label,body\npos,a\n", datasets.ErrMalformed, "e6.csv:1"},
		{"e7.csv", "text\nfine\n\"\"\n", datasets.ErrEmptyText, "e7.csv:3"},
		{"e8.txt", "\n\n", datasets.ErrEmptyText, "no texts"},
		{"e9.csv", "", datasets.ErrEmptyText, "empty"},
	} {
		_, err := readCorpus(write(tc.name, tc.content))
		if !errors.Is(err, tc.target) || !strings.Contains(err.Error(), tc.names) {
			t.Errorf("%s: %v, want %v naming %q", tc.name, err, tc.target, tc.names)
		}
	}
}

// tableRun is a table job's records as the server sends them: queued,
// finding what is stored, computing (8000 of 8400 entries stored before),
// and the end.
func tableRun(final smilepb.JobState) []*smilepb.TrainJob {
	rec := func(st smilepb.JobState, stage string, step uint64, rate float64, eta int64) *smilepb.TrainJob {
		return &smilepb.TrainJob{Id: "job-t", Kind: "table", Table: "plot-abc", Dataset: "imdb", State: st, Stage: stage,
			Step: step, Steps: 8400, ExamplesPerS: rate, EtaMs: eta, ValAccuracy: -1, BestValAccuracy: -1}
	}
	C := smilepb.JobState_JOB_CACHING
	out := []*smilepb.TrainJob{
		rec(smilepb.JobState_JOB_QUEUED, "queued", 0, 0, 0),
		rec(C, "finding the entries already stored", 0, 0, 0),
	}
	stored := rec(C, "computing entries 8000/8400", 8000, 0, 0)
	stored.CachedExamples = 8000
	out = append(out, stored)
	for _, step := range []uint64{8128, 8256, 8384} {
		r := rec(C, fmt.Sprintf("computing entries %d/8400", step), step, 1280, 2_000)
		r.CachedExamples = 8000
		out = append(out, r)
	}
	end := rec(final, "table complete", 8400, 1280, 0)
	if final == smilepb.JobState_JOB_CANCELED {
		end.Step, end.Stage = 8384, "canceled"
	}
	end.CachedExamples = 8000
	return append(out, end)
}

// TestTableProgress: a table job's progress is a bar over its entries,
// redrawn in place on a terminal, a line per stage and per tenth
// elsewhere, and a last line with the final count.
func TestTableProgress(t *testing.T) {
	var plain bytes.Buffer
	p := &progress{w: &plain}
	for _, j := range tableRun(smilepb.JobState_JOB_SUCCEEDED) {
		p.update(j)
	}
	p.done()
	want := "queued\nfinding the entries already stored\n" +
		"entries [###############.] 8000/8400 (8000 stored before)\n" +
		"entries [################] 8400/8400 (8000 stored before)\n"
	if plain.String() != want {
		t.Errorf("plain progress:\n%s\nwant:\n%s", &plain, want)
	}

	var tty bytes.Buffer
	p = &progress{w: &tty, tty: true}
	for _, j := range tableRun(smilepb.JobState_JOB_CANCELED) {
		p.update(j)
	}
	p.done()
	out := tty.String()
	if !strings.Contains(out, "\rentries [###############.] 8256/8400 (8000 stored before) 1280 n-grams/s ETA 2s") ||
		!strings.Contains(out, "\rentries [###############.] 8384/8400 (8000 stored before)") || !strings.HasSuffix(out, "\n") ||
		strings.Count(out, "\n") != 1 {
		t.Errorf("terminal progress: %q", out)
	}
}

// TestJobTableWithTables: `smile jobs` names a table job's kind and table
// and counts its entries; `smile job` describes it.
func TestJobTableWithTables(t *testing.T) {
	run := tableRun(smilepb.JobState_JOB_SUCCEEDED)
	tj := run[4]
	tj.TableRequest = &smilepb.TableRequest{Backbone: "use-lite", Cut: 1, BudgetBytes: 1 << 20, Dataset: "imdb"}
	train := &smilepb.TrainJob{Id: "job-1", Model: "reviews", State: smilepb.JobState_JOB_SUCCEEDED, Epoch: 2, Epochs: 2,
		Version: 2, ValAccuracy: 0.7, BestValAccuracy: 0.7, Dataset: "imdb"}
	var b bytes.Buffer
	if err := writeJobTable(&b, []*smilepb.TrainJob{tj, train}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "KIND") ||
		!strings.Contains(lines[1], "table") || !strings.Contains(lines[1], "plot-abc") || !strings.Contains(lines[1], "8256/8400 entries") ||
		!strings.Contains(lines[1], "computing") || !strings.Contains(lines[2], "train") || !strings.Contains(lines[2], "reviews") ||
		!strings.Contains(lines[2], "epoch 2/2") {
		t.Errorf("jobs:\n%s", &b)
	}
	b.Reset()
	if err := writeJob(&b, tj); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"plot-abc", "8256/8400 stored (8000 already", "1280 n-grams/s", "cut 1", "budget 1.0 MiB", "every unigram"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("job: %q lacks %q", &b, want)
		}
	}
}

// fakeTables is a server speaking the table routes (and the job routes
// for job-t) from canned records, for the CLI's wiring.
type fakeTables struct {
	t       *testing.T
	mu      sync.Mutex
	build   *smilepb.TableRequest
	create  *api.CreateModelRequest
	cancels int
	records []*smilepb.TrainJob
	hold    chan struct{}
}

var fakeManifest = &smilepb.PlotTable{Id: "plot-abc", Backbone: "use-lite", BackboneFingerprint: "sha256:00", Cut: 1, Width: 512,
	Entries: 8400, Unigrams: 8000, Bigrams: 300, Trigrams: 100, EntryBytes: 9 << 20, Corpus: "imdb", BudgetBytes: 1 << 20,
	CorpusSequences: 800, CorpusPositions: 16000, Complete: true, CreatedUnixMs: 1, UpdatedUnixMs: 2}

func (f *fakeTables) start() string {
	out := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	writeProto := func(w http.ResponseWriter, status int, m proto.Message) {
		b, _ := out.Marshal(m)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(b)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tables", func(w http.ResponseWriter, r *http.Request) {
		var req smilepb.TableRequest
		b, _ := io.ReadAll(r.Body)
		if err := protojson.Unmarshal(b, &req); err != nil {
			f.t.Errorf("table body %s: %v", b, err)
		}
		f.mu.Lock()
		f.build = &req
		f.mu.Unlock()
		writeProto(w, http.StatusAccepted, f.records[0])
	})
	mux.HandleFunc("GET /v1/tables", func(w http.ResponseWriter, r *http.Request) {
		b, _ := out.Marshal(fakeManifest)
		fmt.Fprintf(w, `{"tables":[%s]}`, b)
	})
	mux.HandleFunc("GET /v1/tables/plot-abc", func(w http.ResponseWriter, r *http.Request) {
		writeProto(w, 200, &smilepb.PlotTableInfo{Table: fakeManifest, SharedEntries: 9000, SharedEntryBytes: 10 << 20, Open: true,
			MemoryBytes: 9 << 20, MemoryBudgetBytes: 512 << 20, Sequences: 10, Positions: 200, HitsFull: 50, HitsPartial: 70,
			HitsUnigram: 80, HitRate: 0.6, MemoryHits: 190, SourceReads: 10})
	})
	mux.HandleFunc("GET /v1/tables/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(404)
		fmt.Fprintf(w, `{"error":{"code":"not_found","message":"actors: no such PLOT table: %s"}}`, r.PathValue("id"))
	})
	mux.HandleFunc("GET /v1/jobs/job-t/events", func(w http.ResponseWriter, r *http.Request) {
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
	mux.HandleFunc("DELETE /v1/jobs/job-t", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.cancels++
		f.mu.Unlock()
		j := proto.CloneOf(f.records[len(f.records)-1])
		j.State = smilepb.JobState_JOB_CANCELED
		writeProto(w, 200, j)
	})
	mux.HandleFunc("POST /v1/models", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateModelRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			f.t.Errorf("create body: %v", err)
		}
		f.mu.Lock()
		f.create = &req
		f.mu.Unlock()
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(api.Model{ID: req.ID, Task: req.Task, Labels: req.Labels, Mode: req.Mode, Table: req.Table,
			Adapter: "bottleneck", Rank: 64, Layers: []int{2}, Version: 1})
	})
	srv := httptest.NewServer(mux)
	f.t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestTableCLI: `smile table build` sends the flags and a local corpus,
// shows progress on stderr and prints the table's id (or one JSON line);
// ls and show print what the server answers; create sends the mode.
func TestTableCLI(t *testing.T) {
	f := &fakeTables{t: t, records: tableRun(smilepb.JobState_JOB_SUCCEEDED)}
	addr := f.start()
	corpus := filepath.Join(t.TempDir(), "corpus.txt")
	if err := os.WriteFile(corpus, []byte("first text\nsecond text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	out, err := runCtx(t.Context(), &stderr, "table", "build", "--data", corpus, "--cut", "1", "--budget-mb", "3", "--base", "plot-base",
		"--backbone", "use-lite", "--tenant", "acme", "--server", addr)
	if err != nil || out != "plot-abc\n" {
		t.Fatalf("table build: %q %v\n%s", out, err, &stderr)
	}
	for _, want := range []string{"job job-t: building table plot-abc on " + corpus, "entries [################] 8400/8400",
		"table plot-abc: complete, 8400 entries (8000 unigrams, 300 bigrams, 100 trigrams), 9.0 MiB, replaces layers 1..1 of use-lite; 400 computed, 8000 already stored"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q lacks %q", &stderr, want)
		}
	}
	req := f.build
	if req.Dataset != "" || string(req.ExamplesJsonl) != "{\"text\":\"first text\"}\n{\"text\":\"second text\"}\n" || req.Cut != 1 ||
		req.BudgetBytes != 3<<20 || req.Base != "plot-base" || req.Backbone != "use-lite" || req.Tenant != "acme" {
		t.Errorf("request %v", req)
	}
	// A dataset name goes as the name; --json is the final record.
	out, err = runCtx(t.Context(), io.Discard, "table", "build", "--data", "imdb", "--json", "--server", addr)
	var rec map[string]any
	if err != nil || strings.Count(out, "\n") != 1 || json.Unmarshal([]byte(out), &rec) != nil || rec["table"] != "plot-abc" ||
		rec["state"] != "JOB_SUCCEEDED" || f.build.Dataset != "imdb" || f.build.BudgetBytes != 0 || f.build.ExamplesJsonl != nil {
		t.Errorf("table build --json: %q %v (request %v)", out, err, f.build)
	}
	// --detach: the job's id.
	out, err = runCtx(t.Context(), io.Discard, "table", "build", "--data", "imdb", "--detach", "--server", addr)
	if err != nil || out != "job-t\n" {
		t.Errorf("table build --detach: %q %v", out, err)
	}
	// A failed job fails the command with its error.
	f.records = tableRun(smilepb.JobState_JOB_FAILED)
	f.records[len(f.records)-1].Error = &smilepb.Error{Code: "unavailable", Message: "storage failed"}
	if _, err := runCtx(t.Context(), io.Discard, "table", "build", "--data", "imdb", "--server", addr); err == nil ||
		!strings.Contains(err.Error(), "job-t failed: unavailable: storage failed") {
		t.Errorf("failed job: %v", err)
	}
	// A bad corpus file is refused here, naming its line; nothing is sent.
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte("{\"text\":\"a\"}\n{\"txt\":\"b\"}\n"), 0o644)
	f.build = nil
	if _, err := runCtx(t.Context(), io.Discard, "table", "build", "--data", bad, "--server", addr); err == nil ||
		!strings.Contains(err.Error(), "bad.jsonl:2") || f.build != nil {
		t.Errorf("bad corpus: %v (sent: %v)", err, f.build != nil)
	}

	// ls and show.
	out, err = runCtx(t.Context(), io.Discard, "table", "ls", "--server", addr)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); err != nil || len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") ||
		!strings.Contains(lines[1], "plot-abc") || !strings.Contains(lines[1], "8000/300/100") || !strings.Contains(lines[1], "complete") {
		t.Errorf("table ls: %q %v", out, err)
	}
	out, err = runCtx(t.Context(), io.Discard, "table", "ls", "--json", "--server", addr)
	var list struct {
		Tables []map[string]any `json:"tables"`
	}
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Tables) != 1 || list.Tables[0]["id"] != "plot-abc" || list.Tables[0]["entries"] != "8400" {
		t.Errorf("table ls --json: %q %v", out, err)
	}
	out, err = runCtx(t.Context(), io.Discard, "table", "show", "plot-abc", "--server", addr)
	for _, want := range []string{"complete", "lookups replace layers 1..1", "8400: 8000 unigrams, 300 bigrams, 100 trigrams",
		"9.0 MiB of entries (512 wide", "9000 entries, 10.0 MiB stored", "9.0 MiB of 512.0 MiB", "full 50 (25.0%), partial 70 (35.0%), unigram 80 (40.0%), none 0",
		"60.0% of positions", "190 from memory, 10 from storage", "imdb: 800 sequences, 16000 positions", "1.0 MiB of entries"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("table show: %q lacks %q (%v)", out, want, err)
		}
	}
	out, err = runCtx(t.Context(), io.Discard, "table", "show", "plot-abc", "--json", "--server", addr)
	var info map[string]any
	if err != nil || json.Unmarshal([]byte(out), &info) != nil || info["hit_rate"] != 0.6 || info["table"].(map[string]any)["id"] != "plot-abc" {
		t.Errorf("table show --json: %q %v", out, err)
	}
	if _, err := runCtx(t.Context(), io.Discard, "table", "show", "plot-nope", "--server", addr); !isCode(err, api.CodeNotFound) {
		t.Errorf("table show unknown: %v", err)
	}

	// create: --table alone means plot mode; the model shows it.
	out, err = runCtx(t.Context(), io.Discard, "create", "p", "--task", "classify", "--labels", "a,b", "--table", "plot-abc", "--server", addr)
	if err != nil || f.create.Mode != "plot" || f.create.Table != "plot-abc" || !strings.Contains(out, "plot: table plot-abc") {
		t.Errorf("create --table: %q %v (request %+v)", out, err, f.create)
	}
	out, err = runCtx(t.Context(), io.Discard, "create", "q", "--task", "embed", "--mode", "full", "--json", "--server", addr)
	var m api.Model
	if err != nil || f.create.Mode != "full" || f.create.Table != "" || json.Unmarshal([]byte(out), &m) != nil || m.Mode != "full" {
		t.Errorf("create --mode full: %q %v (request %+v)", out, err, f.create)
	}
}

// TestTableCLIInterrupt: Ctrl-C while a table builds cancels its job.
func TestTableCLIInterrupt(t *testing.T) {
	f := &fakeTables{t: t, records: tableRun(smilepb.JobState_JOB_SUCCEEDED)[:4], hold: make(chan struct{})}
	defer close(f.hold)
	addr := f.start()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	w := &cancelOn{watch: "8000/8400", cancel: cancel}
	_, err := runCtx(ctx, w, "table", "build", "--data", "imdb", "--server", addr)
	if err == nil || !strings.Contains(err.Error(), "table build: interrupted: job job-t canceled") || f.cancels != 1 {
		t.Fatalf("interrupted table build: %v, %d cancels", err, f.cancels)
	}
	if !slices.Contains(strings.Split(w.buf.String(), "\n"), "entries [###############.] 8000/8400 (8000 stored before)") {
		t.Errorf("stderr %q", &w.buf)
	}
}
