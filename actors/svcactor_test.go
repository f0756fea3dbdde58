package actors_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/internal/datasets"
)

// Tests of the service actor (svcactor.go) on a whole node.

// serviceActor makes sure n runs its service actor (a node may spawn its
// own) and returns the address to call it at.
func serviceActor(t *testing.T, n *node) string {
	t.Helper()
	pid, err := actors.SpawnServiceActor(n.ActorSystem(), n.Service())
	switch {
	case err == nil:
		// Cleanups run last first: this one before the node's Close.
		t.Cleanup(func() { _ = n.ActorSystem().Root.StopFuture(pid).Wait() })
	case errors.Is(err, actor.ErrNameExists):
	default:
		t.Fatal(err)
	}
	return n.Address()
}

// svcCall sends a service request to the node at addr from sys and
// returns the reply's error (as FromProto makes it) and the reply.
func svcCall(t *testing.T, ctx context.Context, sys *actor.ActorSystem, addr string, req *smilepb.ServiceRequest) (*smilepb.ServiceReply, error) {
	t.Helper()
	rep, err := actors.RequestService(ctx, sys, addr, req)
	if err != nil {
		t.Fatalf("service call %T: %v", req.GetOp(), err)
	}
	if rep.GetNode() != addr {
		t.Errorf("reply names node %q, want %q", rep.GetNode(), addr)
	}
	return rep, actors.FromProto(rep.GetError())
}

// TestServiceActor: every operation of the service actor on one node,
// its typed errors, a training job polled to its end, a slow call that
// does not hold the others up, and its stop.
func TestServiceActor(t *testing.T) {
	bb := useLite(t)
	pulls := make(chan chan error)
	n := startNode(t, bb, t.TempDir(), func(cfg *cluster.NodeConfig) {
		// No dataset is pulled here: a pull waits for the test to end it.
		cfg.Trainer.DataDir = t.TempDir()
		cfg.Trainer.Pull = func(ctx context.Context, _, _ string) error {
			done := make(chan error)
			select {
			case pulls <- done:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case err := <-done:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	addr := serviceActor(t, n)
	sys := n.ActorSystem()
	t.Run("catalog", func(t *testing.T) { testServiceCatalog(t, sys, addr) })
	t.Run("bad requests", func(t *testing.T) { testServiceBadRequests(t, sys, addr) })
	t.Run("train", func(t *testing.T) { testServiceTrain(t, sys, addr) })
	t.Run("slow call", func(t *testing.T) { testServiceSlowCall(t, n, addr, pulls) })
}

// testServiceCatalog: create, get, list (paged), delete, with the codes of
// a second create and of a vPLM that is gone.
func testServiceCatalog(t *testing.T, sys *actor.ActorSystem, addr string) {
	ctx := ctxT(t, 60*time.Second)
	create := &smilepb.CreateRequest{Id: "svc-clf", Tenant: "ts", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"neg", "pos"},
		Adapter: smilepb.AdapterKind_ADAPTER_LORA, Rank: 8, Precision: "int8"}
	rep, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Create{Create: create}})
	if err != nil {
		t.Fatal(err)
	}
	v := rep.GetVplm()
	if v.GetId() != "svc-clf" || v.GetTenant() != "ts" || v.GetVersion() != 1 || v.GetAdapter().GetKind() != smilepb.AdapterKind_ADAPTER_LORA ||
		v.GetAdapter().GetRank() != 8 || v.GetPrecision() != "int8" || v.GetBackbone() == "" {
		t.Fatalf("created %v", v)
	}
	if _, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Create{Create: create}}); !errors.Is(err, actors.ErrExists) {
		t.Fatalf("second create: %v, want already_exists", err)
	}
	if _, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Create{Create: &smilepb.CreateRequest{
		Id: "svc-emb", Tenant: "ts", Task: smilepb.Task_TASK_EMBED, Layers: []uint32{2}}}}); err != nil {
		t.Fatal(err)
	}
	rep, err = svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Get{Get: "svc-emb"}})
	if err != nil || rep.GetVplm().GetTask() != smilepb.Task_TASK_EMBED || len(rep.GetVplm().GetAdapter().GetLayers()) != 1 {
		t.Fatalf("get: %v %v", rep, err)
	}
	// Paged by one: two pages of one, then an empty last page.
	var ids []string
	after := ""
	for range 3 {
		rep, err = svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_List{List: &smilepb.ListRequest{Tenant: "ts", After: after, Limit: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range rep.GetVplms() {
			ids = append(ids, v.GetId())
		}
		if after = rep.GetNext(); after == "" {
			break
		}
	}
	if strings.Join(ids, ",") != "svc-clf,svc-emb" || after != "" {
		t.Fatalf("list by pages of one: %v (next %q)", ids, after)
	}
	if _, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Delete{Delete: "svc-emb"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Get{Get: "svc-emb"}}); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("get after delete: %v, want not_found", err)
	}
	if _, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Delete{Delete: "svc-emb"}}); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("second delete: %v, want not_found", err)
	}
	rep, err = svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_List{List: &smilepb.ListRequest{Tenant: "ts"}}})
	if err != nil || len(rep.GetVplms()) != 1 || rep.GetNext() != "" {
		t.Fatalf("list after delete: %v %v", rep, err)
	}
}

