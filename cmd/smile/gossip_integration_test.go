package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smile-vplm/smile/api"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/cluster"
)

// clusterFull runs the long form of the multi-process cluster tests
// (`go test ./cmd/smile/ -run TestGossip -cluster.full`).
var clusterFull = flag.Bool("cluster.full", false, "run the multi-process cluster tests in full: more vPLMs, every node killed and restarted in turn")

// nodesOf asks a node for the cluster's nodes.
func nodesOf(ctx context.Context, addr string) ([]cluster.NodeReport, error) {
	var out struct {
		Nodes []cluster.NodeReport `json:"nodes"`
	}
	return out.Nodes, getJSON(ctx, "http://"+addr+"/v1/nodes", &out)
}

// ownerOf asks a node which node hosts a vPLM.
func ownerOf(ctx context.Context, addr, id string) (cluster.NodeReport, error) {
	var out cluster.NodeReport
	return out, getJSON(ctx, "http://"+addr+"/v1/nodes?vplm="+id, &out)
}

func getJSON(ctx context.Context, url string, out any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// waitMembers waits until addr sees want alive members, all serving.
func waitMembers(t *testing.T, addr string, want int) []cluster.NodeReport {
	t.Helper()
	var got []cluster.NodeReport
	waitFor(t, 30*time.Second, fmt.Sprintf("%d alive members seen by %s", want, addr), func() error {
		ns, err := nodesOf(t.Context(), addr)
		if err != nil {
			return err
		}
		alive := 0
		for _, n := range ns {
			if n.State == "alive" {
				alive++
			}
		}
		if alive != want {
			return fmt.Errorf("%+v", ns)
		}
		got = ns
		return nil
	})
	return got
}

// load drives one vPLM through one node with a few closed-loop clients and
// records, from mark() on, the longest time without a success.
type load struct {
	c       *api.Client
	id      string
	stop    chan struct{}
	wg      sync.WaitGroup
	ok      atomic.Int64
	failed  atomic.Int64
	mu      sync.Mutex
	mark    time.Time
	lastOK  time.Time
	longest time.Duration
}

func startLoad(t *testing.T, addr, id string, clients int) *load {
	c, err := api.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	l := &load{c: c, id: id, stop: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := l.c.Classify(ctx, l.id, []string{"a film I will not forget"})
				cancel()
				now := time.Now()
				l.mu.Lock()
				if err != nil {
					l.failed.Add(1)
				} else {
					l.ok.Add(1)
					if !l.mark.IsZero() {
						l.longest = max(l.longest, now.Sub(later(l.lastOK, l.mark)))
					}
					l.lastOK = now
				}
				l.mu.Unlock()
			}
		}()
	}
	t.Cleanup(l.end)
	return l
}

// markNow starts the unavailability window (at a signal).
func (l *load) markNow() {
	l.mu.Lock()
	l.mark, l.longest = time.Now(), 0
	l.mu.Unlock()
}

