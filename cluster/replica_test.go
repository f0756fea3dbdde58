package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/storage"
)

// replicaNode is one member of a test cluster: a real Badger store on disk,
// a Raft TCP transport on loopback and the replica's internal routes on a
// real HTTP server. The listener exists before the replica starts (peers
// push blobs and forward writes to it), and the served replica can be
// swapped, so a node can restart on the same addresses and store.
type replicaNode struct {
	t     *testing.T
	cfg   RaftConfig
	store *storage.Store
	cat   *storage.Catalog
	srv   *http.Server
	cur   atomic.Pointer[Replica]
}

// replicaOpts tweak a node's RaftConfig.
type replicaOpts struct {
	join      string // API address of a member, "" to bootstrap
	fixedBind bool   // reserve a Raft port, for a node that restarts
	maxVoters int
	replicas  int
	trailing  uint64
	// dir, when set, holds an existing Badger store (seeded by the test).
	dir string
}

// testLog is a slog logger that writes to t while the test runs and
// drops what comes after (Raft's goroutines stop in cleanup).
func testLog(t *testing.T) *slog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testLogWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// newReplicaNode opens the node's store and HTTP listener; start starts
// its replica.
func newReplicaNode(t *testing.T, name string, o replicaOpts) *replicaNode {
	t.Helper()
	dir := o.dir
	if dir == "" {
		dir = t.TempDir()
	}
	store, err := storage.Open(storage.DefaultOptions(filepath.Join(dir, "db")))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	n := &replicaNode{t: t, store: store, cat: storage.NewCatalog(store)}
	n.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rp := n.cur.Load()
		if rp == nil {
			http.Error(w, "replica not started", http.StatusServiceUnavailable)
			return
		}
		rp.Handler().ServeHTTP(w, req)
	})}
	go n.srv.Serve(ln)
	cfg := DefaultRaftConfig()
	cfg.ID = name
	cfg.Bind = "127.0.0.1:0"
	if o.fixedBind {
		cfg.Bind = testenv.FreeAddr(t)
	}
	cfg.APIAddr = ln.Addr().String()
	cfg.Dir = filepath.Join(dir, "raft")
	cfg.Join = o.join
	cfg.HeartbeatTimeout = 50 * time.Millisecond
	cfg.ElectionTimeout = 50 * time.Millisecond
	cfg.LeaderLeaseTimeout = 25 * time.Millisecond
	cfg.ApplyTimeout = 5 * time.Second
	if o.maxVoters > 0 {
		cfg.MaxVoters = o.maxVoters
	}
	if o.replicas > 0 {
		cfg.Replicas = o.replicas
	}
	if o.trailing > 0 {
		cfg.TrailingLogs = o.trailing
	}
	cfg.Log = testLog(t).With("node", name)
	n.cfg = cfg
	t.Cleanup(func() {
		n.stop()
		n.srv.Close()
		if err := n.store.Close(); err != nil {
			t.Errorf("%s: closing the store: %v", name, err)
		}
	})
	return n
}

func (n *replicaNode) start(ctx context.Context) *Replica {
	n.t.Helper()
	rp, err := StartReplica(ctx, n.cfg, n.store, n.cat)
	if err != nil {
		n.t.Fatalf("%s: StartReplica: %v", n.cfg.ID, err)
	}
	n.cur.Store(rp)
	return rp
}

// stop closes the replica (the store and the HTTP server stay up).
func (n *replicaNode) stop() {
	if rp := n.cur.Swap(nil); rp != nil {
		if err := rp.Close(); err != nil {
			n.t.Errorf("%s: closing the replica: %v", n.cfg.ID, err)
		}
		// Replica.Close leaves the transport's pooled outbound connections
		// open, and each keeps a peer's handleConn goroutine blocked in
		// Read (goleak fails the package at random). Drop once Close
		// calls CloseStreams itself.
		rp.trans.CloseStreams()
	}
}

