package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
)

// startGossipCluster starts size nodes in one process, joined by gossip
// (each with its own Badger and catalog: the tests copy entries to all).
func startGossipCluster(t *testing.T, size int) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := range size {
		cfg := DefaultNodeConfig()
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
