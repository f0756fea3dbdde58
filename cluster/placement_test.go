package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pc "github.com/asynkron/protoactor-go/cluster"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/storage"
)

// startGossipCluster starts size nodes in one process, joined by gossip
// (each with its own Badger and catalog: the tests copy entries to all).
func startGossipCluster(t *testing.T, size int) []*testNode {
	t.Helper()
	testenv.SkipMultiNodeUnderRace(t)
	var nodes []*testNode
	for i := range size {
		cfg := DefaultNodeConfig()
		cfg.Gossip.Key = "placement test key" // gossip encrypted
		if i > 0 {
			cfg.Gossip.Seeds = []string{nodes[0].GossipAddr()}
		}
		nodes = append(nodes, startNode(t, cfg))
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

// createEverywhere creates a vPLM on nodes[0] and copies its catalog entry
// and params blob to the other nodes (no Raft in these tests).
func createEverywhere(t *testing.T, ctx context.Context, nodes []*testNode, id string) {
	t.Helper()
	v, err := nodes[0].Service().Create(ctx, actors.CreateSpec{ID: id, Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"neg", "pos"}})
	if err != nil {
		t.Fatal(err)
	}
	blob, err := nodes[0].store.GetBlob(v.ParamsDigest)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		if _, err := n.store.PutBlob(blob); err != nil {
			t.Fatal(err)
		}
		if _, err := n.cat.Apply(&smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_Create{Create: &smilepb.CreateVPLM{Vplm: v}}}); err != nil {
			t.Fatal(err)
		}
	}
}

func residentTotal(nodes []*testNode) (total int, per []int) {
	for _, n := range nodes {
		per = append(per, n.Resident())
		total += n.Resident()
	}
	return total, per
}

// TestPlacementDuplicates classifies each of 90 vPLMs through every node at
// once and checks that there is exactly one activation of each in the
// cluster, spread within the load bound; after a node closes, its vPLMs
// come back on the others, still one each.
func TestPlacementDuplicates(t *testing.T) {
	nodes := startGossipCluster(t, 3)
	ctx := ctxT(t)
	const models = 90
	for i := range models {
		createEverywhere(t, ctx, nodes, fmt.Sprintf("p%03d", i))
	}
	// Node 1 cannot serve the first ten (as a plot-mode vPLM whose PLOT
	// table is elsewhere): they go to the others.
	notHere := func(id string) bool { return id >= "p010" }
	nodes[1].place.canHost.Store(&notHere)
	classifyAll := func(via []*testNode) {
		t.Helper()
		var wg sync.WaitGroup
		errc := make(chan error, models*len(via))
		for i := range models {
			for _, n := range via {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := n.Service().Classify(ctx, fmt.Sprintf("p%03d", i), []string{"a fine film"}); err != nil {
						errc <- err
					}
				}()
			}
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
	}
	classifyAll(nodes)
	total, per := residentTotal(nodes)
	t.Logf("activations per node: %v", per)
	if total != models {
		t.Fatalf("%d activations of %d vPLMs: %v", total, models, per)
	}
	for i := range 10 {
		for _, n := range nodes {
			if pid, ok := n.cl.PidCache.Get(fmt.Sprintf("p%03d", i), actors.KindVPLM); ok && pid.Address == nodes[1].Address() {
				t.Errorf("p%03d is on node 1, which cannot serve it", i)
			}
		}
	}
	b := bound([]int{models / 3, models / 3, models / 3})
	for i, c := range per {
		if c == 0 || c > b {
			t.Errorf("node %d hosts %d vPLMs: want 1..%d", i, c, b)
		}
	}

	// Node 2 goes away without a word; its vPLMs come back elsewhere.
	lost := per[2]
	start := time.Now()
	cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := nodes[2].Close(cctx); err != nil {
		t.Fatal(err)
	}
	classifyAll(nodes[:2])
	t.Logf("%d vPLMs of the closed node served again after %v", lost, time.Since(start))
	waitFor(t, "the registrations to settle", func() bool {
		total, _ := residentTotal(nodes[:2])
		return total == models
	})
}

// TestGossipKeyAndMeta: a node with another cluster key cannot join (the
// gossip is encrypted), and metadata past memberlist's cap is refused at
// start with a typed error.
func TestGossipKeyAndMeta(t *testing.T) {
	testenv.SkipMultiNodeUnderRace(t)
	cfg := DefaultNodeConfig()
	cfg.Gossip.Key = "right key"
	a := startNode(t, cfg)
	bad := DefaultNodeConfig()
	bad.Gossip.Key = "wrong key"
	bad.Gossip.Seeds = []string{a.GossipAddr()}
	z := testenv.UseLite(t)
	dev, err := cpu.New(cpu.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	bb, err := z.Load(dev, "use-lite")
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	store, err := storage.Open(storage.DefaultOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if n, err := Start(t.Context(), bad, store, storage.NewCatalog(store), bb); !errors.Is(err, actors.ErrUnavailable) {
		if n != nil {
			n.Close(t.Context())
		}
		t.Fatalf("joining with the wrong key: %v, want unavailable", err)
	}
	if got := len(a.Members()); got != 1 {
		t.Errorf("%d members after a join with the wrong key, want 1", got)
	}
	long := memberMeta{Host: "127.0.0.1", Port: 1}
	for i := range 40 {
		long.Backbones = append(long.Backbones, fmt.Sprintf("a-rather-long-backbone-name-%02d", i))
	}
	if _, err := encodeMeta(long); !errors.Is(err, actors.ErrBadConfig) {
		t.Errorf("metadata of 40 long backbone names: %v, want bad config", err)
	}
}

// TestPlacementStaleDirectory: a home whose directory names an activation
// that no longer exists (registered, then gone unseen) must not send
// callers to it: the home watches what its directory names, and a caller
// that finds a dead activation tells the home.
func TestPlacementStaleDirectory(t *testing.T) {
	nodes := startGossipCluster(t, 3)
	ctx := ctxT(t)
	createEverywhere(t, ctx, nodes, "stale")
	home := nodes[0].place.ranked("stale", "")[0].Meta.addr()
	var other *testNode
	for _, n := range nodes {
		if n.Address() != home {
			other = n
			break
		}
	}
	// A registration of an activation that does not exist, on a live node.
	ghost := actor.NewPID(other.Address(), "smile-placement/stale$ghost")
	nodes[0].ActorSystem().Root.Send(actor.NewPID(home, placementName),
		&pc.Activation{Pid: ghost, ClusterIdentity: pc.NewClusterIdentity("stale", actors.KindVPLM)})
	start := time.Now()
	for _, n := range nodes {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := n.Service().Classify(cctx, "stale", []string{"a fine film"})
		cancel()
		if err != nil {
			t.Fatalf("classify through %s after a stale registration: %v", n.Address(), err)
		}
	}
	t.Logf("served through every node %v after the stale registration", time.Since(start).Round(time.Millisecond))
}
