package actorclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/internal/testenv"
)

// Tests of the client's rules over scripted nodes (fake_test.go): which
// failures move a call to the next member, which resends are resolved and
// how, and the polling of a training job.

// protoactor-go starts throttle goroutines that nothing stops (its
// gossiper's and its dead letters', actor.NewThrottle). Its endpoint
// writer dials a peer that is gone up to 5 times, 2 s apart, and leaves
// each failed gRPC connection open, reconnecting forever
// (remote/endpoint_writer.go: initializeInternal never closes it): a
// process that sent to a node after it closed keeps them (TestClusterClient
// does, on purpose). Everything of ours must stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/cluster.(*Gossiper).StartGossiping.NewThrottle.func3.1"),
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"),
		goleak.IgnoreAnyFunction("github.com/asynkron/protoactor-go/remote.(*endpointWriter).initialize"),
		goleak.IgnoreTopFunction("google.golang.org/grpc.(*addrConn).resetTransport"),
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"))
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Seeds = []string{"127.0.0.1:7077"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"no seeds":        func(c *Config) { c.Seeds = nil },
		"empty seed":      func(c *Config) { c.Seeds = []string{""} },
		"no timeout":      func(c *Config) { c.Timeout = 0 },
		"no attempt time": func(c *Config) { c.AttemptTimeout = 0 },
		"no poll period":  func(c *Config) { c.PollEvery = 0 },
	} {
		c := ok
		mod(&c)
		if err := c.Validate(); !errors.Is(err, actors.ErrBadConfig) {
			t.Errorf("%s: %v, want ErrBadConfig", name, err)
		}
	}
	if _, err := New(context.Background(), DefaultConfig()); !errors.Is(err, actors.ErrBadConfig) {
		t.Errorf("New without seeds: %v", err)
	}
}

// TestCallFailsOver: a member with no service actor (dead letter), one
// overloaded, one that says unavailable and one that answers nothing are
// each passed over for the next, in order; a final error is not.
func TestCallFailsOver(t *testing.T) {
	ok := &smilepb.ServiceReply{Vplm: &smilepb.VPLM{Id: "m"}}
	fx, f := fakes(t, nil, fails(actors.CodeOverloaded, "busy"), fails(actors.CodeUnavailable, "stopping"), silent(), answer(ok),
		fails(actors.CodeNotFound, "no such vPLM"))
	dead, busy, down, mute, good, notFound := f[0], f[1], f[2], f[3], f[4], f[5]
	c, _ := fx.client(t, dead, busy, down, mute, good)
	ctx := ctxT(t, 10*time.Second)
	start := time.Now()
	v, err := c.Get(ctx, "m")
	if err != nil || v.GetId() != "m" {
		t.Fatalf("get: %v %v", v, err)
	}
	t.Logf("answered after %v", time.Since(start))
	for _, n := range []*fakeNode{busy, down, mute, good} {
		if got := n.seen(); !slices.Equal(got, []string{"get"}) {
			t.Errorf("%s saw %v, want one get", n.addr, got)
		}
	}
	// A final answer is not resent.
	c2, _ := fx.client(t, notFound, good)
	if _, err := c2.Get(ctx, "m"); !errors.Is(err, actors.ErrNotFound) || actors.Code(err) != actors.CodeNotFound {
		t.Fatalf("get of a missing vPLM: %v", err)
	}
	if got := good.seen(); len(got) != 1 {
		t.Fatalf("a final answer was resent: %v", got)
	}
}

// TestCallRoundsUntilDeadline: when every member fails, the client backs
// off and tries them all again until its deadline; it then says timeout,
// naming the last failure. With no member at all it says so.
func TestCallRoundsUntilDeadline(t *testing.T) {
	fx, f := fakes(t, fails(actors.CodeOverloaded, "busy"), answer(&smilepb.ServiceReply{}))
	busy, good := f[0], f[1]
	c, m := fx.client(t, busy)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, _, err := c.List(ctx, &smilepb.ListRequest{})
	if !errors.Is(err, actors.ErrTimeout) || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("list over an overloaded cluster: %v", err)
	}
	if n := len(busy.seen()); n < 3 {
		t.Fatalf("the only member was tried %d times in 500ms", n)
	}
	m.set()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, _, err := c.List(ctx2, &smilepb.ListRequest{}); !errors.Is(err, actors.ErrTimeout) || !strings.Contains(err.Error(), ErrNoServers.Error()) {
		t.Fatalf("list with no member: %v", err)
	}
	// A member that turns up in time answers.
	time.AfterFunc(100*time.Millisecond, func() { m.set(good) })
	if _, _, err := c.List(ctxT(t, 5*time.Second), &smilepb.ListRequest{}); err != nil {
		t.Fatalf("list once a member is known: %v", err)
	}
}

