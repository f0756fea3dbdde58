package main

// `smile bench cluster`: what spreading vPLMs over a cluster costs, and
// how long a vPLM is unavailable when its node dies or leaves.
//
// Choices, and why:
//
//   - Real processes. Each node is `smile serve` of this very binary
//     (os.Executable) on loopback, in a data directory of its own under one
//     temp dir, whose backbones/ and blobs/ are links to --data-dir's: no
//     node downloads anything, and no node shares a catalog, Raft log or
//     params blob with another. Node n1 starts the cluster; the others
//     start together and --join it. The cluster is up when n1's
//     GET /v1/nodes lists every node alive.
//   - Throughput, N=1 against N=3, the same load: on each cluster M
//     classify vPLMs (2 labels, the server's default adapter) are created
//     through the API and each classified once (activation, params
//     resident); then C clients in a closed loop, each request one short
//     imdb sentence (benchdata.IMDB) to a uniformly random vPLM, sent to
//     the nodes' APIs in turn (round-robin): at N=3 two requests in three
//     reach a node that does not host their vPLM and are forwarded inside
//     the cluster. Every node's client is plain api.NewClient(addr), one
//     endpoint, so a slow or failed answer shows as what it is instead of
//     being retried on another node. All nodes share this machine's
//     cores, so N=3 has no more compute than N=1: the ratio of the two is
//     the price of routing and of three processes batching apart, not a
//     speed-up. To tell those two apart, N=3 runs a second time with each
//     request sent to its vPLM's owner (cluster_owner: nothing forwarded).
//   - Both clusters run side by side, idle but for the one measured, and
//     the S seconds of each run are split into rounds taken in turns, the
//     order rotated each round (as bench serve does): drift of a shared
//     machine lands on every run alike instead of on whichever ran last.
//   - Failover, on the 3-node cluster once the 1-node one is gone: a vPLM's
//     owner is asked of GET /v1/nodes?vplm=ID, and a few closed-loop
//     clients classify that vPLM through the two other nodes (one client
//     per node, a 5 s deadline per request). Once it answers, the owner
//     gets SIGKILL (kind kill); unavailable_ms is the longest interval of
//     [signal, signal + window] in which no request to the vPLM succeeded,
//     counted from the signal, so an owner that never recovers reads as
//     the whole window. The killed node is then restarted on its data
//     directory (same node id, API address and --join, as an operator
//     would) and, once the cluster has three alive nodes again, the same
//     is measured with SIGTERM (kind term), where the node hands its vPLMs
//     over before it exits; then with SIGSTOP (kind stop), where the owner
//     hangs with its connections open, as a machine that lost power or its
//     network would, and only gossip's failure detector finds it. A
//     request's own latency is part of the gap: an answer in flight counts
//     when it arrives.
//   - Clean-up on every path: the children run in process groups of
//     their own (a Ctrl-C at the terminal reaches only the bench, which
//     then ends them), every child is SIGKILLed and waited for when the
//     bench ends, and the temp dir is removed after that.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/smile-vplm/smile/api"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/internal/benchdata"
	"github.com/smile-vplm/smile/internal/zoo"
)

// cbProfile sizes one run of `bench cluster`.
type cbProfile struct {
	vplms, clients int
	seconds        time.Duration // each throughput run, in all
	rounds         int           // the runs' turns
	window         time.Duration // failover: how long after the signal is watched
	lead           time.Duration // failover: driving before the signal
	drivers        int           // failover: closed-loop clients
	quick          bool
}

func newCBProfile(quick bool) cbProfile {
	p := cbProfile{vplms: 300, clients: 32, seconds: 15 * time.Second, rounds: 5, window: 8 * time.Second, lead: time.Second, drivers: 4}
	if quick {
		p.vplms, p.clients, p.seconds, p.rounds, p.lead, p.quick = 30, 8, 3*time.Second, 3, 500*time.Millisecond, true
		p.window = 4 * time.Second // past gossip's ~3 s verdict on a stopped node
	}
	return p
}

// Bounds of the waits on the children.
const (
	cbStartTimeout   = 60 * time.Second // a node printing its serving line
	cbClusterTimeout = 30 * time.Second // every node alive
	cbExitTimeout    = 20 * time.Second // a node leaving on SIGTERM (its --leave-timeout is 10 s)
	cbRequestTimeout = 30 * time.Second // a throughput request
	cbFailoverDL     = 5 * time.Second  // a failover request
)