// testServiceBadRequests: what cannot be served gets its code, at once.
func testServiceBadRequests(t *testing.T, sys *actor.ActorSystem, addr string) {
	ctx := ctxT(t, 30*time.Second)
	for _, tc := range []struct {
		name   string
		req    *smilepb.ServiceRequest
		target error
		code   string
	}{
		{"no op", &smilepb.ServiceRequest{}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"bad adapter kind", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Create{Create: &smilepb.CreateRequest{
			Id: "x", Task: smilepb.Task_TASK_EMBED, Adapter: smilepb.AdapterKind(9)}}}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"bad precision", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Create{Create: &smilepb.CreateRequest{
			Id: "x", Task: smilepb.Task_TASK_EMBED, Precision: "fp8"}}}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"no task", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Create{Create: &smilepb.CreateRequest{Id: "x"}}},
			actors.ErrBadRequest, actors.CodeBadRequest},
		{"bad id", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Create{Create: &smilepb.CreateRequest{Id: "no/slash", Task: smilepb.Task_TASK_EMBED}}},
			actors.ErrBadRequest, actors.CodeBadRequest},
		{"list limit", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_List{List: &smilepb.ListRequest{Limit: actors.MaxListLimit + 1}}},
			actors.ErrBadRequest, actors.CodeBadRequest},
		{"train no model", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Train{Train: &smilepb.TrainRequest{Dataset: "imdb"}}},
			actors.ErrBadRequest, actors.CodeBadRequest},
		{"train no examples", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Train{Train: &smilepb.TrainRequest{Model: "svc-clf"}}},
			actors.ErrBadRequest, actors.CodeBadRequest},
		{"train both", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Train{Train: &smilepb.TrainRequest{Model: "svc-clf", Dataset: "imdb",
			ExamplesJsonl: []byte(`{"text":"a","label":"neg"}`)}}}, actors.ErrBadRequest, actors.CodeBadRequest},
		{"train unknown model", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Train{Train: &smilepb.TrainRequest{Model: "nope",
			ExamplesJsonl: []byte(`{"text":"a","label":"neg"}`)}}}, actors.ErrNotFound, actors.CodeNotFound},
		{"unknown job", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Job{Job: "job-none"}}, actors.ErrJobNotFound, actors.CodeJobNotFound},
		{"cancel unknown job", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_CancelJob{CancelJob: "job-none"}}, actors.ErrJobNotFound, actors.CodeJobNotFound},
	} {
		rep, err := svcCall(t, ctx, sys, addr, tc.req)
		if !errors.Is(err, tc.target) || rep.GetError().GetCode() != tc.code {
			t.Errorf("%s: %v (code %q), want %v", tc.name, err, rep.GetError().GetCode(), tc.target)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	// A message that is not a ServiceRequest is answered, not dropped.
	res, err := sys.Root.RequestFuture(actor.NewPID(addr, actors.ServiceActorName), &smilepb.Reload{Id: "x"}, 10*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if rep, ok := res.(*smilepb.ServiceReply); !ok || rep.GetError().GetCode() != actors.CodeBadRequest {
		t.Fatalf("a Reload sent to the service actor: answered %v", res)
	}
	// A caller past its deadline gets no answer (it has stopped waiting).
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = actors.RequestService(short, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Get{Get: "svc-clf"},
		DeadlineUnixMs: time.Now().Add(-time.Second).UnixMilli()})
	if !errors.Is(err, actors.ErrTimeout) || actors.Code(err) != actors.CodeTimeout {
		t.Fatalf("a request past its deadline: %v, want no answer (timeout)", err)
	}
}

// testServiceTrain: a job on uploaded examples, started and polled
// through the service actor to its end; a wrong label names its line.
func testServiceTrain(t *testing.T, sys *actor.ActorSystem, addr string) {
	ctx := ctxT(t, 120*time.Second)
	if _, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Create{Create: &smilepb.CreateRequest{
		Id: "svc-train", Tenant: "ts", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"0", "1"}}}}); err != nil {
		t.Fatal(err)
	}
	ex := imdb(t, 16)
	bad := append([]datasets.Example{}, ex...)
	bad[2].Label = "spam" // line 3 (jsonl puts a blank line before the fifth)
	_, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Train{Train: &smilepb.TrainRequest{
		Model: "svc-train", ExamplesJsonl: jsonl(t, bad)}}})
	if !errors.Is(err, actors.ErrBadDataset) || !strings.Contains(err.Error(), actors.UploadName+":3") {
		t.Fatalf("a wrong label: %v, want bad_dataset naming %s:3", err, actors.UploadName)
	}
	rep, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Train{Train: &smilepb.TrainRequest{
		Model: "svc-train", ExamplesJsonl: jsonl(t, ex), Config: &smilepb.TrainConfig{Epochs: 1, BatchSize: 8}}}})
	if err != nil {
		t.Fatal(err)
	}
	job := rep.GetJob()
	if job.GetState() != smilepb.JobState_JOB_QUEUED || job.GetModel() != "svc-train" || job.GetTrainExamples()+job.GetValidationExamples() != 16 {
		t.Fatalf("new job %v", job)
	}
	states := map[smilepb.JobState]bool{}
	for job.GetState() != smilepb.JobState_JOB_SUCCEEDED {
		states[job.GetState()] = true
		if job.GetState() == smilepb.JobState_JOB_FAILED || job.GetState() == smilepb.JobState_JOB_CANCELED {
			t.Fatalf("job ended %v", job)
		}
		time.Sleep(50 * time.Millisecond)
		rep, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Job{Job: job.GetId()}})
		if err != nil {
			t.Fatal(err)
		}
		job = rep.GetJob()
	}
	t.Logf("job %s: states seen %v, then succeeded with version %d", job.GetId(), states, job.GetVersion())
	if job.GetVersion() != 2 {
		t.Fatalf("succeeded job %v", job)
	}
	rep, err = svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Get{Get: "svc-train"}})
	if err != nil || rep.GetVplm().GetVersion() != 2 {
		t.Fatalf("vPLM after training: %v %v", rep, err)
	}
	// Canceling an ended job returns its record.
	rep, err = svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_CancelJob{CancelJob: job.GetId()}})
	if err != nil || rep.GetJob().GetState() != smilepb.JobState_JOB_SUCCEEDED {
		t.Fatalf("cancel of an ended job: %v %v", rep, err)
	}
}

