package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smile-vplm/smile/internal/testenv"
)

func TestUnavailableFor(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms ...int) []time.Time {
		var s []time.Time
		for _, m := range ms {
			s = append(s, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return s
	}
	for _, tc := range []struct {
		name string
		oks  []time.Time
		want time.Duration
	}{
		{"no answer: the whole window", nil, time.Second},
		{"answers before and after only", at(-5, 1200), time.Second},
		{"from the signal to the first answer", at(-1, 300, 310, 320), 680 * time.Millisecond},
		{"a gap in the middle", at(10, 20, 700, 710, 990), 680 * time.Millisecond},
		{"unordered", at(700, 10, 990, 20, 710), 680 * time.Millisecond},
		{"steady", at(0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000), 100 * time.Millisecond},
	} {
		if got := unavailableFor(t0, t0.Add(time.Second), tc.oks); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestBenchClusterSmall runs `bench cluster`'s quick profile, smaller
// (fewer vPLMs and clients, 1 s runs in 2 rounds, a 2 s failover window), on real
// `smile serve` children, checks every line kind, and that no child
// outlives the bench and its data directories are gone.
func TestBenchClusterSmall(t *testing.T) {
	if !*clusterFull {
		// make test runs `smile bench cluster --quick` itself (bench-smoke).
		t.Skip("the cluster bench's own test runs with -cluster.full; make bench-smoke runs the quick bench")
	}
	testenv.UseLite(t)
	bin := buildSmile(t)
	src, err := filepath.Abs(testenv.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	p := newCBProfile(true)
	p.vplms, p.clients, p.seconds, p.rounds = 6, 4, time.Second, 2
	p.window, p.lead, p.drivers = 4*time.Second, 300*time.Millisecond, 2 // past gossip's verdict on a stopped node
	tmp := t.TempDir()
	logw := io.Discard
	if testing.Verbose() {
		logw = testWriter{t}
	}
	env := cbEnv{exe: bin, src: src, logw: logw, tmp: tmp}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	err = runClusterBench(ctx, env, p, &cbReport{w: &out, json: true})
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left behind in the temp dir: %v", left)
	}
	if procs := processesWith(t, tmp); len(procs) > 0 {
		t.Errorf("children still running: %v", procs)
	}
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		t.Log(l)
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		kind, _ := m["bench"].(string)
		kinds[kind]++
		num := func(k string) float64 { v, _ := m[k].(float64); return v }
		switch kind {
		case "cluster", "cluster_owner":
			if num("requests") <= 0 || num("seq_per_s") <= 0 || num("p50_ms") <= 0 || num("p99_ms") < num("p50_ms") || num("errors") != 0 {
				t.Errorf("cluster line: %s", l)
			}
		case "cluster_overhead":
			if num("ratio_seq_3_vs_1") <= 0 || num("ratio_seq_3_owner_vs_1") <= 0 {
				t.Errorf("overhead line: %s", l)
			}
		case "failover":
			if u := num("unavailable_ms"); u <= 0 || u >= 4000 || m["owner"] == "" || m["owner"] == m["new_owner"] || num("owner_exit_ms") < 0 {
				t.Errorf("failover line: %s", l)
			}
		default:
			t.Errorf("unknown line: %s", l)
		}
	}
	for k, n := range map[string]int{"cluster": 2, "cluster_owner": 1, "cluster_overhead": 1, "failover": 3} {
		if kinds[k] != n {
			t.Errorf("%d %q lines, want %d", kinds[k], k, n)
		}
	}
}

// processesWith lists the command lines of running processes that
// mention s (none where /proc is missing).
func processesWith(t *testing.T, s string) []string {
	t.Helper()
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return out
}
