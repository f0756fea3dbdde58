package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smile-vplm/smile/api"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/internal/testenv"
)

// clusterNode is one `smile serve` process of a loopback cluster.
type clusterNode struct {
	id, data, raft string
	*server
}

// nodeData is a fresh data directory that reads the shared test backbone.
func nodeData(t *testing.T, name string) string {
	t.Helper()
	data := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"backbones", "blobs"} {
		if err := os.Symlink(filepath.Join(testenv.DataDir(), d), filepath.Join(data, d)); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

func clusterStatus(ctx context.Context, addr string, hash bool) (cluster.Status, error) {
	var st cluster.Status
	u := "http://" + addr + "/v1/cluster"
	if hash {
		u += "?hash=1"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startCluster starts n nodes: the first bootstraps, the others join it.
func startCluster(t *testing.T, bin string, n int) []*clusterNode {
	t.Helper()
	nodes := make([]*clusterNode, n)
	for i := range nodes {
		nd := &clusterNode{id: fmt.Sprintf("n%d", i+1), data: nodeData(t, fmt.Sprintf("n%d", i+1)), raft: testenv.FreeAddr(t)}
		extra := []string{"--node-id", nd.id, "--raft-addr", nd.raft}
		if i > 0 {
			extra = append(extra, "--join", nodes[0].addr)
		}
		nd.server = startServerWith(t, bin, nd.data, testenv.FreeAddr(t), extra...)
		nodes[i] = nd
	}
	waitFor(t, 30*time.Second, "cluster of "+fmt.Sprint(n), func() error {
		st, err := clusterStatus(t.Context(), nodes[0].addr, false)
		if err != nil {
			return err
		}
		if len(st.Members) != n || st.Leader == "" {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	return nodes
}

func alive(s *server) bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// TestClusterKillLeader: a 3-node loopback cluster of real processes takes
// 1,000 concurrent creates (sent to every node: followers forward to the
// leader) while the leader is SIGKILLed part way. Every create that was
// acknowledged must be in the catalog of the surviving nodes, and of the
// killed node once it restarts and catches up; its params blob must be
// readable (classify) from every node.
func TestClusterKillLeader(t *testing.T) {
	testenv.UseLite(t)
	bin := buildSmile(t)
	nodes := startCluster(t, bin, 3)
	ctx := t.Context()

	st, err := clusterStatus(ctx, nodes[0].addr, false)
	if err != nil {
		t.Fatal(err)
	}
	var leader *clusterNode
	for _, nd := range nodes {
		if nd.id == st.Leader {
			leader = nd
		}
	}
	if leader == nil {
		t.Fatalf("leader %q is none of the nodes", st.Leader)
	}

	const total, workers, killAfter = 1000, 32, 300
	var (
		next, acked, failed atomic.Int64
		mu                  sync.Mutex
		ackedIDs            []string
		killOnce            sync.Once
		killed              = make(chan struct{})
	)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clients := make([]*api.Client, len(nodes))
			for i, nd := range nodes {
				clients[i], _ = api.NewClient(nd.addr)
				// A node killed under it refuses at once: fail, not retry
				// to the deadline (the test sends to the live ones).
				clients[i].UnreachableRounds = 3
			}
			for k := 0; ; k++ {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				// Round-robin over the nodes still running.
				var c *api.Client
				for j := range nodes {
					nd := nodes[(w+k+j)%len(nodes)]
					if alive(nd.server) {
						c = clients[(w+k+j)%len(nodes)]
						break
					}
				}
				id := fmt.Sprintf("k%04d", i)
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := c.Create(cctx, api.CreateModelRequest{ID: id, Task: "classify", Labels: []string{"neg", "pos"}, Rank: 8})
				cancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				mu.Lock()
				ackedIDs = append(ackedIDs, id)
				mu.Unlock()
				if acked.Add(1) == killAfter {
					killOnce.Do(func() {
						if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
							t.Errorf("kill leader: %v", err)
						}
						<-leader.done
						close(killed)
					})
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatalf("the leader was never killed: %d acked, %d failed", acked.Load(), failed.Load())
	}
	t.Logf("%d creates acknowledged, %d failed (leader %s killed after %d acks)", acked.Load(), failed.Load(), leader.id, killAfter)
	if acked.Load() < total/2 {
		t.Errorf("only %d of %d creates acknowledged: the cluster did not recover from the leader's loss", acked.Load(), total)
	}

	var survivors []*clusterNode
	for _, nd := range nodes {
		if nd != leader {
			survivors = append(survivors, nd)
		}
	}
	checkHas := func(nd *clusterNode) error {
		c, _ := api.NewClient(nd.addr)
		have := map[string]bool{}
		after := ""
		for {
			page, err := c.List(ctx, "", after, 500)
			if err != nil {
				return err
			}
			for _, m := range page.Models {
				have[m.ID] = true
			}
			if page.Next == "" || len(page.Models) == 0 {
				break
			}
			after = page.Next
		}
		var lost []string
		for _, id := range ackedIDs {
			if !have[id] {
				lost = append(lost, id)
			}
		}
		if len(lost) > 0 {
			return fmt.Errorf("node %s lost %d acknowledged creates: %v", nd.id, len(lost), lost[:min(10, len(lost))])
		}
		return nil
	}
	for _, nd := range survivors {
		if err := checkHas(nd); err != nil {
			t.Error(err)
		}
	}

	// The killed node comes back on its data and catches up.
	leader.server = startServerWith(t, bin, leader.data, leader.addr, "--node-id", leader.id, "--raft-addr", leader.raft)
	waitFor(t, 30*time.Second, "restarted node catches up", func() error { return checkHas(leader) })
	var hashes []string
	for _, nd := range nodes {
		st, err := clusterStatus(ctx, nd.addr, true)
		if err != nil {
			t.Fatalf("status of %s: %v", nd.id, err)
		}
		hashes = append(hashes, st.CatalogHash)
	}
	if hashes[0] == "" || hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Errorf("catalog hashes differ across nodes: %v", hashes)
	}
	// Every node serves a vPLM acknowledged before the kill (its blob is
	// local or fetched from a peer).
	for _, nd := range nodes {
		c, _ := api.NewClient(nd.addr)
		for _, id := range []string{ackedIDs[0], ackedIDs[len(ackedIDs)-1]} {
			if _, err := c.Classify(ctx, id, []string{"a fine film"}); err != nil {
				t.Errorf("classify %s on %s: %v", id, nd.id, err)
			}
		}
	}
}

// TestBackupRestore: `smile backup` of a running node, `smile restore` into
// a fresh data directory, and `smile serve` there: the same catalog (same
// hash), the same answers; a damaged backup file is refused and leaves
// the target empty. Quotas: over a tenant's max_vplms a create is
// quota_exceeded (403) and --show reports the usage.
func TestBackupRestore(t *testing.T) {
	testenv.UseLite(t)
	bin := buildSmile(t)
	srcData := nodeData(t, "src")
	src := startServer(t, bin, srcData)
	ctx := t.Context()
	c, _ := api.NewClient(src.addr)
	if err := c.PutTenant(ctx, "acme", api.TenantRequest{Weight: 1, MaxVPLMs: 3}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Create(ctx, api.CreateModelRequest{ID: fmt.Sprintf("b%d", i), Tenant: "acme", Task: "classify", Labels: []string{"neg", "pos"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Create(ctx, api.CreateModelRequest{ID: "int8", Task: "embed", Precision: "int8"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Create(ctx, api.CreateModelRequest{ID: "b3", Tenant: "acme", Task: "classify", Labels: []string{"neg", "pos"}})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeQuotaExceeded || ae.Status() != http.StatusForbidden {
		t.Fatalf("fourth create of a tenant with max_vplms 3: %v, want quota_exceeded (403)", err)
	}
	env := "SMILE_SERVER=" + src.addr
	out, _ := runSmileEnv(t, bin, srcData, []string{env}, 0, "tenant", "acme", "--show")
	if !strings.Contains(out, "3 vPLMs (quota 3)") {
		t.Errorf("tenant --show: %q", out)
	}
	// A setting given alone keeps the others (the quota among them).
	runSmileEnv(t, bin, srcData, []string{env}, 0, "tenant", "acme", "--weight", "2")
	if out, _ = runSmileEnv(t, bin, srcData, []string{env}, 0, "tenant", "acme"); !strings.Contains(out, "weight 2, 3 vPLMs (quota 3)") {
		t.Errorf("tenant after --weight 2: %q", out)
	}
	runSmileEnv(t, bin, srcData, []string{env}, 2, "tenant", "acme", "--show", "--weight", "3")
	m8, err := c.Get(ctx, "int8")
	if err != nil || m8.Precision != "int8" || m8.ParamsBytes == 0 {
		t.Fatalf("int8 vPLM: %+v, %v", m8, err)
	}
	want, err := c.Classify(ctx, "b1", []string{"a fine film"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := clusterStatus(ctx, src.addr, true)
	if err != nil || st.CatalogHash == "" {
		t.Fatalf("status: %+v, %v", st, err)
	}

	file := filepath.Join(t.TempDir(), "smile.backup")
	runSmileEnv(t, bin, srcData, []string{env}, 0, "backup", file)

	// A damaged copy is refused and writes no catalog.
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), raw...)
	bad[len(bad)/2] ^= 0x40
	badFile := filepath.Join(t.TempDir(), "bad.backup")
	if err := os.WriteFile(badFile, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	dstData := nodeData(t, "dst")
	_, stderr := runSmile(t, bin, dstData, "", 1, "restore", badFile)
	if !strings.Contains(stderr, "corrupt") {
		t.Errorf("restore of a damaged backup: %q, want a corruption error", stderr)
	}
	out, _ = runSmile(t, bin, dstData, "", 0, "restore", "--json", file)
	var sum backupSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("restore output %q: %v", out, err)
	}
	if sum.CatalogHash != st.CatalogHash || sum.Stats.VPLMs != 4 {
		t.Errorf("restored %+v, want catalog hash %s and 4 vPLMs", sum, st.CatalogHash)
	}
	dst := startServer(t, bin, dstData)
	st2, err := clusterStatus(ctx, dst.addr, true)
	if err != nil || st2.CatalogHash != st.CatalogHash {
		t.Fatalf("restored node: %+v, %v; want catalog hash %s", st2, err, st.CatalogHash)
	}
	c2, _ := api.NewClient(dst.addr)
	got, err := c2.Classify(ctx, "b1", []string{"a fine film"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.Predictions) != fmt.Sprint(want.Predictions) {
		t.Errorf("restored node answers %+v, the original %+v", got.Predictions, want.Predictions)
	}
	// The quota and usage came along.
	if _, err := c2.Create(ctx, api.CreateModelRequest{ID: "b3", Tenant: "acme", Task: "classify", Labels: []string{"neg", "pos"}}); !errors.As(err, &ae) || ae.Code != api.CodeQuotaExceeded {
		t.Errorf("create over quota on the restored node: %v", err)
	}
	// A restore into a directory that already holds a node is refused.
	_, stderr = runSmile(t, bin, dstData, "", 1, "restore", file)
	if !strings.Contains(stderr, "fresh data directory") {
		t.Errorf("restore over a node: %q", stderr)
	}
}

// TestKillDuringCreates: a single node SIGKILLed in the middle of
// concurrent creates comes back with every acknowledged vPLM, and every
// vPLM it shows answers (its params blob was stored before its entry was
// committed: nothing half written is visible).
func TestKillDuringCreates(t *testing.T) {
	testenv.UseLite(t)
	bin := buildSmile(t)
	data := nodeData(t, "n")
	raft := testenv.FreeAddr(t)
	srv := startServerWith(t, bin, data, testenv.FreeAddr(t), "--raft-addr", raft)
	ctx := t.Context()
	var (
		mu    sync.Mutex
		acked []string
		next  atomic.Int64
		once  sync.Once
	)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _ := api.NewClient(srv.addr)
			c.UnreachableRounds = 3 // the server killed: fail at once, not at the deadline
			for {
				i := next.Add(1) - 1
				if i >= 250 || !alive(srv) {
					return
				}
				id := fmt.Sprintf("c%04d", i)
				if _, err := c.Create(ctx, api.CreateModelRequest{ID: id, Task: "classify", Labels: []string{"neg", "pos"}, Rank: 8}); err != nil {
					continue
				}
				mu.Lock()
				acked = append(acked, id)
				n := len(acked)
				mu.Unlock()
				if n == 80 {
					once.Do(func() { srv.cmd.Process.Signal(syscall.SIGKILL) })
				}
			}
		}()
	}
	wg.Wait()
	<-srv.done
	srv = startServerWith(t, bin, data, srv.addr, "--raft-addr", raft)
	c, _ := api.NewClient(srv.addr)
	have := map[string]bool{}
	for after := ""; ; {
		page, err := c.List(ctx, "", after, 500)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Models {
			have[m.ID] = true
			if _, err := c.Classify(ctx, m.ID, []string{"fine"}); err != nil {
				t.Errorf("vPLM %s is listed after the crash but does not answer: %v", m.ID, err)
			}
		}
		if page.Next == "" || len(page.Models) == 0 {
			break
		}
		after = page.Next
	}
	for _, id := range acked {
		if !have[id] {
			t.Errorf("acknowledged create %s lost in the crash", id)
		}
	}
	t.Logf("%d acknowledged before the kill, %d listed after the restart", len(acked), len(have))
}