// testServiceSlowCall: a call that blocks (a dataset pull) holds no other
// call up; stopping the actor cancels it (it answers) and later calls are
// dead letters until the actor is back.
func testServiceSlowCall(t *testing.T, n *node, addr string, pulls chan chan error) {
	ctx := ctxT(t, 60*time.Second)
	sys := n.ActorSystem()
	train := func() <-chan error {
		out := make(chan error, 1)
		go func() {
			rep, err := actors.RequestService(ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Train{Train: &smilepb.TrainRequest{
				Model: "svc-clf", Dataset: "yelp"}}})
			if err == nil {
				err = actors.FromProto(rep.GetError())
			}
			out <- err
		}()
		return out
	}
	first := train()
	var release chan error
	select {
	case release = <-pulls:
	case <-ctx.Done():
		t.Fatal("the train call never pulled")
	}
	start := time.Now()
	for i := range 5 {
		if _, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_List{List: &smilepb.ListRequest{}}}); err != nil {
			t.Fatalf("list %d during a slow call: %v", i, err)
		}
	}
	t.Logf("5 lists during a blocked call: %v", time.Since(start))
	release <- errors.New("registry unreachable")
	if err := <-first; !errors.Is(err, actors.ErrUnavailable) || !strings.Contains(err.Error(), "registry unreachable") {
		t.Fatalf("train over a failed pull: %v, want unavailable", err)
	}

	// Stop the actor while a call blocks: the call ends (canceled) and
	// answers; the actor is gone until spawned again.
	second := train()
	select {
	case <-pulls: // never released: only the stop ends it
	case <-ctx.Done():
		t.Fatal("the train call never pulled")
	}
	if err := sys.Root.StopFuture(actor.NewPID(addr, actors.ServiceActorName)).Wait(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-second:
		if err == nil {
			t.Fatal("a call canceled by the stop succeeded")
		}
		t.Logf("call running at the stop: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("a call running when the actor stopped did not end")
	}
	_, err := actors.RequestService(ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_List{List: &smilepb.ListRequest{}}})
	if !errors.Is(err, actors.ErrUnavailable) || !errors.Is(err, actor.ErrDeadLetter) {
		t.Fatalf("a call to a stopped service actor: %v, want a dead letter", err)
	}
	pid, err := actors.SpawnServiceActor(sys, n.Service())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Root.StopFuture(pid).Wait() })
	if _, err := svcCall(t, ctx, sys, addr, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_List{List: &smilepb.ListRequest{}}}); err != nil {
		t.Fatalf("list after a new spawn: %v", err)
	}
}