// TestCreateResolvesResend: a create whose first try got no answer but
// was applied, resent and answered already_exists, reads the entry back:
// the one asked for is success; another is already_exists. A first try
// answered already_exists is never resolved.
func TestCreateResolvesResend(t *testing.T) {
	ctx := ctxT(t, 10*time.Second)
	cat := newFakeCatalog()
	fx, f := fakes(t, cat.serve(true), cat.serve(false))
	mute, good := f[0], f[1]
	c, _ := fx.client(t, mute, good)
	req := &smilepb.CreateRequest{Id: "m", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"a", "b"}}
	v, err := c.Create(ctx, req)
	if err != nil || v.GetId() != "m" {
		t.Fatalf("create over a member that applied it silently: %v %v", v, err)
	}
	if m, g := mute.seen(), good.seen(); !slices.Equal(m, []string{"create", "get"}) || !slices.Equal(g, []string{"create"}) {
		t.Fatalf("the members saw %v and %v, want a create each, then a get of the best", m, g)
	}
	// Another spec under an id the silent member just took: exists.
	other := &smilepb.CreateRequest{Id: "m2", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"a", "b"}}
	cat.mu.Lock()
	cat.entries["m2"] = &smilepb.VPLM{Id: "m2", Tenant: "default", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"x", "y"}, Version: 1,
		Adapter: &smilepb.AdapterConfig{Kind: smilepb.AdapterKind_ADAPTER_BOTTLENECK}, CreatedUnixMs: time.Now().UnixMilli()}
	cat.mu.Unlock()
	if _, err := c.Create(ctx, other); !errors.Is(err, actors.ErrExists) {
		t.Fatalf("a resent create over another entry: %v, want already_exists", err)
	}
	// Answered already_exists at once: no read back.
	c2, _ := fx.client(t, good)
	before := len(good.seen())
	if _, err := c2.Create(ctx, req); !errors.Is(err, actors.ErrExists) {
		t.Fatalf("a second create: %v, want already_exists", err)
	}
	if got := good.seen()[before:]; !slices.Equal(got, []string{"create"}) {
		t.Fatalf("a plain already_exists was resolved: %v", got)
	}
}

// TestDeleteResolvesResend: a delete resent after a try that got no
// answer, answered not_found, succeeded; a plain not_found is an error.
func TestDeleteResolvesResend(t *testing.T) {
	ctx := ctxT(t, 10*time.Second)
	cat := newFakeCatalog()
	cat.entries["m"] = &smilepb.VPLM{Id: "m"}
	fx, f := fakes(t, cat.serve(true), cat.serve(false))
	mute, good := f[0], f[1]
	c, _ := fx.client(t, mute, good)
	if err := c.Delete(ctx, "m"); err != nil {
		t.Fatalf("delete over a member that applied it silently: %v", err)
	}
	c2, _ := fx.client(t, good)
	if err := c2.Delete(ctx, "m"); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("delete of a missing vPLM: %v", err)
	}
}

// fakeJobs is a node's training jobs: a job goes QUEUED, TRAINING (steps
// 1..3), then ends as end says.
type fakeJobs struct {
	mu       sync.Mutex
	polls    int
	end      smilepb.JobState
	forever  bool // trains until canceled
	canceled bool
}

func (j *fakeJobs) serve(req *smilepb.ServiceRequest) *smilepb.ServiceReply {
	j.mu.Lock()
	defer j.mu.Unlock()
	job := &smilepb.TrainJob{Id: "job-1", Model: "m", State: smilepb.JobState_JOB_QUEUED, Steps: 3}
	switch req.GetOp().(type) {
	case *smilepb.ServiceRequest_Train:
	case *smilepb.ServiceRequest_Job:
		j.polls++
		switch {
		case j.canceled:
			job.State = smilepb.JobState_JOB_CANCELED
		case j.forever || j.polls/2 < 4: // each record twice: unchanged ones are not reported
			job.State, job.Step = smilepb.JobState_JOB_TRAINING, uint64(min(j.polls/2, 3))
		default:
			job.State, job.Step = j.end, 3
			if j.end == smilepb.JobState_JOB_FAILED {
				job.Error = &smilepb.Error{Code: actors.CodeModelChanged, Message: "changed"}
			}
		}
	case *smilepb.ServiceRequest_CancelJob:
		j.canceled = true
		job.State = smilepb.JobState_JOB_CANCELED
	}
	return &smilepb.ServiceReply{Job: job}
}