func (n *replicaNode) rp() *Replica { return n.cur.Load() }

// startCluster starts size nodes: the first bootstraps, the others join it.
func startCluster(t *testing.T, ctx context.Context, size int, o replicaOpts) []*replicaNode {
	t.Helper()
	var nodes []*replicaNode
	for i := range size {
		oi := o
		if i > 0 {
			oi.join = nodes[0].cfg.APIAddr
		}
		n := newReplicaNode(t, fmt.Sprintf("n%d", i), oi)
		n.start(ctx)
		nodes = append(nodes, n)
	}
	// A node learns its peers' API addresses from the catalog; one that has
	// not applied a newer member's PutNode yet cannot push blobs to it.
	for _, n := range nodes {
		waitFor(t, n.cfg.ID+" to know every member's address", func() bool {
			st, err := n.rp().Status()
			if err != nil || len(st.Members) != size {
				return false
			}
			for _, m := range st.Members {
				if m.APIAddr == "" {
					return false
				}
			}
			return true
		})
	}
	return nodes
}

func leaderOf(t *testing.T, nodes []*replicaNode) (leader *replicaNode, followers []*replicaNode) {
	t.Helper()
	waitFor(t, "a leader", func() bool {
		leader, followers = nil, nil
		for _, n := range nodes {
			if rp := n.rp(); rp != nil && rp.IsLeader() {
				leader = n
			} else if rp != nil {
				followers = append(followers, n)
			}
		}
		return leader != nil
	})
	return leader, followers
}

// waitFor polls cond until it holds (10 s at most).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func paramsOf(id string) []byte {
	return []byte("params of " + id + strings.Repeat(".", 64))
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// createCmd is a CreateVPLM as a proposer builds it: times set, params
// blob put (by the caller) under digest.
func createCmd(id, tenant, digest string, size int) *smilepb.CatalogCommand {
	now := time.Now().UnixMilli()
	return &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_Create{Create: &smilepb.CreateVPLM{Vplm: &smilepb.VPLM{
		Id: id, Tenant: tenant, Backbone: "use-lite",
		Task:         smilepb.Task_TASK_CLASSIFY,
		Labels:       []string{"neg", "pos"},
		Adapter:      &smilepb.AdapterConfig{Kind: smilepb.AdapterKind_ADAPTER_LORA, Rank: 8, Layers: []uint32{0, 1}, Alpha: 16},
		ParamsDigest: digest, ParamsBytes: uint64(size),
		CreatedUnixMs: now, UpdatedUnixMs: now,
	}}}}
}

// create puts id's params blob through rp and commits its vPLM.
func create(t *testing.T, ctx context.Context, rp *Replica, id, tenant string) *smilepb.VPLM {
	t.Helper()
	v, err := tryCreate(ctx, rp, id, tenant)
	if err != nil {
		t.Fatalf("create %s via %s: %v", id, rp.ID(), err)
	}
	return v
}

func tryCreate(ctx context.Context, rp *Replica, id, tenant string) (*smilepb.VPLM, error) {
	data := paramsOf(id)
	d, err := rp.PutBlob(data)
	if err != nil {
		return nil, err
	}
	return rp.Apply(ctx, createCmd(id, tenant, d, len(data)))
}

