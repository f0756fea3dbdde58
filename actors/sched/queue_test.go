package sched

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustNew(t testing.TB, cfg Config, now func() time.Time) *Queue {
	t.Helper()
	q, err := New(cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func req(tenant string, cost int, value any) *Request {
	return &Request{Tenant: tenant, Cost: cost, Rows: 1, Value: value}
}

// pushAll pushes and fails the test on any refusal.
func pushAll(t testing.TB, q *Queue, rs ...*Request) {
	t.Helper()
	for _, r := range rs {
		if err := q.Push(r); err != nil {
			t.Fatalf("push %v: %v", r.Value, err)
		}
	}
}

// drain pops batches of one row until nothing waits and returns the values
// in service order.
func drain(q *Queue) []any {
	var got []any
	for q.Len() > 0 {
		for _, r := range q.Pop(1, 0) {
			got = append(got, r.Value)
			q.Done(r)
		}
	}
	return got
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default", DefaultConfig(), true},
		{"zero value takes defaults", Config{}, true},
		{"negative MaxQueued", Config{MaxQueued: -1}, false},
		{"negative MaxQueuedPerTenant", Config{MaxQueuedPerTenant: -1}, false},
		{"negative weight", Config{DefaultTenant: TenantConfig{Weight: -1}}, false},
		{"NaN weight", Config{DefaultTenant: TenantConfig{Weight: nanf()}}, false},
		{"infinite rate", Config{DefaultTenant: TenantConfig{RatePerSec: inff()}}, false},
		{"negative rate", Config{DefaultTenant: TenantConfig{RatePerSec: -1}}, false},
		{"negative inflight", Config{DefaultTenant: TenantConfig{MaxInflight: -1}}, false},
		{"negative burst", Config{DefaultTenant: TenantConfig{Burst: -1}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("Validate = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadConfig) {
				t.Errorf("error %v does not wrap ErrBadConfig", err)
			}
			if _, err := New(tc.cfg, nil); tc.ok != (err == nil) {
				t.Errorf("New = %v, want ok %v", err, tc.ok)
			}
		})
	}
	q := mustNew(t, Config{}, nil)
	if q.cfg.MaxQueued != 4096 || q.cfg.MaxQueuedPerTenant != 1024 || q.cfg.DefaultTenant.Weight != 1 {
		t.Errorf("defaults not applied: %+v", q.cfg)
	}
	if err := q.SetTenant("", TenantConfig{}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("SetTenant with empty name: %v, want ErrBadConfig", err)
	}
	if err := q.SetTenant("x", TenantConfig{Weight: -2}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("SetTenant with negative weight: %v, want ErrBadConfig", err)
	}
}

func nanf() float64 { z := 0.0; return z / z }
func inff() float64 { z := 0.0; return 1 / z }

func TestTenantConfigDefaults(t *testing.T) {
	cases := []struct {
		in   TenantConfig
		want TenantConfig
	}{
		{TenantConfig{}, TenantConfig{Weight: 1, Burst: 1}},
		{TenantConfig{RatePerSec: 2.5}, TenantConfig{Weight: 1, RatePerSec: 2.5, Burst: 3}},
		{TenantConfig{RatePerSec: 0.1}, TenantConfig{Weight: 1, RatePerSec: 0.1, Burst: 1}},
		{TenantConfig{Weight: 3, RatePerSec: 10, Burst: 4}, TenantConfig{Weight: 3, RatePerSec: 10, Burst: 4}},
		{TenantConfig{RatePerSec: 1e300}, TenantConfig{Weight: 1, RatePerSec: 1e300, Burst: 1 << 30}},
	}
	for _, tc := range cases {
		if got := tc.in.withDefaults(); got != tc.want {
			t.Errorf("%+v with defaults = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestPushBadRequest(t *testing.T) {
	q := mustNew(t, DefaultConfig(), nil)
	queued := req("a", 1, nil)
	pushAll(t, q, queued)
	cases := []struct {
		name string
		r    *Request
	}{
		{"nil", nil},
		{"empty tenant", &Request{Cost: 1, Rows: 1}},
		{"zero cost", &Request{Tenant: "a", Rows: 1}},
		{"negative cost", &Request{Tenant: "a", Cost: -5, Rows: 1}},
		{"zero rows", &Request{Tenant: "a", Cost: 1}},
		{"already queued", queued},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := q.Push(tc.r)
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("Push = %v, want ErrBadRequest", err)
			}
			if !strings.HasPrefix(err.Error(), "sched: ") {
				t.Errorf("message %q lacks the package prefix", err)
			}
		})
	}
	running := q.Pop(1, 0)[0]
	if err := q.Push(running); !errors.Is(err, ErrBadRequest) {
		t.Errorf("Push of a running request = %v, want ErrBadRequest", err)
	}
	if got := q.Stats().Rejected.BadRequest; got != int64(len(cases)+1) {
		t.Errorf("BadRequest rejections %d, want %d", got, len(cases)+1)
	}
	q.Done(running)
	if err := q.Push(running); err != nil {
		t.Errorf("a Done request must be reusable: %v", err)
	}
}

func TestMaxInflight(t *testing.T) {
	q := mustNew(t, DefaultConfig(), nil)
	if err := q.SetTenant("t", TenantConfig{MaxInflight: 2}); err != nil {
		t.Fatal(err)
	}
	pushAll(t, q, req("t", 1, 1), req("t", 1, 2))
	if err := q.Push(req("t", 1, 3)); !errors.Is(err, ErrTenantLimit) {
		t.Fatalf("third push: %v, want ErrTenantLimit", err)
	}
	// Other tenants are not affected.
	pushAll(t, q, req("u", 1, "u"))
	// Running still counts against the limit.
	b := q.Pop(1, 0)
	if err := q.Push(req("t", 1, 3)); !errors.Is(err, ErrTenantLimit) {
		t.Fatalf("push with one queued and one running: %v, want ErrTenantLimit", err)
	}
	q.Done(b[0])
	q.Done(b[0]) // a second Done is a no-op, not a second slot
	pushAll(t, q, req("t", 1, 3))
	if err := q.Push(req("t", 1, 4)); !errors.Is(err, ErrTenantLimit) {
		t.Fatalf("double Done freed two slots: %v", err)
	}
	// Remove frees slots too.
	if got := q.Remove(func(r *Request) bool { return r.Value == 3 }); len(got) != 1 {
		t.Fatalf("Remove returned %d requests", len(got))
	}
	pushAll(t, q, req("t", 1, 4))
	s, _ := q.Tenant("t")
	if s.Rejected.TenantLimit != 3 || s.Queued != 2 || s.Running != 0 || s.Removed != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestRateLimit(t *testing.T) {
	clock := newFakeClock()
	q := mustNew(t, DefaultConfig(), clock.now)
	if err := q.SetTenant("t", TenantConfig{RatePerSec: 10, Burst: 2}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		advance time.Duration
		ok      bool
	}{
		{0, true}, {0, true}, // the full bucket: Burst 2
		{0, false},                     // empty
		{50 * time.Millisecond, false}, // half a token
		{50 * time.Millisecond, true},  // one token after 100 ms at 10/s
		{0, false},
		{10 * time.Second, true}, // a long quiet period refills only Burst
		{0, true},
		{0, false},
	}
	for i, s := range steps {
		clock.advance(s.advance)
		err := q.Push(req("t", 1, i))
		if s.ok != (err == nil) {
			t.Fatalf("step %d (+%v): Push = %v, want ok %v", i, s.advance, err, s.ok)
		}
		if err != nil && !errors.Is(err, ErrRateLimited) {
			t.Fatalf("step %d: %v, want ErrRateLimited", i, err)
		}
		// Keep the queue short so only the rate decides.
		for _, r := range q.Pop(0, 0) {
			q.Done(r)
		}
	}
	// Other tenants (default: unlimited) are not affected.
	for range 100 {
		pushAll(t, q, req("free", 1, nil))
	}
	// A clock that steps back refills nothing and does not break the bucket.
	clock.advance(-time.Hour)
	if err := q.Push(req("t", 1, nil)); !errors.Is(err, ErrRateLimited) {
		t.Errorf("push after the clock stepped back: %v, want ErrRateLimited", err)
	}
	s, _ := q.Tenant("t")
	if s.Rejected.RateLimited != 5 {
		t.Errorf("RateLimited rejections %d, want 5", s.Rejected.RateLimited)
	}
}

// A push refused for another reason does not spend a token.
func TestRateLimitRefusalSpendsNoToken(t *testing.T) {
	clock := newFakeClock()
	q := mustNew(t, Config{MaxQueuedPerTenant: 1}, clock.now)
	if err := q.SetTenant("t", TenantConfig{RatePerSec: 1, Burst: 2}); err != nil {
		t.Fatal(err)
	}
	pushAll(t, q, req("t", 1, nil))
	for range 5 {
		if err := q.Push(req("t", 1, nil)); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("%v, want ErrQueueFull", err)
		}
	}
	q.Pop(0, 0)
	if err := q.Push(req("t", 1, nil)); err != nil {
		t.Errorf("the second token was spent by refused pushes: %v", err)
	}
}

func TestQueueBounds(t *testing.T) {
	q := mustNew(t, Config{MaxQueued: 3, MaxQueuedPerTenant: 2}, nil)
	pushAll(t, q, req("a", 1, nil), req("a", 1, nil))
	err := q.Push(req("a", 1, nil))
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("per-tenant bound: %v, want ErrQueueFull", err)
	}
	t.Log(err)
	pushAll(t, q, req("b", 1, nil))
	err = q.Push(req("c", 1, nil))
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("global bound: %v, want ErrQueueFull", err)
	}
	t.Log(err)
	// Running requests do not count against the queue bounds.
	b := q.Pop(2, 0)
	if len(b) != 2 {
		t.Fatalf("popped %d", len(b))
	}
	pushAll(t, q, req("c", 1, nil), req("a", 1, nil))
	st := q.Stats()
	if st.Queued != 3 || st.Running != 2 || st.Rejected.QueueFull != 2 || st.Rejected.Total() != 2 {
		t.Errorf("stats %+v", st)
	}
	if st.Tenants["a"].Rejected.QueueFull != 1 || st.Tenants["c"].Rejected.QueueFull != 1 {
		t.Errorf("per-tenant rejections %+v", st.Tenants)
	}
}