// TestTrainPolls: a job is polled on the member that started it (though
// another one ranks first now), each change reported once; its end gives
// Train's result; a ctx that ends cancels the job.
func TestTrainPolls(t *testing.T) {
	for _, tc := range []struct {
		end    smilepb.JobState
		target error
	}{
		{smilepb.JobState_JOB_SUCCEEDED, nil},
		{smilepb.JobState_JOB_FAILED, actors.ErrModelChanged},
	} {
		jobs := &fakeJobs{end: tc.end}
		fx, f := fakes(t, jobs.serve, fails(actors.CodeInternal, "not here"))
		runs, other := f[0], f[1]
		c, m := fx.client(t, runs)
		var states []string
		final, err := c.Train(ctxT(t, 10*time.Second), &smilepb.TrainRequest{Model: "m", Dataset: "imdb"}, func(j *smilepb.TrainJob) {
			states = append(states, fmt.Sprintf("%v/%d", j.GetState(), j.GetStep()))
			m.set(other, runs)
		})
		if tc.target == nil && err != nil || tc.target != nil && !errors.Is(err, tc.target) || final.GetState() != tc.end {
			t.Fatalf("train ending %v: %v %v", tc.end, final, err)
		}
		want := []string{"JOB_QUEUED/0", "JOB_TRAINING/0", "JOB_TRAINING/1", "JOB_TRAINING/2", "JOB_TRAINING/3", tc.end.String() + "/3"}
		if !slices.Equal(states, want) {
			t.Errorf("progress %v, want %v", states, want)
		}
		if got := other.seen(); len(got) != 0 {
			t.Errorf("the member that does not run the job was asked %v", got)
		}
	}
	// ctx ends: the job is canceled.
	jobs := &fakeJobs{forever: true}
	jobs2 := &fakeJobs{canceled: true}
	fx, f := fakes(t, jobs.serve, jobs2.serve)
	runs := f[0]
	c, _ := fx.client(t, runs)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Train(ctx, &smilepb.TrainRequest{Model: "m", Dataset: "imdb"}, nil); !errors.Is(err, actors.ErrTimeout) {
		t.Fatalf("train past its deadline: %v", err)
	}
	if ops := runs.seen(); ops[len(ops)-1] != "cancel job" {
		t.Fatalf("the job was not canceled: %v", ops[max(0, len(ops)-3):])
	}
	// A job canceled elsewhere.
	c2, _ := fx.client(t, f[1])
	if _, err := c2.Train(ctxT(t, 5*time.Second), &smilepb.TrainRequest{Model: "m", Dataset: "imdb"}, nil); !errors.Is(err, ErrJobCanceled) {
		t.Fatalf("a job canceled elsewhere: %v", err)
	}
}

// TestTrainNotResent: a train that got no answer may have started its
// job: it is not sent to another member. One refused as unavailable (the
// member trains nothing now) is.
func TestTrainNotResent(t *testing.T) {
	jobs := &fakeJobs{end: smilepb.JobState_JOB_SUCCEEDED}
	fx, f := fakes(t, silent(), jobs.serve, fails(actors.CodeUnavailable, "training is not enabled on this node"))
	mute, good, down := f[0], f[1], f[2]
	c, _ := fx.client(t, mute, good)
	_, err := c.Train(ctxT(t, time.Second), &smilepb.TrainRequest{Model: "m", Dataset: "imdb"}, nil)
	if !errors.Is(err, actors.ErrTimeout) || !errors.Is(err, ErrUncertain) || actors.Code(err) != actors.CodeTimeout {
		t.Fatalf("train with no answer: %v", err)
	}
	if got := good.seen(); len(got) != 0 {
		t.Fatalf("a train with no answer was resent: %v", got)
	}
	c2, _ := fx.client(t, down, good)
	if _, err := c2.Train(ctxT(t, 5*time.Second), &smilepb.TrainRequest{Model: "m", Dataset: "imdb"}, nil); err != nil {
		t.Fatalf("train past an unavailable member: %v", err)
	}
}