func mustHash(t *testing.T, c *storage.Catalog) string {
	t.Helper()
	h, err := c.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustCount(t *testing.T, c *storage.Catalog) int {
	t.Helper()
	n, err := c.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// syncedHash is a node's catalog hash once it holds every committed write.
func syncedHash(t *testing.T, ctx context.Context, n *replicaNode) string {
	t.Helper()
	if err := n.rp().Sync(ctx); err != nil {
		t.Fatalf("%s: Sync: %v", n.cfg.ID, err)
	}
	return mustHash(t, n.cat)
}

// One voter: creates commit and read back; a restart on the same store and
// Raft directory replays the log over a catalog that already holds it
// (skipped, not applied twice) and writes go on.
func TestReplicaSingleNode(t *testing.T) {
	ctx := ctxT(t)
	n := newReplicaNode(t, "solo", replicaOpts{fixedBind: true})
	rp := n.start(ctx)
	if !rp.IsLeader() {
		t.Fatal("a one-voter cluster's only node does not lead")
	}
	const first = 5
	for i := range first {
		v := create(t, ctx, rp, fmt.Sprintf("m%d", i), "acme")
		if v.GetVersion() != 1 || v.GetCreatedUnixMs() == 0 {
			t.Fatalf("create result: %v", v)
		}
	}
	if v, err := rp.Get(ctx, "m3"); err != nil || v.GetParamsDigest() != digestOf(paramsOf("m3")) {
		t.Fatalf("Get m3 = %v, %v", v, err)
	}
	if _, err := rp.Get(ctx, "nope"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get of a missing id: %v", err)
	}
	list, err := rp.List(ctx, "acme", "m1", 0)
	if err != nil || len(list) != 3 || list[0].GetId() != "m2" {
		t.Fatalf("List after m1 = %v, %v", list, err)
	}
	// A create whose blob was never put is refused before it is proposed.
	if _, err := rp.Apply(ctx, createCmd("noblob", "acme", digestOf([]byte("never put")), 9)); !errors.Is(err, storage.ErrMissingBlob) {
		t.Fatalf("create without its blob: %v", err)
	}

	applied, err := n.cat.Applied()
	if err != nil || applied == 0 {
		t.Fatalf("Applied = %d, %v", applied, err)
	}
	hash := mustHash(t, n.cat)
	n.stop()
	if got, err := n.cat.Applied(); err != nil || got != applied {
		t.Fatalf("Applied after close = %d, %v; want %d", got, err, applied)
	}

	rp = n.start(ctx)
	if got := rp.fsm.last.Load(); got < applied {
		t.Fatalf("restarted FSM starts at %d, below the catalog's %d", got, applied)
	}
	// Sync makes the restarted leader apply (replay) its whole log.
	if got := syncedHash(t, ctx, n); got != hash {
		t.Fatalf("catalog changed across the restart: hash %s, was %s", got, hash)
	}
	if c := mustCount(t, n.cat); c != first {
		t.Fatalf("Count after restart = %d, want %d", c, first)
	}
	if _, err := rp.Apply(ctx, createCmd("m0", "acme", digestOf(paramsOf("m0")), 1)); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("create of an existing id after restart: %v", err)
	}
	create(t, ctx, rp, "after", "acme")
	if c := mustCount(t, n.cat); c != first+1 {
		t.Fatalf("Count after a write following the restart = %d, want %d", c, first+1)
	}
	if got, _ := n.cat.Applied(); got <= applied {
		t.Fatalf("Applied %d did not move past %d", got, applied)
	}
	u, err := n.cat.Usage("acme")
	if err != nil || u.GetVplms() != first+1 {
		t.Fatalf("usage after restart = %v, %v (a replay charged twice?)", u, err)
	}
}

// bufSink is a raft.SnapshotSink writing to memory.
type bufSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Close() error  { s.closed = true; return nil }
func (s *bufSink) Cancel() error { s.cancelled = true; return nil }

// failSink fails every write.
type failSink struct{ bufSink }

func (s *failSink) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// A node joining after the leader compacted its log gets the snapshot
// (InstallSnapshot) and the log after it, and ends with the same catalog.
func TestReplicaSnapshotRestore(t *testing.T) {
	ctx := ctxT(t)
	// TrailingLogs 1: a snapshot drops (nearly) the whole log before it.
	a := newReplicaNode(t, "a", replicaOpts{trailing: 1})
	rpA := a.start(ctx)
	const before, after = 12, 4
	for i := range before {
		create(t, ctx, rpA, fmt.Sprintf("s%02d", i), "acme")
	}
	if err := rpA.Snapshot(); err != nil {
		t.Fatal(err)
	}
	first, err := storage.NewRaftStore(a.store).FirstIndex()
	if err != nil || first <= uint64(before) {
		t.Fatalf("log not compacted by the snapshot: first index %d, %v", first, err)
	}
	for i := range after {
		create(t, ctx, rpA, fmt.Sprintf("t%02d", i), "acme")
	}

	b := newReplicaNode(t, "b", replicaOpts{join: a.cfg.APIAddr})
	rpB := b.start(ctx)
	if got := rpB.raft.Stats()["last_snapshot_index"]; got == "0" || got == "" {
		t.Fatalf("joiner did not install the leader's snapshot (last_snapshot_index %q)", got)
	}
	if hb, ha := syncedHash(t, ctx, b), syncedHash(t, ctx, a); hb != ha {
		t.Fatalf("joiner's catalog hash %s, leader's %s", hb, ha)
	}
	if c := mustCount(t, b.cat); c != before+after {
		t.Fatalf("joiner holds %d vPLMs, want %d", c, before+after)
	}
	// And it keeps following.
	create(t, ctx, rpB, "via-b", "acme")
	if hb, ha := syncedHash(t, ctx, b), syncedHash(t, ctx, a); hb != ha {
		t.Fatalf("after a write through the joiner: hash %s, leader's %s", hb, ha)
	}

	t.Run("fsm", func(t *testing.T) {
		src := &fsm{cat: a.cat}
		snap, err := src.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		defer snap.Release()
		var sink bufSink
		if err := snap.Persist(&sink); err != nil || !sink.closed || sink.cancelled {
			t.Fatalf("Persist = %v (closed %v, cancelled %v)", err, sink.closed, sink.cancelled)
		}
		dst, err := storage.Open(storage.DefaultOptions(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		f := &fsm{cat: storage.NewCatalog(dst)}
		if err := f.Restore(io.NopCloser(&sink.Buffer)); err != nil {
			t.Fatal(err)
		}
		if got, want := mustHash(t, f.cat), mustHash(t, a.cat); got != want {
			t.Fatalf("restored hash %s, want %s", got, want)
		}
		applied, _ := a.cat.Applied()
		if got := f.last.Load(); got != applied || got == 0 {
			t.Fatalf("restored FSM at %d, want %d", got, applied)
		}

		// A sink that fails is cancelled, not closed.
		snap2, err := src.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		defer snap2.Release()
		var bad failSink
		if err := snap2.Persist(&bad); err == nil || !bad.cancelled || bad.closed {
			t.Fatalf("Persist to a failing sink = %v (closed %v, cancelled %v)", err, bad.closed, bad.cancelled)
		}
	})
}

// Three voters: writes through a follower are forwarded, reads anywhere see
// writes acknowledged anywhere, blobs are on every node before the create
// commits, and the catalog's typed errors come back through the forward.
func TestReplicaThreeNodes(t *testing.T) {
	ctx := ctxT(t)
	nodes := startCluster(t, ctx, 3, replicaOpts{replicas: 3})
	leader, followers := leaderOf(t, nodes)
	st, err := leader.rp().Status()
	if err != nil || len(st.Members) != 3 {
		t.Fatalf("leader status: %+v, %v", st, err)
	}
	for _, m := range st.Members {
		if !m.Voter || m.APIAddr == "" || m.RaftAddr == "" {
			t.Fatalf("member %+v: want a voter with both addresses", m)
		}
	}

	// Every node writes once; right after each ack every node reads it.
	for i, w := range append([]*replicaNode{followers[0], followers[1]}, leader) {
		id := fmt.Sprintf("w%d", i)
		v := create(t, ctx, w.rp(), id, "acme")
		d := v.GetParamsDigest()
		for _, n := range nodes {
			if ok, err := n.store.HasBlob(d); err != nil || !ok {
				t.Fatalf("%s: blob of %s (created via %s) missing when the create returned: %v, %v", n.cfg.ID, id, w.cfg.ID, ok, err)
			}
			got, err := n.rp().Get(ctx, id)
			if err != nil || got.GetParamsDigest() != d || got.GetCreatedUnixMs() != v.GetCreatedUnixMs() {
				t.Fatalf("%s: Get %s (created via %s) = %v, %v", n.cfg.ID, id, w.cfg.ID, got, err)
			}
		}
	}
	// A batch through a follower: one entry, one result per command.
	f := followers[0].rp()
	var cmds []*smilepb.CatalogCommand
	for i := range 3 {
		id := fmt.Sprintf("b%d", i)
		d, err := f.PutBlob(paramsOf(id))
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, createCmd(id, "acme", d, len(paramsOf(id))))
	}
	cmds = append(cmds, createCmd("w0", "acme", digestOf(paramsOf("w0")), 1)) // a duplicate
	vs, errs := f.ApplyBatch(ctx, cmds)
	for i := range 3 {
		if errs[i] != nil || vs[i].GetId() != fmt.Sprintf("b%d", i) {
			t.Fatalf("batch command %d: %v, %v", i, vs[i], errs[i])
		}
	}
	if !errors.Is(errs[3], storage.ErrExists) || vs[3] != nil {
		t.Fatalf("duplicate in a forwarded batch: %v, %v", vs[3], errs[3])
	}
	list, err := followers[1].rp().List(ctx, "acme", "", 0)
	if err != nil || len(list) != 6 {
		t.Fatalf("List on the other follower: %d vPLMs, %v", len(list), err)
	}

	// Typed errors through a follower.
	if _, err := f.Apply(ctx, createCmd("w1", "acme", digestOf(paramsOf("w1")), 1)); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("duplicate create via a follower: %v", err)
	}
	if _, err := f.Apply(ctx, &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_Delete{Delete: &smilepb.DeleteVPLM{Id: "nope"}}}); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("delete of a missing id via a follower: %v", err)
	}
	if _, err := f.Apply(ctx, &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_PutTenant{PutTenant: &smilepb.PutTenant{
		Tenant: &smilepb.Tenant{Name: "small", MaxVplms: 1}}}}); err != nil {
		t.Fatal(err)
	}
	create(t, ctx, f, "small1", "small")
	_, err = tryCreate(ctx, f, "small2", "small")
	if !errors.Is(err, storage.ErrQuotaExceeded) {
		t.Fatalf("create over quota via a follower: %v", err)
	}
	if !strings.Contains(err.Error(), "max_vplms") {
		t.Fatalf("quota error lost its message: %v", err)
	}
	if _, u, err := followers[1].rp().Tenant(ctx, "small"); err != nil || u.GetVplms() != 1 {
		t.Fatalf("usage of small on the other follower: %v, %v", u, err)
	}
	h := syncedHash(t, ctx, leader)
	for _, n := range followers {
		if got := syncedHash(t, ctx, n); got != h {
			t.Fatalf("%s: catalog hash %s, leader's %s", n.cfg.ID, got, h)
		}
	}
}

