package actorclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/storage"
)

// A cluster of whole nodes in this process, as `smile serve` runs them
// (tests using it skip under the race detector: see
// testenv.SkipMultiNodeUnderRace):
// a Badger store, the HTTP listener of the internal routes (joins, blobs,
// the gossip addresses a client asks its seeds for), a Raft replica and a
// node on the real use-lite backbone.

// testNode is one member.
type testNode struct {
	*cluster.Node
	api   string // HTTP API address: a client's seed
	store *storage.Store
	rp    *cluster.Replica
	srv   *http.Server
	down  atomic.Bool
}

// startCluster starts size nodes: the first bootstraps, the others join
// it; each is closed at cleanup (if the test has not).
func startCluster(t *testing.T, size int) []*testNode {
	t.Helper()
	ctx := ctxT(t, 2*time.Minute)
	var nodes []*testNode
	for i := range size {
		join := ""
		if i > 0 {
			join = nodes[0].api
		}
		nodes = append(nodes, startTestNode(t, ctx, fmt.Sprintf("n%d", i), join))
	}
	waitFor(t, "every node to see every member", func() bool {
		for _, n := range nodes {
			if len(n.Members()) != size {
				return false
			}
		}
		return true
	})
	return nodes
}

func startTestNode(t *testing.T, ctx context.Context, id, join string) *testNode {
	t.Helper()
	bb := testenv.UseLiteBackbone(t) // closed after the node (cleanups run last first)
	dir := t.TempDir()
	store, err := storage.Open(storage.DefaultOptions(filepath.Join(dir, "db")))
	if err != nil {
		t.Fatal(err)
	}
	cat := storage.NewCatalog(store)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	n := &testNode{api: ln.Addr().String(), store: store}
	var rp atomic.Pointer[cluster.Replica]
	n.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := rp.Load(); p != nil {
			p.Handler().ServeHTTP(w, r)
			return
		}
		http.Error(w, "starting", http.StatusServiceUnavailable)
	})}
	go n.srv.Serve(ln)
	t.Cleanup(func() { n.stop(t) })

	rcfg := cluster.DefaultRaftConfig()
	rcfg.ID, rcfg.Bind, rcfg.APIAddr, rcfg.Join = id, "127.0.0.1:0", n.api, join
	rcfg.Dir = filepath.Join(dir, "raft")
	rcfg.HeartbeatTimeout, rcfg.ElectionTimeout, rcfg.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond
	rcfg.Log = quiet.With("node", id)
	if n.rp, err = cluster.StartReplica(ctx, rcfg, store, cat); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	rp.Store(n.rp)

	cfg := cluster.DefaultNodeConfig()
	cfg.Replica, cfg.APIAddr = n.rp, n.api
	if join != "" {
		cfg.Join = []string{join}
	}
	cfg.Log = quiet.With("node", id)
	// Four nodes' worth of work (a training job among it) under the race
	// detector on two cores can hold a probe's answer past the LAN
	// defaults: a member declared dead by mistake restarts its identity
	// and the test fails for nothing it tests.
	cfg.Gossip.ProbeInterval, cfg.Gossip.ProbeTimeout, cfg.Gossip.SuspicionMult = time.Second, 500*time.Millisecond, 4
	cfg.Trainer.DataDir = testenv.DataDir()
	cfg.Trainer.Pull = func(context.Context, string, string) error { return errors.New("tests never pull") }
	if n.Node, err = cluster.Start(ctx, cfg, store, cat, bb); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	return n
}

// stop closes the node, its replica, its HTTP listener and its store
// (once).
func (n *testNode) stop(t *testing.T) {
	if n.down.Swap(true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if n.Node != nil {
		if err := n.Close(ctx); err != nil {
			t.Error(err)
		}
	}
	if n.rp != nil {
		if err := n.rp.Close(); err != nil {
			t.Logf("closing a replica: %v", err)
		}
	}
	n.srv.Close()
	if err := n.store.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
		t.Error(err)
	}
}

// waitFor polls cond until it holds (30 s at most).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// joinClient starts a client with seeds and waits until it knows want
// serving members.
func joinClient(t *testing.T, want int, seeds ...string) *Client {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Seeds = seeds
	cfg.Log = quiet
	cfg.AttemptTimeout = 2 * time.Second
	c, err := New(ctxT(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Logf("closing the client: %v", err)
		}
	})
	waitFor(t, fmt.Sprintf("the client to see %d members", want), func() bool { return len(c.m.Servers()) == want })
	return c
}