func TestPopBatchBounds(t *testing.T) {
	q := mustNew(t, DefaultConfig(), nil)
	pushAll(t, q,
		&Request{Tenant: "a", Cost: 10, Rows: 2, Value: "a1"},
		&Request{Tenant: "a", Cost: 500, Rows: 1, Value: "a2"},
		&Request{Tenant: "a", Cost: 10, Rows: 5, Value: "a3"},
		&Request{Tenant: "a", Cost: 10, Rows: 1, Value: "a4"},
	)
	values := func(b []*Request) []any {
		var v []any
		for _, r := range b {
			v = append(v, r.Value)
			q.Done(r)
		}
		return v
	}
	// a2 does not fit in cost 100: the batch stops there (no skipping ahead).
	if got := values(q.Pop(10, 100)); !slices.Equal(got, []any{"a1"}) {
		t.Errorf("batch 1 = %v", got)
	}
	// An oversized request still goes out, alone.
	if got := values(q.Pop(10, 100)); !slices.Equal(got, []any{"a2"}) {
		t.Errorf("batch 2 = %v", got)
	}
	// Rows bound: a3 (5 rows) fits in 6, a4 does not.
	if got := values(q.Pop(5, 0)); !slices.Equal(got, []any{"a3"}) {
		t.Errorf("batch 3 = %v", got)
	}
	if got := values(q.Pop(0, 0)); !slices.Equal(got, []any{"a4"}) {
		t.Errorf("batch 4 = %v", got)
	}
	if b := q.Pop(10, 100); len(b) != 0 {
		t.Errorf("Pop on an empty queue returned %d requests", len(b))
	}
}