// seedCorruptBlob writes wrong bytes under a blob's key in a Badger
// directory before the store opens, as a disk fault would. The key layout
// (b/<hex>) is storage's (doc.go); storage's own tests cover that GetBlob
// detects such a copy.
func seedCorruptBlob(t *testing.T, dir string, data []byte) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "db")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 1
	k := []byte("b/" + strings.TrimPrefix(digestOf(data), "sha256:"))
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(k, bad) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// A node without a good copy of a params blob (never sent to it, or
// corrupt) fetches it from a peer, checks it and keeps it.
func TestReplicaBlobRepair(t *testing.T) {
	ctx := ctxT(t)
	opts := replicaOpts{replicas: 2}
	a := newReplicaNode(t, "a", opts)
	a.start(ctx)
	opts.join = a.cfg.APIAddr
	b := newReplicaNode(t, "b", opts)
	b.start(ctx)
	// With two nodes, Replicas 2 puts "early" on both; c joins later with
	// a corrupt copy of it on disk.
	early := create(t, ctx, a.rp(), "early", "acme").GetParamsDigest()
	cdir := t.TempDir()
	seedCorruptBlob(t, cdir, paramsOf("early"))
	opts.dir = cdir
	c := newReplicaNode(t, "c", opts)
	c.start(ctx)
	nodes := []*replicaNode{a, b, c}
	if err := c.rp().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.store.GetBlob(early); !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("seeded copy on c: GetBlob = %v, want ErrCorrupt", err)
	}

	// With three nodes, Replicas 2 leaves one without "late".
	late := create(t, ctx, b.rp(), "late", "acme").GetParamsDigest()
	var lacking *replicaNode
	for _, n := range nodes {
		ok, err := n.store.HasBlob(late)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if lacking != nil {
				t.Fatalf("%s and %s both lack the blob (Replicas 2 of 3)", lacking.cfg.ID, n.cfg.ID)
			}
			lacking = n
		}
	}
	if lacking == nil {
		t.Fatal("every node holds the blob: Replicas 2 was not honoured")
	}
	if err := lacking.rp().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if m, err := lacking.store.MissingBlobs(0); err != nil || !slices.Contains(m, late) {
		t.Fatalf("%s: MissingBlobs = %v, %v; want %s among them", lacking.cfg.ID, m, err, late)
	}

	want := map[*replicaNode]int64{c: 1}
	want[lacking]++
	for _, x := range []struct {
		n      *replicaNode
		digest string
		id     string
	}{{c, early, "early"}, {lacking, late, "late"}} {
		got, err := x.n.rp().GetBlob(x.digest)
		if err != nil || !bytes.Equal(got, paramsOf(x.id)) {
			t.Fatalf("%s: GetBlob %s = %d bytes, %v", x.n.cfg.ID, x.id, len(got), err)
		}
		if got, err := x.n.store.GetBlob(x.digest); err != nil || !bytes.Equal(got, paramsOf(x.id)) {
			t.Fatalf("%s: repaired blob %s not stored locally: %v", x.n.cfg.ID, x.id, err)
		}
	}
	for _, n := range nodes {
		st, err := n.rp().Status()
		if err != nil || st.Repaired != want[n] {
			t.Fatalf("%s: Repaired = %d (%v), want %d", n.cfg.ID, st.Repaired, err, want[n])
		}
	}
	// A good local copy is not fetched again.
	if _, err := c.rp().GetBlob(early); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.rp().Status(); st.Repaired != want[c] {
		t.Fatalf("c: Repaired %d after reading a good copy, want %d", st.Repaired, want[c])
	}
	// Nobody has it: not found, not a bogus repair.
	if _, err := a.rp().GetBlob(digestOf([]byte("nowhere"))); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetBlob of a blob no node holds: %v", err)
	}
}

