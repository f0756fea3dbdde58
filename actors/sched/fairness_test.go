package sched

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

// A tenant keeping a deep backlog must not delay a light tenant by more
// than the batch already running when the light request arrives: with
// start-time fair queuing the light request starts at V, ahead of every
// waiting flood request, so it leaves in the next batch popped. The bound
// asserted: wait <= 1 batch (in batches popped and in simulated time), the
// same for a backlog of 100, 1000 and 4000.
func TestFairnessFloodCannotStarveLight(t *testing.T) {
	const (
		maxRows    = 32
		heavyCost  = 64 // tokens per heavy request
		lightCost  = 16
		batches    = 3000
		lightEvery = 3 // light sends one request every this many batch times
	)
	maxWaits := map[int]time.Duration{}
	for _, backlog := range []int{100, 1000, 4000} {
		t.Run(fmt.Sprintf("backlog=%d", backlog), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MaxQueuedPerTenant = backlog + 1
			cfg.MaxQueued = backlog + 64
			d := newDevice(t, cfg, maxRows, 0)
			batchTime := d.overhead + maxRows*heavyCost*d.perToken // a full batch of heavy work

			type arrival struct {
				at      time.Time
				batches int // batches popped before it arrived
			}
			pending := map[*Request]arrival{}
			var waits []time.Duration
			maxWaitBatches, sent := 0, 0
			var longestBatch time.Duration
			// Light's arrivals fall mid-batch, the worst place for it.
			nextLight := d.clock.now().Add(batchTime / 2)
			d.topUp(t, "heavy", backlog, heavyCost)
			for d.batches < batches {
				start, end, ok := d.runBatch(func(r *Request, at time.Time) {
					if a, ok := pending[r]; ok {
						delete(pending, r)
						waits = append(waits, at.Sub(a.at))
						maxWaitBatches = max(maxWaitBatches, d.batches-a.batches)
					}
				})
				if !ok {
					t.Fatal("queue ran dry: heavy must stay backlogged")
				}
				longestBatch = max(longestBatch, end.Sub(start))
				for !nextLight.After(end) {
					d.clock.t = nextLight // arrive at the exact time, mid-batch
					r := &Request{Tenant: "light", Cost: lightCost, Rows: 1}
					if err := d.q.Push(r); err != nil {
						t.Fatal(err)
					}
					pending[r] = arrival{at: nextLight, batches: d.batches}
					sent++
					nextLight = nextLight.Add(lightEvery * batchTime)
				}
				d.clock.t = end
				d.topUp(t, "heavy", backlog, heavyCost) // heavy never lets up
			}
			slices.Sort(waits)
			var sum time.Duration
			for _, w := range waits {
				sum += w
			}
			served := len(waits)
			maxWait := waits[served-1]
			maxWaits[backlog] = maxWait
			lightStats, _ := d.q.Tenant("light")
			heavyStats, _ := d.q.Tenant("heavy")
			t.Logf("heavy backlog %d: light sent %d, served %d; wait mean %v, p50 %v, p99 %v, max %v = %.2f batch times, max %d batch(es) popped; "+
				"longest batch %v; served cost heavy %d light %d (a FIFO would make light wait %d batches = %v)",
				backlog, sent, served, sum/time.Duration(served), waits[served/2], waits[served*99/100], maxWait,
				float64(maxWait)/float64(batchTime), maxWaitBatches, longestBatch,
				heavyStats.ServedCost, lightStats.ServedCost, backlog/maxRows, time.Duration(backlog/maxRows)*batchTime)

			if served < sent-1 { // the last one may still be waiting
				t.Errorf("light sent %d requests, %d served", sent, served)
			}
			if maxWaitBatches > 1 {
				t.Errorf("a light request waited %d batches; bound is 1 (it leaves in the first batch popped after it arrives)", maxWaitBatches)
			}
			if maxWait > longestBatch {
				t.Errorf("a light request waited %v, longer than the longest batch %v", maxWait, longestBatch)
			}
		})
	}
	if len(maxWaits) == 3 && (maxWaits[4000] != maxWaits[100] || maxWaits[1000] != maxWaits[100]) {
		t.Errorf("light's worst wait depends on heavy's backlog: %v", maxWaits)
	}
}