func TestOldest(t *testing.T) {
	clock := newFakeClock()
	q := mustNew(t, DefaultConfig(), clock.now)
	if _, ok := q.Oldest(); ok {
		t.Fatal("Oldest on an empty queue")
	}
	t0 := clock.now()
	r1 := req("heavy", 100, nil)
	pushAll(t, q, r1)
	clock.advance(time.Second)
	pushAll(t, q, req("light", 1, nil))
	if got, _ := q.Oldest(); !got.Equal(t0) {
		t.Errorf("Oldest = %v, want %v", got, t0)
	}
	if !r1.Enqueued().Equal(t0) {
		t.Errorf("Enqueued = %v", r1.Enqueued())
	}
	q.Remove(func(r *Request) bool { return r == r1 })
	if got, _ := q.Oldest(); !got.Equal(t0.Add(time.Second)) {
		t.Errorf("Oldest after Remove = %v, want %v", got, t0.Add(time.Second))
	}
	q.Pop(0, 0)
	if _, ok := q.Oldest(); ok {
		t.Error("Oldest after the last request left")
	}
}

func TestRemove(t *testing.T) {
	q := mustNew(t, DefaultConfig(), nil)
	for i := 1; i <= 4; i++ {
		pushAll(t, q, req("a", 1, fmt.Sprint("a", i)))
	}
	pushAll(t, q, req("b", 1, "b1"), req("c", 1, "c1"), req("c", 1, "c2"))
	var offered []any
	gone := q.Remove(func(r *Request) bool {
		offered = append(offered, r.Value)
		return r.Value == "a1" || r.Value == "a2" || r.Value == "a3" || r.Tenant == "c"
	})
	var removed []any
	for _, r := range gone {
		removed = append(removed, r.Value)
	}
	if want := []any{"a1", "a2", "a3", "a4", "b1", "c1", "c2"}; !slices.Equal(offered, want) {
		t.Errorf("pred saw %v, want arrival order %v", offered, want)
	}
	if want := []any{"a1", "a2", "a3", "c1", "c2"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if q.Len() != 2 {
		t.Errorf("Len = %d, want 2", q.Len())
	}
	// a4 is re-tagged as if a1..a3 never came: it starts level with b1 and
	// arrived first, so it goes first. Without re-tagging it would start at
	// 3 and wait behind b1.
	if got := drain(q); !slices.Equal(got, []any{"a4", "b1"}) {
		t.Errorf("order after Remove %v, want [a4 b1]", got)
	}
	// Removed requests can be pushed again.
	pushAll(t, q, gone...)
	if q.Remove(func(*Request) bool { return false }) != nil {
		t.Error("Remove of nothing returned requests")
	}
}

// Removing a tenant's whole queue leaves it no debt and no credit.
func TestRemoveWholeTenant(t *testing.T) {
	q := mustNew(t, DefaultConfig(), nil)
	pushAll(t, q, req("b", 10, "b1"), req("b", 10, "b2"))
	for i := range 5 {
		pushAll(t, q, req("a", 10, fmt.Sprint("x", i)))
	}
	q.Remove(func(r *Request) bool { return r.Tenant == "a" })
	pushAll(t, q, req("a", 10, "a1"))
	// b1 S=0, b2 S=10, a1 S=max(V=0, 0)=0 but arrived after b1.
	if got := drain(q); !slices.Equal(got, []any{"b1", "a1", "b2"}) {
		t.Errorf("order %v, want [b1 a1 b2]", got)
	}
}

func TestSetTenantWeightRetags(t *testing.T) {
	q := mustNew(t, DefaultConfig(), nil)
	for i := range 4 {
		pushAll(t, q, req("a", 10, fmt.Sprint("a", i)), req("b", 10, fmt.Sprint("b", i)))
	}
	// a at weight 4 now: its waiting requests are 2.5 apart, b's 10 apart.
	if err := q.SetTenant("a", TenantConfig{Weight: 4}); err != nil {
		t.Fatal(err)
	}
	want := []any{"a0", "b0", "a1", "a2", "a3", "b1", "b2", "b3"}
	if got := drain(q); !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
	s, _ := q.Tenant("a")
	if !s.Configured || s.Config.Weight != 4 {
		t.Errorf("tenant stats %+v", s)
	}
	if s, _ := q.Tenant("b"); s.Configured || s.Config.Weight != 1 {
		t.Errorf("defaulted tenant stats %+v", s)
	}
}

func TestForgetTenant(t *testing.T) {
	q := mustNew(t, DefaultConfig(), nil)
	pushAll(t, q, req("a", 1, nil))
	if q.ForgetTenant("a") {
		t.Error("forgot a tenant with a request waiting")
	}
	b := q.Pop(0, 0)
	if q.ForgetTenant("a") {
		t.Error("forgot a tenant with a request running")
	}
	q.Done(b[0])
	if !q.ForgetTenant("a") {
		t.Error("did not forget an idle tenant")
	}
	if _, ok := q.Tenant("a"); ok {
		t.Error("forgotten tenant still reported")
	}
	if q.ForgetTenant("nobody") {
		t.Error("forgot an unknown tenant")
	}
}

func TestStats(t *testing.T) {
	q := mustNew(t, DefaultConfig(), nil)
	pushAll(t, q, req("a", 7, nil), req("a", 3, nil), req("b", 5, nil))
	b := q.Pop(2, 0)
	s := q.Stats()
	if s.Queued != 1 || s.Running != 2 || len(s.Tenants) != 2 {
		t.Fatalf("stats %+v", s)
	}
	if a := s.Tenants["a"]; a.Served != 1 || a.ServedCost != 7 || a.Queued != 1 || a.Running != 1 {
		t.Errorf("a %+v", a)
	}
	if bs := s.Tenants["b"]; bs.Served != 1 || bs.ServedCost != 5 || bs.Running != 1 {
		t.Errorf("b %+v", bs)
	}
	for _, r := range b {
		q.Done(r)
	}
	if q.Running() != 0 {
		t.Errorf("Running = %d", q.Running())
	}
}

// Steady-state Push, Pop and Done allocate nothing (Pop's slice is reused).
func TestPushPopDoneAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	clock := newFakeClock()
	q := mustNew(t, DefaultConfig(), clock.now)
	const tenants = 100
	if err := q.SetTenant("t0", TenantConfig{RatePerSec: 1e9, MaxInflight: 1000}); err != nil {
		t.Fatal(err)
	}
	reqs := make([]*Request, 4*tenants)
	for i := range reqs {
		reqs[i] = req(fmt.Sprint("t", i%tenants), 1+i%50, nil)
	}
	cycle := func() {
		for _, r := range reqs {
			if err := q.Push(r); err != nil {
				t.Fatal(err)
			}
		}
		for q.Len() > 0 {
			for _, r := range q.Pop(32, 0) {
				q.Done(r)
			}
		}
		clock.advance(time.Millisecond)
	}
	cycle() // create the tenants, grow the heap and the batch slice
	if a := testing.AllocsPerRun(20, cycle); a != 0 {
		t.Errorf("%v allocations per %d Push+Pop+Done, want 0", a, len(reqs))
	}
}