// Losing the leader while followers write: every acknowledged create
// survives on both remaining nodes, and writes in flight go on through the
// new leader.
func TestReplicaLeaderLoss(t *testing.T) {
	ctx := ctxT(t)
	nodes := startCluster(t, ctx, 3, replicaOpts{replicas: 3})
	leader, followers := leaderOf(t, nodes)

	var (
		mu    sync.Mutex
		acked []string
		fails []error
	)
	var total atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for fi, f := range followers {
		for g := range 2 {
			wg.Go(func() {
				rp := f.rp()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					// Goroutine 1 of each follower writes batches of two.
					var ids []string
					for k := range g + 1 {
						ids = append(ids, fmt.Sprintf("f%d-g%d-%03d-%d", fi, g, i, k))
					}
					var cmds []*smilepb.CatalogCommand
					for _, id := range ids {
						d, err := rp.PutBlob(paramsOf(id))
						if err != nil {
							mu.Lock()
							fails = append(fails, err)
							mu.Unlock()
							return
						}
						cmds = append(cmds, createCmd(id, "acme", d, len(paramsOf(id))))
					}
					cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
					_, errs := rp.ApplyBatch(cctx, cmds)
					cancel()
					mu.Lock()
					for k, err := range errs {
						if err != nil {
							fails = append(fails, fmt.Errorf("%s: %w", ids[k], err))
						} else {
							acked = append(acked, ids[k])
							total.Add(1)
						}
					}
					mu.Unlock()
				}
			})
		}
	}
	waitFor(t, "writes before the loss", func() bool { return total.Load() >= 20 })
	// The leader's machine goes: Raft and its HTTP routes.
	leader.stop()
	leader.srv.Close()
	lost := total.Load()
	waitFor(t, "writes after the loss", func() bool { return total.Load() >= lost+20 })
	close(stop)
	wg.Wait()

	if len(fails) > 0 {
		t.Fatalf("%d writes failed across the leader change, first: %v", len(fails), errors.Join(fails[:min(5, len(fails))]...))
	}
	newLeader, _ := leaderOf(t, followers)
	t.Logf("%d creates acknowledged; leader %s lost, %s leads now", len(acked), leader.cfg.ID, newLeader.cfg.ID)
	for _, n := range followers {
		rp := n.rp()
		if err := rp.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range acked {
			if _, err := rp.Catalog().Get(id); err != nil {
				t.Fatalf("%s: acknowledged create %s lost: %v", n.cfg.ID, id, err)
			}
		}
		// Every write was acknowledged, so the catalog holds exactly them.
		if c := mustCount(t, n.cat); c != len(acked) {
			t.Fatalf("%s: %d vPLMs, %d acknowledged", n.cfg.ID, c, len(acked))
		}
	}
	if h0, h1 := syncedHash(t, ctx, followers[0]), syncedHash(t, ctx, followers[1]); h0 != h1 {
		t.Fatalf("survivors' catalogs differ: %s vs %s", h0, h1)
	}
}

