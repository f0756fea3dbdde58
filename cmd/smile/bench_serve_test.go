package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/internal/testenv"
)

// TestBenchServeSmall runs `bench serve`'s smallest configuration on the
// real use-lite backbone and checks that every line kind comes out with
// sane values, so the benchmark never rots.
func TestBenchServeSmall(t *testing.T) {
	testenv.UseLite(t)
	g := &globals{dataDir: testenv.DataDir(), backend: "auto"}
	p := serveProfile{
		backbone: "use-lite", quick: true, ns: []int{1, 20}, requests: 96, warmup: 16, rounds: 2,
		naiveNs: []int{20}, naiveMax: 5 * time.Second, latency: 400 * time.Millisecond, // a swap takes seconds under -race
		cold: 2, warm: 5, seeds: 4, device: actors.DefaultDeviceConfig(),
	}
	p.device.MaxBatchRows = 8
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logw := io.Discard
	if testing.Verbose() {
		logw = testWriter{t}
	}
	if err := runServe(ctx, g, p, &out, logw); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		t.Log(l)
		kind, _ := m["bench"].(string)
		kinds[kind]++
		if m["backbone"] != "use-lite" || m["device"] == "" || m["date"] == "" || m["machine"] == "" {
			t.Errorf("missing common fields: %s", l)
		}
		positive := map[string][]string{
			"serve":         {"seq_per_s", "ratio_to_one", "seq_per_cpu_s", "mean_batch_rows", "requests", "concurrency"},
			"serve-naive":   {"seq_per_s", "smile_over_naive", "models_fit", "swaps", "requests"},
			"serve-memory":  {"bytes_per_vplm", "rss_bytes", "params_blob_bytes", "host_tier_bytes"},
			"serve-latency": {"p50_ms", "p99_ms", "rate_per_s", "requests"},
			"serve-cold":    {"cold_ms", "warm_p50_ms", "cold_p90_ms"},
		}[kind]
		if positive == nil {
			t.Errorf("unknown line kind: %s", l)
		}
		for _, f := range positive {
			if v, ok := m[f].(float64); !ok || !(v > 0) {
				t.Errorf("%s: %s = %v, want > 0", kind, f, m[f])
			}
		}
		switch kind {
		case "serve":
			if m["errors"].(float64) != 0 {
				t.Errorf("errors while serving: %s", l)
			}
		case "serve-latency":
			if m["p99_ms"].(float64) < m["p50_ms"].(float64) {
				t.Errorf("p99 below p50: %s", l)
			}
		case "serve-memory":
			if m["resident"].(float64) != 20 || m["host_tier_entries"].(float64) < 20 {
				t.Errorf("resident params: %s", l)
			}
		}
	}
	want := map[string]int{"serve": 2, "serve-naive": 1, "serve-memory": 1, "serve-latency": 2, "serve-cold": 1}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%d %q lines, want %d", kinds[k], k, n)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