// gap is the longest time without a success since the mark, counting an
// ongoing one.
func (l *load) gap() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(l.longest, time.Since(later(l.lastOK, l.mark)))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (l *load) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// trainVia trains a vPLM through one node on a small uploaded dataset and
// waits for the job (on that node) to succeed.
func trainVia(t *testing.T, addr, id string) *smilepb.TrainJob {
	t.Helper()
	c, err := api.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for i := range 24 {
		fmt.Fprintf(&sb, "{\"text\":\"a wonderful moving film %d\",\"label\":\"pos\"}\n{\"text\":\"a dull tiresome mess %d\",\"label\":\"neg\"}\n", i, i)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	job, err := c.Train(ctx, &smilepb.TrainRequest{Model: id, ExamplesJsonl: []byte(sb.String()),
		Config: &smilepb.TrainConfig{Epochs: 2, Seed: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		j, err := c.Job(ctx, job.Id)
		if err != nil {
			t.Fatal(err)
		}
		switch j.State {
		case smilepb.JobState_JOB_SUCCEEDED:
			return j
		case smilepb.JobState_JOB_FAILED, smilepb.JobState_JOB_CANCELED:
			t.Fatalf("training %s: %v %s", id, j.State, j.Error)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestGossipCluster runs 3 real `smile serve` processes on loopback: it
// creates, trains and classifies across nodes; SIGKILLs the owner of a busy
// vPLM and measures the time until its requests succeed again; SIGTERMs
// the owner of another and measures the handover; restarts both and sees
// them rejoin; and checks that no acknowledged create or train was lost.
func TestGossipCluster(t *testing.T) {
	bin := buildSmile(t)
	nodes := startCluster(t, bin, 3)
	for _, n := range nodes {
		waitMembers(t, n.addr, 3)
	}
	// `smile nodes` lists them, with their Raft roles.
	out, _ := runSmile(t, bin, nodes[0].data, "", 0, "nodes", "--server", nodes[1].addr)
	for _, want := range []string{"n1", "n2", "n3 ", "alive", "leader", "voter", "use-lite"} {
		if !strings.Contains(out, want) {
			t.Fatalf("smile nodes: no %q in\n%s", want, out)
		}
	}
	ctx := t.Context()
	models := 12
	if *clusterFull {
		models = 200
	}
	// Creates through every node.
	var created []string
	for i := range models {
		c, err := api.NewClient(nodes[i%3].addr)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("g%03d", i)
		if _, err := c.Create(ctx, api.CreateModelRequest{ID: id, Task: "classify", Labels: []string{"neg", "pos"}}); err != nil {
			t.Fatal(err)
		}
		created = append(created, id)
	}
	// Train through node 2, classify through node 3: the new version serves.
	job := trainVia(t, nodes[1].addr, "g000")
	c3, _ := api.NewClient(nodes[2].addr)
	waitFor(t, 10*time.Second, "the trained version served through node 3", func() error {
		m, err := c3.Get(ctx, "g000")
		if err != nil {
			return err
		}
		if m.Version < 2 {
			return fmt.Errorf("version %d", m.Version)
		}
		r, err := c3.Classify(ctx, "g000", []string{"a wonderful moving film", "a dull tiresome mess"})
		if err != nil {
			return err
		}
		if len(r.Predictions) != 2 || r.Predictions[0].Label != "pos" || r.Predictions[1].Label != "neg" {
			return fmt.Errorf("predictions %+v", r.Predictions)
		}
		return nil
	})
	t.Logf("trained g000 through node 2 (job %s), served through node 3", job.Id)
	// The job runs on node 2; node 3 forwards questions about it there.
	if j, err := c3.Job(ctx, job.Id); err != nil || j.State != smilepb.JobState_JOB_SUCCEEDED {
		t.Fatalf("job %s through node 3: %v %v", job.Id, j, err)
	}
	for _, id := range created {
		if _, err := c3.Classify(ctx, id, []string{"fine"}); err != nil {
			t.Fatal(err)
		}
	}

	// A tenant's virtual processor set through node 1 reaches node 3's
	// device scheduler (the nodes follow the catalog), with no restart.
	c1, _ := api.NewClient(nodes[0].addr)
	if err := c1.PutTenant(ctx, "acme", api.TenantRequest{Weight: 3, MaxInflight: 7}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "tenant acme's settings on node 3's device", func() error {
		var st struct {
			Devices []struct {
				Sched struct {
					Tenants map[string]struct {
						Config struct {
							Weight      float64
							MaxInflight int
						}
					}
				}
			} `json:"devices"`
		}
		if err := getJSON(ctx, "http://"+nodes[2].addr+"/v1/stats", &st); err != nil {
			return err
		}
		if len(st.Devices) == 0 {
			return fmt.Errorf("no device")
		}
		c := st.Devices[0].Sched.Tenants["acme"].Config
		if c.Weight != 3 || c.MaxInflight != 7 {
			return fmt.Errorf("acme on node 3: %+v", c)
		}
		return nil
	})

	rounds := []struct {
		kind string
		sig  syscall.Signal
	}{{"kill", syscall.SIGKILL}, {"term", syscall.SIGTERM}}
	if *clusterFull {
		rounds = append(rounds, rounds...)
	}
	for r, round := range rounds {
		id := created[1+r]
		owner, err := ownerOf(ctx, nodes[0].addr, id)
		if err != nil {
			t.Fatal(err)
		}
		var victim, entry *clusterNode
		for _, n := range nodes {
			if n.id == owner.Node {
				victim = n
			} else if entry == nil {
				entry = n
			}
		}
		if victim == nil || entry == nil {
			t.Fatalf("owner %+v of %s is none of the nodes", owner, id)
		}
		l := startLoad(t, entry.addr, id, 4)
		waitFor(t, 10*time.Second, "load running", func() error {
			if l.ok.Load() < 20 {
				return fmt.Errorf("%d answers", l.ok.Load())
			}
			return nil
		})
		l.markNow()
		if err := victim.cmd.Process.Signal(round.sig); err != nil {
			t.Fatal(err)
		}
		select {
		case <-victim.done:
		case <-time.After(40 * time.Second):
			t.Fatalf("%s did not exit after %v", victim.id, round.sig)
		}
		if round.kind == "term" && victim.err != nil {
			t.Errorf("%s exited with %v after SIGTERM:\n%s", victim.id, victim.err, victim.stderr)
		}
		// Requests succeed again; the longest gap is the unavailability.
		waitFor(t, 20*time.Second, "requests to "+id+" succeeding again", func() error {
			before := l.ok.Load()
			time.Sleep(300 * time.Millisecond)
			if l.ok.Load() == before {
				return fmt.Errorf("no answer for %v", l.gap())
			}
			return nil
		})
		time.Sleep(time.Second)
		l.end()
		t.Logf("%s of %s (owner of busy %s): unavailable %v, %d requests failed, %d answered",
			round.kind, victim.id, id, l.longest.Round(time.Millisecond), l.failed.Load(), l.ok.Load())
		if round.kind == "term" && strings.Contains(victim.stderr.String(), "vplms_handed_over=0") {
			t.Errorf("%s handed no vPLM over:\n%s", victim.id, victim.stderr)
		}
		// Restart it: it rejoins under a new member id.
		extra := []string{"--node-id", victim.id, "--raft-addr", victim.raft, "--join", entry.addr}
		victim.server = startServerWith(t, bin, victim.data, victim.addr, extra...)
		for _, n := range nodes {
			waitMembers(t, n.addr, 3)
		}
	}

	// No acknowledged create or train lost: every node lists them all, at
	// the trained version.
	for _, n := range nodes {
		c, _ := api.NewClient(n.addr)
		waitFor(t, 20*time.Second, "every create on "+n.id, func() error {
			list, err := c.List(ctx, "", "", 1000)
			if err != nil {
				return err
			}
			if len(list.Models) != models {
				return fmt.Errorf("%d of %d vPLMs", len(list.Models), models)
			}
			m, err := c.Get(ctx, "g000")
			if err != nil {
				return err
			}
			if m.Version < 2 {
				return fmt.Errorf("g000 at version %d", m.Version)
			}
			return nil
		})
		for _, id := range created[:6] {
			if _, err := c.Classify(ctx, id, []string{"fine"}); err != nil {
				t.Fatalf("%s via %s: %v", id, n.id, err)
			}
		}
	}
}

// TestGossipRemovedRestarts pauses a node (SIGSTOP) past the failure
// timeout: its peers declare it dead and block its member id. Resumed, it
// learns it was removed and restarts with a new identity, instead of
// lingering, and serves again.
func TestGossipRemovedRestarts(t *testing.T) {
	bin := buildSmile(t)
	nodes := startCluster(t, bin, 3)
	before := waitMembers(t, nodes[0].addr, 3)
	victim := nodes[2]
	oldID := ""
	for _, n := range before {
		if n.Node == victim.id {
			oldID = n.MemberID
		}
	}
	if err := victim.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, nodes[0].addr, 2)
	time.Sleep(time.Second)
	if err := victim.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, victim.id+" back under a new member id", func() error {
		ns, err := nodesOf(t.Context(), nodes[0].addr)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if n.Node == victim.id && n.State == "alive" && n.MemberID != oldID {
				return nil
			}
		}
		return fmt.Errorf("%+v", ns)
	})
	if !strings.Contains(victim.stderr.String(), "restarting the node with a new identity") {
		t.Errorf("no restart in %s's log:\n%s", victim.id, victim.stderr)
	}
	c, _ := api.NewClient(victim.addr)
	if _, err := c.Create(t.Context(), api.CreateModelRequest{ID: "after-pause", Task: "classify", Labels: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Classify(t.Context(), "after-pause", []string{"x"}); err != nil {
		t.Fatal(err)
	}
}