// With MaxVoters 1 a second node joins as a non-voter, gets the catalog
// and forwards its writes.
func TestReplicaJoinNonVoter(t *testing.T) {
	ctx := ctxT(t)
	a := newReplicaNode(t, "a", replicaOpts{maxVoters: 1})
	rpA := a.start(ctx)
	create(t, ctx, rpA, "before", "acme")
	b := newReplicaNode(t, "b", replicaOpts{join: a.cfg.APIAddr})
	rpB := b.start(ctx)

	for _, rp := range []*Replica{rpA, rpB} {
		st, err := rp.Status()
		if err != nil {
			t.Fatal(err)
		}
		voters := map[string]bool{}
		for _, m := range st.Members {
			voters[m.ID] = m.Voter
			if m.APIAddr == "" {
				t.Fatalf("%s sees member %s without an API address", rp.ID(), m.ID)
			}
		}
		if len(st.Members) != 2 || !voters["a"] || voters["b"] {
			t.Fatalf("%s: members %+v: want voter a, non-voter b", rp.ID(), st.Members)
		}
		if st.Leader != "a" {
			t.Fatalf("%s: leader %q, want a", rp.ID(), st.Leader)
		}
	}
	if rpB.IsLeader() {
		t.Fatal("a non-voter leads")
	}
	create(t, ctx, rpA, "after", "acme")
	create(t, ctx, rpB, "via-b", "acme")
	for _, id := range []string{"before", "after", "via-b"} {
		if _, err := rpB.Get(ctx, id); err != nil {
			t.Fatalf("non-voter: Get %s: %v", id, err)
		}
	}
	// Replicas 3 with two nodes: the blob is on both.
	if ok, _ := a.store.HasBlob(digestOf(paramsOf("via-b"))); !ok {
		t.Fatal("a blob put through the non-voter is not on the leader")
	}
	if hb, ha := syncedHash(t, ctx, b), syncedHash(t, ctx, a); hb != ha {
		t.Fatalf("non-voter's hash %s, leader's %s", hb, ha)
	}
}
