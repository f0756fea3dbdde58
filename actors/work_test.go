package actors

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/smile-vplm/smile/model"
)

func deviceStats(t *testing.T, f *deviceFixture) *DeviceStats {
	t.Helper()
	res, err := f.sys.Root.RequestFuture(f.h.PID, &GetDeviceStats{}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	return res.(*DeviceStats)
}

// TestWorkOnDevice: work runs on the device's goroutine with its backbone,
// alone (inference queued behind it waits, then runs in batches without
// it), its errors and panics come back typed, and a caller that gives up
// withdraws work still queued.
func TestWorkOnDevice(t *testing.T) {
	cfg := DefaultDeviceConfig()
	cfg.MaxWait = 0
	f := newDeviceFixture(t, cfg, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Run computes with the backbone it is given.
	var pooled []float32
	err := f.h.Do(ctx, f.sys, &Work{Tenant: "t", Tokens: len(f.ids), Run: func(bb model.Backbone) error {
		out, err := model.EmbedIDs(ctx, bb, [][]int32{f.ids}, 64)
		if err == nil {
			pooled = out[0]
		}
		return err
	}})
	if err != nil || len(pooled) != f.bb.Info().OutputDim {
		t.Fatalf("work: %v, %d values", err, len(pooled))
	}
	mine := errors.New("mine")
	if err := f.h.Do(ctx, f.sys, &Work{Tenant: "t", Run: func(model.Backbone) error { return mine }}); !errors.Is(err, mine) {
		t.Fatalf("Run's error: %v", err)
	}
	if err := f.h.Do(ctx, f.sys, &Work{Tenant: "t", Run: func(model.Backbone) error { panic("boom") }}); !errors.Is(err, ErrInternal) {
		t.Fatalf("panic: %v, want ErrInternal", err)
	}
	if err := f.h.Do(ctx, f.sys, &Work{Tenant: "t"}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("no Run: %v", err)
	}

	// Work blocks the device: inference sent meanwhile queues and runs
	// after it, in its own batches.
	before := deviceStats(t, f)
	gate, started := make(chan struct{}), make(chan struct{})
	var running atomic.Bool
	blocked := make(chan error, 1)
	go func() {
		blocked <- f.h.Do(ctx, f.sys, &Work{Tenant: "w", Tokens: 10, Run: func(model.Backbone) error {
			running.Store(true)
			close(started)
			<-gate
			running.Store(false)
			return nil
		}})
	}()
	<-started
	var futs []*actor.Future
	for range 5 {
		futs = append(futs, f.infer("p0", 1))
	}
	// A second work item queues behind; its caller gives up: withdrawn,
	// never run.
	var ran atomic.Bool
	gctx, gcancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		gaveUp <- f.h.Do(gctx, f.sys, &Work{Tenant: "x", Run: func(model.Backbone) error { ran.Store(true); return nil }})
	}()
	time.Sleep(20 * time.Millisecond)
	gcancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("withdrawn work: %v", err)
	}
	// Work whose deadline passes in the queue times out.
	expired := make(chan error, 1)
	deadline := time.Now().Add(10 * time.Millisecond)
	go func() {
		expired <- f.h.Do(ctx, f.sys, &Work{Tenant: "y", Deadline: deadline, Run: func(model.Backbone) error { return nil }})
	}()
	time.Sleep(time.Until(deadline) + 30*time.Millisecond) // past it, however late the goroutine ran
	if st := deviceStats(t, f); st.Batches != before.Batches {
		t.Fatalf("inference ran beside work: %d batches, was %d", st.Batches, before.Batches)
	}
	close(gate)
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	for _, fu := range futs {
		result(t, fu)
	}
	if err := <-expired; !errors.Is(err, ErrTimeout) {
		t.Fatalf("expired work: %v, want ErrTimeout", err)
	}
	if ran.Load() {
		t.Fatal("withdrawn work ran")
	}
	st := deviceStats(t, f)
	if st.Works != before.Works+1 {
		t.Fatalf("%d work items ran, want %d", st.Works, before.Works+1)
	}
	if st.Queued != 0 {
		t.Fatalf("%d left queued", st.Queued)
	}
}

// TestWorkCostCalibration: work is charged by its device time in inference
// tokens once the device has seen both.
func TestWorkCostCalibration(t *testing.T) {
	d := &deviceActor{}
	w := &Work{Tenant: "a", Tokens: 100}
	if c := d.workCost(w); c != 100 {
		t.Fatalf("uncalibrated cost %d, want the declared 100", c)
	}
	d.inferCal.add(1000, 100*time.Millisecond, 0.9) // 10,000 tokens/s
	d.workCal = map[string]*workCal{"a": {}}
	d.workCal["a"].add(100, 40*time.Millisecond, 0.8) // 400 µs a token: 4 inference tokens
	if c := d.workCost(w); c < 390 || c > 410 {
		t.Fatalf("calibrated cost %d, want about 400", c)
	}
	d.workCal["b"] = &workCal{}
	d.workCal["b"].add(100, time.Millisecond, 0.8) // cheaper than inference: never below declared
	if c := d.workCost(&Work{Tenant: "b", Tokens: 100}); c != 100 {
		t.Fatalf("cheap work cost %d, want 100", c)
	}
}

// TestWorkAnsweredOnStop: work queued when the device stops is answered
// unavailable; Do on a stopped device returns.
func TestWorkAnsweredOnStop(t *testing.T) {
	f := newDeviceFixture(t, DefaultDeviceConfig(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gate, started := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- f.h.Do(ctx, f.sys, &Work{Tenant: "t", Run: func(model.Backbone) error { close(started); <-gate; return nil }})
	}()
	<-started
	queued := make(chan error, 1)
	go func() {
		queued <- f.h.Do(ctx, f.sys, &Work{Tenant: "u", Run: func(model.Backbone) error { return nil }})
	}()
	time.Sleep(20 * time.Millisecond)
	stopped := make(chan error, 1)
	go func() { stopped <- f.h.Stop(ctx, f.sys) }()
	if err := <-queued; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("queued work at stop: %v", err)
	}
	close(gate)
	if err := <-first; err != nil {
		t.Fatalf("running work at stop: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if err := f.h.Do(ctx, f.sys, &Work{Tenant: "t", Run: func(model.Backbone) error { return nil }}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("work on a stopped device: %v", err)
	}
}