// Backlogged tenants share the device in proportion to their weights, in
// served cost (tokens), not in request counts: within 2% (relative) of
// w_i / sum(w) over a long run.
func TestFairnessWeightsProportional(t *testing.T) {
	type tenantSpec struct {
		name   string
		weight float64
		cost   int
	}
	cases := []struct {
		name    string
		tenants []tenantSpec
		maxCost int
		batches int
	}{
		{"weights 1:2:4, equal costs", []tenantSpec{{"w1", 1, 32}, {"w2", 2, 32}, {"w4", 4, 32}}, 0, 3000},
		{"equal weights, short vs long texts", []tenantSpec{{"short", 1, 12}, {"long", 1, 384}}, 4096, 3000},
		{"weights 1:3, mixed costs", []tenantSpec{{"small", 1, 200}, {"big", 3, 7}}, 2048, 3000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, DefaultConfig(), 32, tc.maxCost)
			total := 0.0
			for _, ts := range tc.tenants {
				if err := d.q.SetTenant(ts.name, TenantConfig{Weight: ts.weight}); err != nil {
					t.Fatal(err)
				}
				total += ts.weight
			}
			for d.batches < tc.batches {
				for _, ts := range tc.tenants {
					d.topUp(t, ts.name, 64, ts.cost)
				}
				d.runBatch(nil)
			}
			var servedCost int64
			for _, ts := range tc.tenants {
				s, _ := d.q.Tenant(ts.name)
				servedCost += s.ServedCost
			}
			for _, ts := range tc.tenants {
				s, _ := d.q.Tenant(ts.name)
				share := float64(s.ServedCost) / float64(servedCost)
				want := ts.weight / total
				relErr := math.Abs(share-want) / want
				t.Logf("%-6s weight %g cost/request %3d: served %6d requests, cost %8d, share %.4f (want %.4f, off by %.3f%%)",
					ts.name, ts.weight, ts.cost, s.Served, s.ServedCost, share, want, 100*relErr)
				if relErr > 0.02 {
					t.Errorf("%s: served cost share %.4f, want %.4f within 2%%", ts.name, share, want)
				}
			}
		})
	}
}

// A tenant that sat idle while another used the whole device must not bank
// credit: when it returns with a backlog it gets its weighted share (half,
// here) from then on, not the device to itself until it "catches up", and
// the tenant that kept working is served in every batch.
func TestFairnessIdleTenantBanksNoCredit(t *testing.T) {
	const cost = 32
	d := newDevice(t, DefaultConfig(), 32, 0)
	// Both busy, then b idle for a long time while a has the device alone.
	for d.batches < 100 {
		d.topUp(t, "a", 64, cost)
		d.topUp(t, "b", 64, cost)
		d.runBatch(nil)
	}
	for d.q.Len() > 0 && d.batches < 10_000 { // b drains, a keeps going
		d.topUp(t, "a", 64, cost)
		if s, _ := d.q.Tenant("b"); s.Queued == 0 {
			break
		}
		d.runBatch(nil)
	}
	for range 2000 {
		d.topUp(t, "a", 64, cost)
		d.runBatch(nil)
	}
	// b returns with a deep backlog.
	d.topUp(t, "b", 1000, cost)
	before := map[string]int64{}
	for _, name := range []string{"a", "b"} {
		s, _ := d.q.Tenant(name)
		before[name] = s.ServedCost
	}
	const window = 100
	minA := math.MaxInt
	for range window {
		d.topUp(t, "a", 64, cost)
		d.topUp(t, "b", 1000, cost) // b stays backlogged: a share needs demand
		inBatch := 0
		b := d.q.Pop(d.maxRows, d.maxCost)
		for _, r := range b {
			if r.Tenant == "a" {
				inBatch++
			}
		}
		minA = min(minA, inBatch)
		for _, r := range b {
			d.q.Done(r)
		}
	}
	sa, _ := d.q.Tenant("a")
	sb, _ := d.q.Tenant("b")
	ga, gb := sa.ServedCost-before["a"], sb.ServedCost-before["b"]
	shareB := float64(gb) / float64(ga+gb)
	t.Logf("after 2000 batches idle, b's share over the next %d batches: %.4f (a %d tokens, b %d tokens); fewest of a's requests in one batch: %d of 32",
		window, shareB, ga, gb, minA)
	if shareB < 0.48 || shareB > 0.52 {
		t.Errorf("returning tenant's share %.4f, want 0.5 ± 0.02 (no banked credit)", shareB)
	}
	if minA < 15 {
		t.Errorf("a got only %d of 32 rows in some batch: b monopolised the device", minA)
	}
}

// When the queue drains, the busy period ends and every tenant starts the
// next one level: a tenant that used the device heavily before is not
// pushed behind one that did not.
func TestFairnessBusyPeriodRestartsLevel(t *testing.T) {
	q, err := New(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := q.Push(&Request{Tenant: "a", Cost: 100, Rows: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range q.Pop(0, 0) {
		q.Done(r)
	}
	var got []string
	for i, name := range []string{"a", "b", "a", "b"} {
		if err := q.Push(&Request{Tenant: name, Cost: 100, Rows: 1, Value: fmt.Sprint(name, i)}); err != nil {
			t.Fatal(err)
		}
	}
	for q.Len() > 0 {
		for _, r := range q.Pop(1, 0) {
			got = append(got, r.Value.(string))
			q.Done(r)
		}
	}
	if want := []string{"a0", "b1", "a2", "b3"}; !slices.Equal(got, want) {
		t.Errorf("order after a drained queue %v, want %v", got, want)
	}
}