type clusterLine struct {
	Bench    string  `json:"bench"`
	Nodes    int     `json:"nodes"`
	VPLMs    int     `json:"vplms"`
	Clients  int     `json:"clients"`
	Seconds  float64 `json:"seconds"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	SeqPerS  float64 `json:"seq_per_s"`
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	// ThreadsPerNode is each node's --threads.
	ThreadsPerNode int `json:"threads_per_node"`
	// RoundSeqPerS are the rounds' seq/s: the spread the machine's noise leaves.
	RoundSeqPerS []float64 `json:"round_seq_per_s"`
	Quick        bool      `json:"quick"`
	Date         string    `json:"date"`
	Machine      string    `json:"machine"`
}

type clusterOverheadLine struct {
	Bench    string  `json:"bench"`
	RatioSeq float64 `json:"ratio_seq_3_vs_1"`
	Note     string  `json:"note"`
	// RatioOwner is cluster_owner's seq/s over N=1's: three nodes, no
	// request forwarded, so what is left of the loss is that of three
	// processes batching apart on the same cores.
	RatioOwner float64 `json:"ratio_seq_3_owner_vs_1"`
	SeqPerS1   float64 `json:"seq_per_s_1"`
	SeqPerS3   float64 `json:"seq_per_s_3"`
	Cores      int     `json:"cores"`
}

type failoverLine struct {
	Bench          string  `json:"bench"`
	Kind           string  `json:"kind"`
	UnavailableMS  float64 `json:"unavailable_ms"`
	FailedRequests int     `json:"failed_requests"`
	Owner          string  `json:"owner"`
	OwnerRaft      string  `json:"owner_raft"` // the owner's Raft role when signalled
	NewOwner       string  `json:"new_owner"`  // the vPLM's host after the window
	VPLM           string  `json:"vplm"`
	Via            string  `json:"via"`      // the nodes the requests went to
	Requests       int     `json:"requests"` // answered in the window
	WindowMS       float64 `json:"window_ms"`
	OwnerExitMS    float64 `json:"owner_exit_ms"` // signal to the owner's exit (-1: still running cbExitTimeout after the window)
	Quick          bool    `json:"quick"`
	Date           string  `json:"date"`
}

func benchCluster(ctx context.Context, g *globals, o *benchOpts, w io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// The nodes find the backbone through links to this data directory:
	// it must be there before they start.
	z, err := g.zoo()
	if err != nil {
		return err
	}
	if _, err := z.Ensure(ctx, zoo.DefaultModel, stderrProgress); err != nil {
		return err
	}
	src, err := filepath.Abs(g.dataDir) // the links must hold from any directory
	if err != nil {
		return err
	}
	env := cbEnv{exe: exe, src: src, args: []string{"--backend", g.backend}, threads: g.threads, logw: os.Stderr}
	rep := &cbReport{w: w, json: o.asJSON}
	err = runClusterBench(ctx, env, newCBProfile(o.quick), rep)
	return errors.Join(err, rep.flush())
}

// cbEnv is what the children are started from.
type cbEnv struct {
	exe  string   // the smile binary
	src  string   // the data directory whose backbones/ and blobs/ they read
	args []string // added to every `smile serve`
	// threads is --threads: 0 gives each node of an N-node cluster its
	// share of the cores, max(1, cores/N), so nodes sharing a machine do
	// not oversubscribe it.
	threads int
	logw    io.Writer
	tmp     string // where the throwaway data directories go ("": the system's temp directory)
}

func (e cbEnv) logf(format string, a ...any) {
	fmt.Fprintf(e.logw, "bench cluster: %s\n", fmt.Sprintf(format, a...))
}

// runClusterBench runs the throughput runs at N=1 and N=3, then the two
// failovers on the 3-node cluster.
func runClusterBench(ctx context.Context, env cbEnv, p cbProfile, rep *cbReport) error {
	root, err := os.MkdirTemp(env.tmp, "smile-bench-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	texts := benchdata.IMDB()
	var cs []*cbCluster
	defer func() {
		for _, c := range cs {
			c.close()
		}
	}()
	for _, n := range []int{1, 3} {
		c, err := startCBCluster(ctx, env, root, n)
		if err != nil {
			return fmt.Errorf("bench cluster: starting %d nodes: %w", n, err)
		}
		cs = append(cs, c)
		if err := c.prepare(ctx, p, texts); err != nil {
			return fmt.Errorf("bench cluster: %d nodes: %w", n, err)
		}
	}
	c1, c3 := cs[0], cs[1]
	owners, err := c3.owners(ctx)
	if err != nil {
		return fmt.Errorf("bench cluster: %w", err)
	}
	roundRobin := func(c *cbCluster) func(uint64, int) *cbNode {
		return func(i uint64, _ int) *cbNode { return c.nodes[i%uint64(len(c.nodes))] }
	}
	runs := []*cbRun{
		{bench: "cluster", c: c1, route: roundRobin(c1)},
		{bench: "cluster", c: c3, route: roundRobin(c3)},
		{bench: "cluster_owner", c: c3, route: func(_ uint64, vplm int) *cbNode { return owners[vplm] }},
	}
	per := p.seconds / time.Duration(p.rounds)
	for turn := range p.rounds {
		for k := range runs {
			r := runs[(k+turn)%len(runs)]
			if err := r.c.round(ctx, p, texts, r, per, uint64(turn)); err != nil {
				return fmt.Errorf("bench cluster: %s, %d nodes: %w", r.bench, len(r.c.nodes), err)
			}
		}
		env.logf("round %d/%d done", turn+1, p.rounds)
	}
	c1.close() // its idle CPU stays out of the failovers
	for _, r := range runs {
		if err := rep.add(r.line(p)); err != nil {
			return err
		}
	}
	seq1, seq3, seqOwner := runs[0].seqPerS(), runs[1].seqPerS(), runs[2].seqPerS()
	if err := rep.add(clusterOverheadLine{Bench: "cluster_overhead", RatioSeq: round(seq3/seq1, 3),
		Note:       fmt.Sprintf("%d cores: both runs share them; the ratio measures routing overhead, not speed-up", runtime.NumCPU()),
		RatioOwner: round(seqOwner/seq1, 3), SeqPerS1: round(seq1, 2), SeqPerS3: round(seq3, 2), Cores: runtime.NumCPU()}); err != nil {
		return err
	}
	ids := c3.ids
	kill, err := c3.failover(ctx, p, "kill", syscall.SIGKILL, ids[0], texts)
	if err != nil {
		return fmt.Errorf("bench cluster: failover kill: %w", err)
	}
	if err := rep.add(kill); err != nil {
		return err
	}
	if err := c3.restart(ctx, kill.Owner); err != nil {
		return fmt.Errorf("bench cluster: restarting %s: %w", kill.Owner, err)
	}
	term, err := c3.failover(ctx, p, "term", syscall.SIGTERM, ids[len(ids)/2], texts)
	if err != nil {
		return fmt.Errorf("bench cluster: failover term: %w", err)
	}
	if err := rep.add(term); err != nil {
		return err
	}
	if err := c3.restart(ctx, term.Owner); err != nil {
		return fmt.Errorf("bench cluster: restarting %s: %w", term.Owner, err)
	}
	// SIGSTOP: the owner hangs with its connections open, as a machine
	// that lost power or its network would: gossip finds it.
	stop, err := c3.failover(ctx, p, "stop", syscall.SIGSTOP, ids[len(ids)/4], texts)
	if err != nil {
		return fmt.Errorf("bench cluster: failover stop: %w", err)
	}
	return rep.add(stop)
}

// cbNode is one `smile serve` child.
type cbNode struct {
	id, data string
	addr     string // HTTP API, host:port, once it served
	join     []string
	cmd      *exec.Cmd
	out      *cbOutput
	done     chan struct{} // closed once the process has exited
	exitedAt time.Time     // set before done closes
	err      error         // the exit status, set before done closes
	api      *api.Client
}

func (nd *cbNode) running() bool {
	select {
	case <-nd.done:
		return false
	default:
		return true
	}
}

// cbCluster is a loopback cluster of children and their clients.
type cbCluster struct {
	env     cbEnv
	threads int // each node's --threads
	nodes   []*cbNode
	http    *http.Client
	ids     []string // the vPLMs created
}

// startCBCluster starts n nodes in fresh data directories under root: n1
// first, then the others at once, joining it.
func startCBCluster(ctx context.Context, env cbEnv, root string, n int) (c *cbCluster, err error) {
	dir, err := os.MkdirTemp(root, fmt.Sprintf("%dnodes-", n))
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1024 // every closed-loop client keeps its connection
	c = &cbCluster{env: env, threads: env.threads, http: &http.Client{Transport: tr}}
	if c.threads == 0 {
		c.threads = max(1, runtime.NumCPU()/n)
	}
	defer func() {
		if err != nil && c != nil {
			c.close()
		}
	}()
	t0 := time.Now()
	for i := range n {
		nd := &cbNode{id: fmt.Sprintf("n%d", i+1), data: filepath.Join(dir, fmt.Sprintf("n%d", i+1))}
		if err := os.MkdirAll(nd.data, 0o755); err != nil {
			return c, err
		}
		for _, sub := range []string{"backbones", "blobs"} {
			if _, err := os.Stat(filepath.Join(env.src, sub)); err != nil {
				continue // blobs/ appears with the first blob stored
			}
			if err := os.Symlink(filepath.Join(env.src, sub), filepath.Join(nd.data, sub)); err != nil {
				return c, err
			}
		}
		c.nodes = append(c.nodes, nd)
	}
	if err := c.spawn(c.nodes[0], ""); err != nil {
		return c, err
	}
	if err := c.serving(ctx, c.nodes[0]); err != nil {
		return c, err
	}
	for _, nd := range c.nodes[1:] {
		nd.join = []string{c.nodes[0].addr}
		if err := c.spawn(nd, ""); err != nil {
			return c, err
		}
	}
	for _, nd := range c.nodes[1:] {
		if err := c.serving(ctx, nd); err != nil {
			return c, err
		}
	}
	if err := c.waitAlive(ctx, c.nodes[:1], n); err != nil {
		return c, err
	}
	env.logf("%d nodes up in %v", n, time.Since(t0).Round(time.Millisecond))
	return c, nil
}

// spawn starts nd's process on addr ("": a free port); serving waits for it.
func (c *cbCluster) spawn(nd *cbNode, addr string) error {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	args := []string{"serve", "--data-dir", nd.data, "--addr", addr, "--node-id", nd.id,
		"--raft-addr", "127.0.0.1:0", "--log-level", "warn"}
	if len(nd.join) > 0 {
		args = append(args, "--join", strings.Join(nd.join, ","))
	}
	nd.out = newCBOutput()
	nd.done = make(chan struct{})
	args = append(args, "--threads", strconv.Itoa(c.threads))
	nd.cmd = exec.Command(c.env.exe, append(args, c.env.args...)...)
	nd.cmd.Env = append(os.Environ(), "SMILE_DATA_DIR="+nd.data)
	nd.cmd.Stdout, nd.cmd.Stderr = nd.out, nd.out
	nd.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := nd.cmd.Start(); err != nil {
		close(nd.done)
		return fmt.Errorf("starting node %s: %w", nd.id, err)
	}
	go func(cmd *exec.Cmd, done chan struct{}) {
		err := cmd.Wait()
		nd.err, nd.exitedAt = err, time.Now()
		close(done)
	}(nd.cmd, nd.done)
	return nil
}

// serving waits for nd's serving line and makes its client.
func (c *cbCluster) serving(ctx context.Context, nd *cbNode) error {
	t := time.NewTimer(cbStartTimeout)
	defer t.Stop()
	select {
	case <-nd.out.ready:
	case <-nd.done:
		return fmt.Errorf("node %s exited (%v) before serving; its output ends:\n%s", nd.id, nd.err, nd.out.tail())
	case <-t.C:
		return fmt.Errorf("node %s not serving after %v; its output ends:\n%s", nd.id, cbStartTimeout, nd.out.tail())
	case <-ctx.Done():
		return ctx.Err()
	}
	nd.addr = nd.out.address()
	var err error
	if nd.api, err = api.NewClient(nd.addr); err != nil {
		return err
	}
	nd.api.HTTP = c.http
	return nil
}

// close kills every child still running and waits for it.
func (c *cbCluster) close() {
	for _, nd := range c.nodes {
		if nd.cmd != nil && nd.running() {
			_ = nd.cmd.Process.Kill()
		}
	}
	for _, nd := range c.nodes {
		if nd.cmd != nil {
			<-nd.done
		}
	}
	c.http.CloseIdleConnections()
}

// nodes asks nd for the cluster's nodes as it sees them.
func (c *cbCluster) nodeList(ctx context.Context, nd *cbNode) ([]cluster.NodeReport, error) {
	var out struct {
		Nodes []cluster.NodeReport `json:"nodes"`
	}
	return out.Nodes, c.fetch(ctx, nd, "/v1/nodes", &out)
}

// owner asks nd which node hosts vPLM id.
func (c *cbCluster) owner(ctx context.Context, nd *cbNode, id string) (cluster.NodeReport, error) {
	var out cluster.NodeReport
	return out, c.fetch(ctx, nd, "/v1/nodes?vplm="+id, &out)
}

func (c *cbCluster) fetch(ctx context.Context, nd *cbNode, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nd.addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s on %s: %s: %s", path, nd.id, resp.Status, strings.TrimSpace(string(body)))
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(body, out)
}

// waitAlive waits until each of via sees want distinct nodes alive.
func (c *cbCluster) waitAlive(ctx context.Context, via []*cbNode, want int) error {
	deadline := time.Now().Add(cbClusterTimeout)
	var last error
	for {
		last = nil
		for _, v := range via {
			ns, err := c.nodeList(ctx, v)
			alive := map[string]bool{}
			for _, n := range ns {
				if n.State == "alive" {
					alive[n.Node] = true
				}
			}
			if err == nil && len(alive) != want {
				err = fmt.Errorf("%s sees %d of %d nodes alive: %+v", v.id, len(alive), want, ns)
			}
			last = cmpErr(last, err)
		}
		if last == nil {
			return nil
		}
		for _, nd := range via {
			if !nd.running() {
				return fmt.Errorf("node %s exited (%v); its output ends:\n%s", nd.id, nd.err, nd.out.tail())
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not formed after %v: %w", cbClusterTimeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// cmpErr is a if set, else b.
func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// running lists the nodes whose process runs.
func (c *cbCluster) running() []*cbNode {
	var out []*cbNode
	for _, nd := range c.nodes {
		if nd.running() {
			out = append(out, nd)
		}
	}
	return out
}

func (c *cbCluster) byID(id string) *cbNode {
	for _, nd := range c.nodes {
		if nd.id == id {
			return nd
		}
	}
	return nil
}

// prepare creates p.vplms vPLMs and has each answer once, so that their
// actors are active and params resident before the clock starts.
func (c *cbCluster) prepare(ctx context.Context, p cbProfile, texts []string) error {
	n := len(c.nodes)
	c.ids = make([]string, p.vplms)
	each := make([]request, p.vplms)
	for i := range c.ids {
		c.ids[i] = fmt.Sprintf("b%03d", i)
		each[i] = request{vplm: i, text: texts[i%len(texts)]}
	}
	var firstErr atomic.Value
	call := func(what string, fn func(ctx context.Context, nd *cbNode, id, text string) error) error {
		_, bad, _ := closedLoop(ctx, p.clients, each, time.Time{}, func(ctx context.Context, q request) error {
			rctx, cancel := context.WithTimeout(ctx, cbRequestTimeout)
			defer cancel()
			err := fn(rctx, c.nodes[q.vplm%n], c.ids[q.vplm], q.text)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
			return err
		})
		if err := ctx.Err(); err != nil {
			return err
		}
		if bad > 0 {
			err, _ := firstErr.Load().(error)
			return fmt.Errorf("%s: %d of %d failed; first: %w", what, bad, p.vplms, err)
		}
		return nil
	}
	t0 := time.Now()
	err := call("creates", func(ctx context.Context, nd *cbNode, id, _ string) error {
		_, err := nd.api.Create(ctx, api.CreateModelRequest{ID: id, Task: "classify", Labels: []string{"neg", "pos"}})
		return err
	})
	if err == nil {
		err = call("activations", func(ctx context.Context, nd *cbNode, id, text string) error {
			_, err := nd.api.Classify(ctx, id, []string{text})
			return err
		})
	}
	if err == nil {
		c.env.logf("%d nodes: %d vPLMs created and active in %v", n, p.vplms, time.Since(t0).Round(time.Millisecond))
	}
	return err
}

// owners maps each vPLM (by index) to the node that hosts it.
func (c *cbCluster) owners(ctx context.Context) ([]*cbNode, error) {
	out := make([]*cbNode, len(c.ids))
	for i, id := range c.ids {
		r, err := c.owner(ctx, c.nodes[0], id)
		if err != nil {
			return nil, err
		}
		if out[i] = c.byID(r.Node); out[i] == nil {
			return nil, fmt.Errorf("vPLM %s: owner %q is no node of the bench", id, r.Node)
		}
	}
	return out, nil
}

// cbRun is one throughput run, summed over its rounds.
type cbRun struct {
	bench string
	c     *cbCluster
	route func(i uint64, vplm int) *cbNode // the node of the i-th request, to vPLM vplm
	done  int
	bad   int
	took  time.Duration
	lats  []time.Duration
	perS  []float64 // each round's seq/s
}

func (r *cbRun) seqPerS() float64 { return float64(r.done) / r.took.Seconds() }

func (r *cbRun) line(p cbProfile) clusterLine {
	slices.Sort(r.lats)
	return clusterLine{Bench: r.bench, Nodes: len(r.c.nodes), VPLMs: p.vplms, Clients: p.clients, Seconds: p.seconds.Seconds(),
		Requests: r.done, Errors: r.bad, SeqPerS: round(r.seqPerS(), 2), P50MS: ms(pct(r.lats, 0.5)), P99MS: ms(pct(r.lats, 0.99)),
		ThreadsPerNode: r.c.threads, RoundSeqPerS: r.perS, Quick: p.quick, Date: time.Now().UTC().Format(time.RFC3339), Machine: machineName()}
}

// round runs p.clients closed-loop clients for d, each request to a
// random vPLM, sent where r routes it, and adds what it measured to r.
func (c *cbCluster) round(ctx context.Context, p cbProfile, texts []string, r *cbRun, d time.Duration, seed uint64) error {
	// A stream no client can exhaust in the time (1,000 requests a second
	// each, far above what two cores answer).
	rng := rand.New(rand.NewPCG(seed, 0xc1))
	stream := make([]request, p.clients*int(d.Seconds()+1)*1000)
	for i := range stream {
		stream[i] = request{vplm: rng.IntN(p.vplms), text: texts[rng.IntN(len(texts))]}
	}
	var (
		next     atomic.Uint64
		mu       sync.Mutex
		lats     []time.Duration
		firstErr atomic.Value
	)
	stopAt := time.Now().Add(d)
	done, bad, elapsed := closedLoop(ctx, p.clients, stream, stopAt, func(ctx context.Context, q request) error {
		nd := r.route(next.Add(1), q.vplm)
		rctx, cancel := context.WithTimeout(ctx, cbRequestTimeout)
		defer cancel()
		t0 := time.Now()
		_, err := nd.api.Classify(rctx, c.ids[q.vplm], []string{q.text})
		if now := time.Now(); err == nil && !now.After(stopAt) {
			mu.Lock()
			lats = append(lats, now.Sub(t0))
			mu.Unlock()
		} else if err != nil {
			firstErr.CompareAndSwap(nil, err)
		}
		return err
	})
	if err := ctx.Err(); err != nil {
		return err
	}
	if done == 0 {
		err, _ := firstErr.Load().(error)
		return fmt.Errorf("no request answered in %v (%d failed; first: %w)", d, bad, err)
	}
	if bad > 0 {
		c.env.logf("%s, %d nodes: %d requests failed; first: %v", r.bench, len(c.nodes), bad, firstErr.Load())
	}
	if int(next.Load()) >= len(stream) {
		c.env.logf("%s, %d nodes: the request stream ran out before %v", r.bench, len(c.nodes), d)
	}
	r.done, r.bad, r.took = r.done+done, r.bad+bad, r.took+elapsed
	r.lats = append(r.lats, lats...)
	r.perS = append(r.perS, round(float64(done)/elapsed.Seconds(), 2))
	return nil
}

// failover drives vPLM id through the nodes that do not host it, sends
// sig to the one that does, and measures the longest time without an
// answer.
func (c *cbCluster) failover(ctx context.Context, p cbProfile, kind string, sig syscall.Signal, id string, texts []string) (failoverLine, error) {
	up := c.running()
	if len(up) < 2 {
		return failoverLine{}, fmt.Errorf("%d nodes running, want at least 2", len(up))
	}
	own, err := c.owner(ctx, up[0], id)
	if err != nil {
		return failoverLine{}, err
	}
	owner := c.byID(own.Node)
	if owner == nil || !owner.running() {
		return failoverLine{}, fmt.Errorf("vPLM %s: owner %+v is not a running node of the bench", id, own)
	}
	// The ?vplm= answer does not say the Raft role; the list does.
	ns, err := c.nodeList(ctx, up[0])
	if err != nil {
		return failoverLine{}, err
	}
	for _, n := range ns {
		if n.Node == own.Node && n.State == "alive" {
			own.Raft = n.Raft
		}
	}
	var via []*cbNode
	var names []string
	for _, nd := range up {
		if nd != owner {
			via, names = append(via, nd), append(names, nd.id)
		}
	}
	type answer struct {
		at time.Time
		ok bool
	}
	var (
		mu      sync.Mutex
		answers []answer
		okCount atomic.Int64
		wg      sync.WaitGroup
	)
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	for k := range p.drivers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := via[k%len(via)].api
			for i := k; dctx.Err() == nil; i += p.drivers {
				rctx, cancel := context.WithTimeout(dctx, cbFailoverDL)
				_, err := cl.Classify(rctx, id, []string{texts[i%len(texts)]})
				cancel()
				if dctx.Err() != nil {
					return // cut short by the end of the window: not an answer
				}
				mu.Lock()
				answers = append(answers, answer{time.Now(), err == nil})
				mu.Unlock()
				if err == nil {
					okCount.Add(1)
				}
			}
		}()
	}
	ended := func() {
		stop()
		wg.Wait()
	}
	// Drive until it answers steadily, then signal.
	time.Sleep(p.lead)
	deadline := time.Now().Add(cbClusterTimeout)
	for okCount.Load() < int64(2*p.drivers) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			ended()
			return failoverLine{}, cmpErr(ctx.Err(), fmt.Errorf("vPLM %s answered %d times through %v before the signal", id, okCount.Load(), names))
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.env.logf("failover %s: vPLM %s on %s (raft %s), driven through %v; signalling", kind, id, own.Node, own.Raft, names)
	t0 := time.Now()
	if err := owner.cmd.Process.Signal(sig); err != nil {
		ended()
		return failoverLine{}, err
	}
	select {
	case <-time.After(p.window):
	case <-ctx.Done():
	}
	ended()
	if err := ctx.Err(); err != nil {
		return failoverLine{}, err
	}
	end := t0.Add(p.window)
	var oks []time.Time
	failedN := 0
	for _, a := range answers {
		if a.at.Before(t0) || a.at.After(end) {
			continue
		}
		if a.ok {
			oks = append(oks, a.at)
		} else {
			failedN++
		}
	}
	exitMS := -1.0
	if sig == syscall.SIGSTOP {
		// A stopped process never exits: end it (SIGKILL works on it).
		_ = owner.cmd.Process.Kill()
	}
	select {
	case <-owner.done:
		exitMS = ms(owner.exitedAt.Sub(t0))
		if sig == syscall.SIGTERM && owner.err != nil {
			c.env.logf("failover %s: %s exited with %v; its output ends:\n%s", kind, owner.id, owner.err, owner.out.tail())
		}
	case <-time.After(cbExitTimeout):
		_ = owner.cmd.Process.Kill()
		<-owner.done
		c.env.logf("failover %s: %s still running %v after the window; killed", kind, owner.id, cbExitTimeout)
	}
	// Where it went: a check that the owner did go, and with it the vPLM.
	moved, err := c.owner(ctx, via[0], id)
	if err != nil {
		return failoverLine{}, fmt.Errorf("vPLM %s after the signal: %w", id, err)
	}
	gap := unavailableFor(t0, end, oks)
	return failoverLine{Bench: "failover", Kind: kind, UnavailableMS: ms(gap), FailedRequests: failedN, Owner: own.Node,
		OwnerRaft: own.Raft, NewOwner: moved.Node, VPLM: id, Via: strings.Join(names, ","), Requests: len(oks), WindowMS: ms(p.window),
		OwnerExitMS: exitMS, Quick: p.quick, Date: time.Now().UTC().Format(time.RFC3339)}, nil
}

// unavailableFor is the longest interval of [from, to] holding no
// successful answer; oks are the answers' times, in any order.
func unavailableFor(from, to time.Time, oks []time.Time) time.Duration {
	s := slices.Clone(oks)
	slices.SortFunc(s, time.Time.Compare)
	prev, worst := from, time.Duration(0)
	for _, t := range s {
		if t.Before(from) || t.After(to) {
			continue
		}
		worst = max(worst, t.Sub(prev))
		prev = t
	}
	return max(worst, to.Sub(prev))
}

// restart starts node id again on its data directory and API address,
// joining the nodes that run, and waits for three alive nodes.
func (c *cbCluster) restart(ctx context.Context, id string) error {
	nd := c.byID(id)
	if nd == nil || nd.running() {
		return fmt.Errorf("node %s: nothing to restart", id)
	}
	t0 := time.Now()
	up := c.running()
	nd.join = nil
	for _, o := range up {
		nd.join = append(nd.join, o.addr)
	}
	if err := c.spawn(nd, nd.addr); err != nil {
		return err
	}
	if err := c.serving(ctx, nd); err != nil {
		return err
	}
	if err := c.waitAlive(ctx, append(up[:1:1], nd), len(c.nodes)); err != nil {
		return err
	}
	c.env.logf("%s restarted and the cluster whole again in %v", id, time.Since(t0).Round(time.Millisecond))
	return nil
}

// cbOutput keeps the tail of a child's output and the address its
// "serving" line names.
type cbOutput struct {
	mu    sync.Mutex
	buf   []byte
	addr  string
	ready chan struct{}
}

const (
	cbServing = "smile: serving http://"
	cbTailMax = 64 << 10
)

func newCBOutput() *cbOutput { return &cbOutput{ready: make(chan struct{})} }

func (o *cbOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, p...)
	if o.addr == "" {
		if _, rest, ok := strings.Cut(string(o.buf), cbServing); ok {
			if a, _, ok := strings.Cut(rest, " "); ok {
				o.addr = a
				close(o.ready)
			}
		}
	}
	if len(o.buf) > 2*cbTailMax {
		o.buf = slices.Clone(o.buf[len(o.buf)-cbTailMax:])
	}
	return len(p), nil
}

func (o *cbOutput) address() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.addr
}

// tail is the output's last 40 lines.
func (o *cbOutput) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(o.buf), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// cbReport writes the lines as JSON at once, or keeps them for a table.
type cbReport struct {
	w     io.Writer
	json  bool
	lines []any
}

func (r *cbReport) add(line any) error {
	if r.json {
		return emit(r.w, line)
	}
	r.lines = append(r.lines, line)
	return nil
}

// flush writes the table of what was kept (what ran, when a run failed).
func (r *cbReport) flush() error {
	if r.json || len(r.lines) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(r.w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "nodes\tvPLMs\tclients\tseconds\trequests\terrors\tseq/s\tp50 ms\tp99 ms\t")
	for _, l := range r.lines {
		if c, ok := l.(clusterLine); ok {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%g\t%d\t%d\t%.1f\t%.1f\t%.1f\t\n", c.Nodes, c.VPLMs, c.Clients, c.Seconds, c.Requests, c.Errors, c.SeqPerS, c.P50MS, c.P99MS)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range r.lines {
		if o, ok := l.(clusterOverheadLine); ok {
			fmt.Fprintf(r.w, "\n3 nodes / 1 node, seq/s: %.3f (%s)\n\n", o.RatioSeq, o.Note)
		}
	}
	tw = tabwriter.NewWriter(r.w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "failover\towner\traft\tnew owner\tunavailable ms\tfailed requests\tanswered\towner exit ms\t")
	for _, l := range r.lines {
		if f, ok := l.(failoverLine); ok {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f\t%d\t%d\t%.1f\t\n", f.Kind, f.Owner, f.OwnerRaft, f.NewOwner, f.UnavailableMS, f.FailedRequests, f.Requests, f.OwnerExitMS)
		}
	}
	return tw.Flush()
}
