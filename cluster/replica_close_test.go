package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
)

func putTenantCmd(name string) *smilepb.CatalogCommand {
	return &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_PutTenant{PutTenant: &smilepb.PutTenant{
		Tenant: &smilepb.Tenant{Name: name}}}}
}

// Closing the leader while writes and reads are queued at it answers every
// one of them: none waits forever on a Raft future nobody will complete.
func TestReplicaCloseAnswersProposals(t *testing.T) {
	ctx := ctxT(t)
	n := newReplicaNode(t, "solo", replicaOpts{})
	rp := n.start(ctx)
	var (
		closed atomic.Bool
		calls  atomic.Int64
		mu     sync.Mutex
		bad    []error
	)
	var wg sync.WaitGroup
	for g := range 24 {
		wg.Go(func() {
			for i := 0; !closed.Load(); i++ {
				var err error
				if g%4 == 3 {
					err = rp.Sync(ctx)
				} else {
					_, err = rp.Apply(ctx, putTenantCmd(fmt.Sprintf("t%d-%d", g, i)))
				}
				calls.Add(1)
				if err != nil && !errors.Is(err, actors.ErrUnavailable) {
					mu.Lock()
					bad = append(bad, err)
					mu.Unlock()
				}
			}
		})
	}
	waitFor(t, "calls before the close", func() bool { return calls.Load() >= 200 })
	closed.Store(true)
	n.stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Apply or Sync calls still blocked 5 s after the replica closed")
	}
	if len(bad) > 0 {
		t.Fatalf("%d calls failed with something other than ErrUnavailable, first: %v", len(bad), bad[0])
	}
}

// A closed replica refuses at once; it does not retry until the caller's
// deadline.
func TestReplicaClosedFailsFast(t *testing.T) {
	ctx := ctxT(t)
	n := newReplicaNode(t, "solo", replicaOpts{})
	rp := n.start(ctx)
	n.stop()
	for name, call := range map[string]func(context.Context) error{
		"Apply": func(ctx context.Context) error { _, err := rp.Apply(ctx, putTenantCmd("late")); return err },
		"Sync":  func(ctx context.Context) error { return rp.Sync(ctx) },
	} {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		start := time.Now()
		err := call(cctx)
		cancel()
		if !errors.Is(err, actors.ErrUnavailable) || time.Since(start) > time.Second {
			t.Errorf("%s on a closed replica: %v after %v; want ErrUnavailable at once", name, err, time.Since(start).Round(time.Millisecond))
		}
	}
}