// TestCloseEndsCalls: Close ends the calls running (ErrClosed) and
// refuses new ones.
func TestCloseEndsCalls(t *testing.T) {
	fx, f := fakes(t, silent())
	c, m := fx.client(t, f...)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Get(ctxT(t, 10*time.Second), "m")
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) || actors.Code(err) != actors.CodeUnavailable {
			t.Fatalf("a call running at Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a call running at Close did not end")
	}
	if _, err := c.Get(context.Background(), "m"); !errors.Is(err, ErrClosed) {
		t.Fatalf("a call after Close: %v", err)
	}
	if _, err := c.Classify(context.Background(), "m", []string{"x"}); err == nil {
		t.Fatal("classify after Close succeeded")
	}
	if !m.closed {
		t.Fatal("Close left the membership")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

var _ actor.Process = (*fakeNode)(nil)

// TestNewUnreachableSeed: a client whose seeds answer nothing does not
// start (unavailable).
func TestNewUnreachableSeed(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Seeds = []string{"127.0.0.1:1"}
	cfg.Log = quiet
	if c, err := New(ctxT(t, 10*time.Second), cfg); !errors.Is(err, actors.ErrUnavailable) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("a client with no reachable seed: %v", err)
	}
}

// uploadJSONL is n examples of the pulled imdb training split, half of
// each label, as train's uploaded JSONL.
func uploadJSONL(t *testing.T, n int) []byte {
	t.Helper()
	ex, err := datasets.ReadSplit(testenv.DataDir(), "imdb", datasets.Train)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	count := map[string]int{}
	for _, e := range ex {
		if count[e.Label] < n/2 {
			count[e.Label]++
			if err := enc.Encode(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	return b.Bytes()
}

// TestClusterClient: a client of a three-node cluster creates, classifies,
// embeds, trains (following the job's progress), lists and deletes; then
// the node it took as its seed closes, and it goes on through the others.
func TestClusterClient(t *testing.T) {
	testenv.SkipMultiNodeUnderRace(t)
	nodes := startCluster(t, 3)
	c := joinClient(t, 3, nodes[0].api)
	ctx := ctxT(t, 3*time.Minute)
	texts := []string{"a wonderful film", "the worst movie i have seen", "it was fine"}

	v, err := c.Create(ctx, &smilepb.CreateRequest{Id: "clf", Tenant: "acme", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"0", "1"}})
	if err != nil || v.GetVersion() != 1 || v.GetTenant() != "acme" {
		t.Fatalf("create: %v %v", v, err)
	}
	if _, err := c.Create(ctx, &smilepb.CreateRequest{Id: "emb", Tenant: "acme", Task: smilepb.Task_TASK_EMBED, EmbedDim: 32}); err != nil {
		t.Fatal(err)
	}
	crep, err := c.Classify(ctx, "clf", texts)
	if err != nil || len(crep.GetPredictions()) != len(texts) || crep.GetVersion() != 1 || !slices.Equal(crep.GetLabels(), []string{"0", "1"}) {
		t.Fatalf("classify: %v %v", crep, err)
	}
	erep, err := c.Embed(ctx, "emb", texts[:1])
	if err != nil || len(erep.GetEmbeddings()) != 1 || len(erep.GetEmbeddings()[0].GetValues()) != 32 {
		t.Fatalf("embed: %v %v", erep, err)
	}
	if _, err := c.Embed(ctx, "clf", texts); !errors.Is(err, actors.ErrWrongTask) {
		t.Fatalf("embed with a classifier: %v, want wrong_task", err)
	}
	if _, err := c.Classify(ctx, "nope", texts); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("classify with no such vPLM: %v, want not_found", err)
	}
	if _, err := c.Classify(ctx, "clf", []string{""}); actors.Code(err) != actors.CodeEmptyText || actors.TextIndex(err) != 0 {
		t.Fatalf("classify of an empty text: %v (code %s)", err, actors.Code(err))
	}

	var seen []*smilepb.TrainJob
	job, err := c.Train(ctx, &smilepb.TrainRequest{Model: "clf", ExamplesJsonl: uploadJSONL(t, 16), Config: &smilepb.TrainConfig{Epochs: 1, BatchSize: 8}},
		func(j *smilepb.TrainJob) { seen = append(seen, j) })
	if err != nil || job.GetState() != smilepb.JobState_JOB_SUCCEEDED || job.GetVersion() != 2 {
		t.Fatalf("train: %v %v", job, err)
	}
	if len(seen) < 2 || seen[0].GetState() != smilepb.JobState_JOB_QUEUED || !proto.Equal(seen[len(seen)-1], job) {
		t.Fatalf("progress: %d records, first %v", len(seen), seen[0].GetState())
	}
	t.Logf("train: %d progress records, ended %v at version %d", len(seen), job.GetState(), job.GetVersion())
	waitFor(t, "classify to answer from version 2", func() bool {
		r, err := c.Classify(ctx, "clf", texts)
		return err == nil && r.GetVersion() == 2
	})
	list, next, err := c.List(ctx, &smilepb.ListRequest{Tenant: "acme"})
	if err != nil || len(list) != 2 || next != "" {
		t.Fatalf("list: %v %q %v", list, next, err)
	}
	if err := c.Delete(ctx, "emb"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "emb"); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	// The vPLM's actor reads the catalog of the node it runs on, whose
	// replica may apply the delete a moment after the leader acknowledged
	// it: not_found comes, but not always at once.
	deleted := time.Now()
	waitFor(t, "embed after delete to answer not_found", func() bool {
		_, err := c.Embed(ctx, "emb", texts[:1])
		return errors.Is(err, actors.ErrNotFound)
	})
	t.Logf("embed answered not_found %v after the delete returned", time.Since(deleted))

	// A vPLM whose activation is on the seed.
	onSeed := ""
	for i := 0; onSeed == "" && i < 20; i++ {
		id := fmt.Sprintf("p%d", i)
		if _, err := c.Create(ctx, &smilepb.CreateRequest{Id: id, Tenant: "other", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"a", "b"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Classify(ctx, id, texts); err != nil {
			t.Fatal(err)
		}
		if pid, ok := c.cl.PidCache.Get(id, actors.KindVPLM); ok && pid.Address == nodes[0].Address() {
			onSeed = id
		}
	}
	if onSeed == "" {
		t.Fatal("no activation of 20 vPLMs is on the seed")
	}

	// The seed goes; the client goes on through the others. A request to
	// an activation on the seed, sent before the client knows it is gone,
	// is resent as soon as it does (protoactor would hold it for its
	// remote's reconnecting, about 10 seconds).
	start := time.Now()
	nodes[0].stop(t)
	step := time.Now()
	if _, err := c.Classify(ctx, onSeed, texts); err != nil {
		t.Fatalf("classify with %s, active on the seed when it closed: %v", onSeed, err)
	}
	if d := time.Since(step); d > 5*time.Second {
		t.Errorf("classify with %s, active on the seed when it closed, took %v", onSeed, d)
	}
	t.Logf("after the seed closed: classify of a vPLM that was active on it %v", time.Since(step))
	waitFor(t, "the client to see the seed gone", func() bool { return len(c.m.Servers()) == 2 })
	t.Logf("the client saw its seed leave in %v", time.Since(start))
	step = time.Now()
	crep, err = c.Classify(ctx, "clf", texts)
	if err != nil || crep.GetVersion() != 2 {
		t.Fatalf("classify after the seed closed: %v %v", crep, err)
	}
	t.Logf("after the seed closed: classify %v", time.Since(step))
	step = time.Now()
	if _, err := c.Create(ctx, &smilepb.CreateRequest{Id: "clf2", Tenant: "acme", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"a", "b"}}); err != nil {
		t.Fatalf("create after the seed closed: %v", err)
	}
	t.Logf("after the seed closed: create %v", time.Since(step))
	step = time.Now()
	if err := c.Delete(ctx, "clf"); err != nil {
		t.Fatalf("delete after the seed closed: %v", err)
	}
	t.Logf("after the seed closed: delete %v", time.Since(step))
	step = time.Now()
	list, _, err = c.List(ctx, &smilepb.ListRequest{Tenant: "acme"})
	if err != nil || len(list) != 1 || list[0].GetId() != "clf2" {
		t.Fatalf("list after the seed closed: %v %v", list, err)
	}
	t.Logf("after the seed closed: list %v; all %v since the close", time.Since(step), time.Since(start))
}
