package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/storage"
)

// RaftConfig configures a node's catalog replica: its Raft server and the
// internal HTTP routes peers use to reach it.
type RaftConfig struct {
	// ID is the node's Raft server id; "" reads Dir/node-id, creating it
	// with a random id the first time.
	ID string
	// Bind is the Raft TCP address (host:port). Port 0 picks a free one,
	// which changes at every start: fine for one node, while members of a
	// bigger cluster need a fixed port (peers remember it).
	Bind string
	// APIAddr is this node's HTTP API address as peers reach it: forwarded
	// writes, read indexes, blob pushes and fetches, joins.
	APIAddr string
	// Dir holds Raft snapshots and the node id.
	Dir string
	// Join is existing members' API addresses, comma-separated, tried in
	// turn. A node with no Raft state and no Join bootstraps a new
	// one-voter cluster.
	Join string
	// Secret, when set, must be sent by peers on internal routes (header
	// X-Smile-Cluster-Key); every member needs the same one.
	Secret string
	// MaxVoters caps the voting members (default 5); further nodes join as
	// non-voters.
	MaxVoters int
	// Replicas is how many nodes hold each new params blob before its
	// catalog entry is committed (default 3, or fewer nodes).
	Replicas int
	// Raft timing (defaults suit a LAN or loopback).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// SnapshotThreshold is how many log entries since the last snapshot
	// make the next one (default 8192); TrailingLogs stay after it.
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// ApplyTimeout bounds one proposal's wait in the leader's queue.
	ApplyTimeout time.Duration
	Log          *slog.Logger
}

// Seeds are the Join addresses, one per element.
func (c RaftConfig) Seeds() []string {
	var out []string
	for _, s := range strings.Split(c.Join, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// DefaultRaftConfig is a replica on loopback; Bind, APIAddr and Dir are
// still to be set.
func DefaultRaftConfig() RaftConfig {
	return RaftConfig{
		MaxVoters: 5, Replicas: 3,
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		SnapshotThreshold:  8192, TrailingLogs: 10240, ApplyTimeout: 10 * time.Second,
	}
}

// Validate checks the configuration.
func (c RaftConfig) Validate() error {
	switch {
	case c.Bind == "":
		return fmt.Errorf("%w: raft: empty bind address", actors.ErrBadConfig)
	case c.APIAddr == "":
		return fmt.Errorf("%w: raft: empty API address", actors.ErrBadConfig)
	case c.Dir == "":
		return fmt.Errorf("%w: raft: empty directory", actors.ErrBadConfig)
	case c.MaxVoters < 1 || c.MaxVoters > 9:
		return fmt.Errorf("%w: raft: max voters %d: want 1..9", actors.ErrBadConfig, c.MaxVoters)
	case c.Replicas < 1:
		return fmt.Errorf("%w: raft: replicas %d: want >= 1", actors.ErrBadConfig, c.Replicas)
	case c.HeartbeatTimeout < 5*time.Millisecond || c.ElectionTimeout < 5*time.Millisecond ||
		c.LeaderLeaseTimeout < 5*time.Millisecond || c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return fmt.Errorf("%w: raft: timeouts (heartbeat %v, election %v, lease %v)", actors.ErrBadConfig,
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout)
	case c.SnapshotThreshold == 0 || c.ApplyTimeout <= 0:
		return fmt.Errorf("%w: raft: snapshot threshold and apply timeout must be > 0", actors.ErrBadConfig)
	}
	if c.ID != "" {
		if err := storage.ValidID(c.ID); err != nil {
			return fmt.Errorf("%w: raft: node id: %w", actors.ErrBadConfig, err)
		}
	}
	if err := dialable(c.APIAddr); err != nil {
		return fmt.Errorf("%w: raft: API address: %w (set --advertise-addr)", actors.ErrBadConfig, err)
	}
	for _, j := range c.Seeds() {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("%w: raft: join address %q: %w", actors.ErrBadConfig, j, err)
		}
	}
	return nil
}

// Replica is a node's copy of the catalog, kept by Raft: the local Badger
// catalog is the state machine, and every change is a log entry committed
// by a quorum before it is applied. It implements actors.Catalog (writes
// from any node reach the leader; reads are linearizable) and the blob
// interfaces (a missing or corrupt blob is fetched from a peer).
type Replica struct {
	cfg   RaftConfig
	id    string
	store *storage.Store
	cat   *storage.Catalog
	fsm   *fsm
	raft  *raft.Raft
	trans *raft.NetworkTransport
	hc    *http.Client
	log   *slog.Logger

	handlerOnce sync.Once
	handler     http.Handler

	closeOnce sync.Once
	closeErr  error
	closed    chan struct{} // closed once Raft has shut down
	repaired  atomic.Int64  // corrupt or missing blobs fetched from peers
	released  atomic.Int64  // when putBlobs last released mapped pages (Unix ns)
	// gossip is the node's membership, once it runs: routeGossip answers
	// from it.
	gossip atomic.Pointer[gossip]
}

// StartReplica starts the node's Raft server on the store, bootstrapping a
// one-voter cluster when the node has no Raft state and no Join address,
// or asking Join's member to add it. It returns once a leader is known and
// the node's addresses are in the catalog.
func StartReplica(ctx context.Context, cfg RaftConfig, store *storage.Store, cat *storage.Catalog) (*Replica, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: raft directory: %w", actors.ErrBadConfig, err)
	}
	id, err := nodeID(cfg)
	if err != nil {
		return nil, err
	}
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{log.With("lib", "raft")}})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.Dir, "snapshots"), 2, hl)
	if err != nil {
		return nil, fmt.Errorf("raft: snapshot store: %w", err)
	}
	rs := storage.NewRaftStore(store)
	f := &fsm{cat: cat, log: log}
	if err := recoverState(f, cat, snaps, log); err != nil {
		return nil, err
	}
	applied, err := cat.Applied()
	if err != nil {
		return nil, err
	}
	f.last.Store(applied)
	trans, err := raft.NewTCPTransportWithLogger(cfg.Bind, nil, 3, 10*time.Second, hl)
	if err != nil {
		return nil, fmt.Errorf("%w: raft address %s: %w", actors.ErrBadConfig, cfg.Bind, err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.Logger = hl
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	// The catalog in Badger is durable and knows how far it got: a start
	// replays only the log after it instead of rewriting it from the last
	// snapshot (recoverState restores a snapshot the catalog is behind).
	rc.NoSnapshotRestoreOnStart = true
	hasState, err := raft.HasExistingState(rs, rs, snaps)
	if err != nil {
		trans.Close()
		return nil, fmt.Errorf("raft: reading state: %w", err)
	}
	r, err := raft.NewRaft(rc, f, rs, rs, snaps, trans)
	if err != nil {
		trans.Close()
		return nil, fmt.Errorf("raft: start: %w", err)
	}
	rp := &Replica{cfg: cfg, id: id, store: store, cat: cat, fsm: f, raft: r, trans: trans, log: log, closed: make(chan struct{}),
		// A peer that is down or cut off must cost seconds, not a
		// request's whole deadline: dials and headers time out.
		hc: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute, ResponseHeaderTimeout: time.Minute,
		}},
	}
	ok := false
	defer func() {
		if !ok {
			rp.Close()
		}
	}()
	switch {
	case !hasState && cfg.Join == "":
		bf := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr()}}})
		if err := bf.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return nil, fmt.Errorf("raft: bootstrap: %w", err)
		}
	case cfg.Join != "" && !hasState:
		if err := rp.join(ctx); err != nil {
			return nil, err
		}
	case cfg.Join != "":
		// A member restarting with its first command line: it is in the
		// configuration already, and the member it names may be the one
		// that is down. Asking again updates its addresses where they
		// changed; without an answer, Raft finds the others.
		jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := rp.join(jctx); err != nil {
			log.Warn("rejoin through --join failed; going on with the known members", "join", cfg.Join, "err", err)
		}
		cancel()
	}
	if err := rp.register(ctx); err != nil {
		return nil, err
	}
	ok = true
	log.Info("catalog replica started", "id", id, "raft", trans.LocalAddr(), "leader", rp.leaderID(), "existing_state", hasState)
	return rp, nil
}

// dialable checks that peers can dial addr: host:port with a host that is
// not empty or unspecified (0.0.0.0, ::), which every peer would dial as
// itself.
func dialable(addr string) error {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	if h == "" || p == "" || p == "0" {
		return fmt.Errorf("%q: no host or port", addr)
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q: the unspecified address is no address to dial", addr)
	}
	return nil
}

// nodeID is the configured id, or the one kept in Dir/node-id.
func nodeID(cfg RaftConfig) (string, error) {
	p := filepath.Join(cfg.Dir, "node-id")
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		old := strings.TrimSpace(string(b))
		if cfg.ID != "" && cfg.ID != old {
			return "", fmt.Errorf("%w: raft: node id %q, but %s says this data belongs to node %q", actors.ErrBadConfig, cfg.ID, p, old)
		}
		if err := storage.ValidID(old); err != nil {
			return "", fmt.Errorf("%w: raft: %s: %w", storage.ErrCorrupt, p, err)
		}
		return old, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("raft: node id: %w", err)
	}
	id := cfg.ID
	if id == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		id = "node-" + hex.EncodeToString(b[:])
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("raft: node id: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("raft: node id: %w", err)
	}
	return id, nil
}

// recoverState restores the newest snapshot when the catalog is behind it:
// a node that crashed while installing a snapshot from the leader. Raft
// itself does not restore at start (NoSnapshotRestoreOnStart).
func recoverState(f *fsm, cat *storage.Catalog, snaps raft.SnapshotStore, log *slog.Logger) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	applied, err := cat.Applied()
	if err != nil {
		return err
	}
	latest := list[0]
	if applied >= latest.Index {
		return nil
	}
	log.Warn("catalog is behind the newest raft snapshot: restoring it", "applied", applied, "snapshot", latest.Index)
	_, rc, err := snaps.Open(latest.ID)
	if err != nil {
		return fmt.Errorf("raft: open snapshot %s: %w", latest.ID, err)
	}
	defer rc.Close()
	return f.Restore(io.NopCloser(rc))
}

// ID is the node's Raft server id.
func (r *Replica) ID() string { return r.id }

// RaftAddr is the Raft transport's address.
func (r *Replica) RaftAddr() string { return string(r.trans.LocalAddr()) }

// Catalog is the local catalog (reads here may be stale; see Get).
func (r *Replica) Catalog() *storage.Catalog { return r.cat }

// IsLeader reports whether this node is the Raft leader now.
func (r *Replica) IsLeader() bool { return r.raft.State() == raft.Leader }

func (r *Replica) leaderID() string {
	_, id := r.raft.LeaderWithID()
	return string(id)
}

// Snapshot asks Raft for a snapshot now (compacting the log).
func (r *Replica) Snapshot() error {
	err := r.raft.Snapshot().Error()
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return err
}

// Close stops the Raft server (a leader steps down without handing over;
// the others elect a new one) and its transport. The store stays open.
func (r *Replica) Close() error {
	r.closeOnce.Do(func() {
		r.closeErr = r.raft.Shutdown().Error()
		close(r.closed)
		// Transport.Close leaves the pooled outbound connections open, and
		// each keeps a goroutine on the peer blocked reading it.
		r.trans.CloseStreams()
		if err := r.trans.Close(); err != nil && r.closeErr == nil {
			r.closeErr = err
		}
		r.hc.CloseIdleConnections()
	})
	return r.closeErr
}

// Status is what a node knows of the cluster.
type Status struct {
	ID       string        `json:"id"`
	State    string        `json:"state"`
	Leader   string        `json:"leader"`
	Term     uint64        `json:"term"`
	Applied  uint64        `json:"applied_index"`
	Commit   uint64        `json:"commit_index"`
	Members  []MemberState `json:"members"`
	Repaired int64         `json:"blobs_repaired"`
	// CatalogHash is storage.Catalog.Hash (GET /v1/cluster?hash=1).
	CatalogHash string `json:"catalog_hash,omitempty"`
}

// MemberState is one server of the Raft configuration.
type MemberState struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr,omitempty"`
	Voter    bool   `json:"voter"`
}

// Status reports the node's Raft state and the members.
func (r *Replica) Status() (Status, error) {
	st := Status{ID: r.id, State: r.raft.State().String(), Leader: r.leaderID(),
		Applied: r.raft.AppliedIndex(), Commit: r.raft.CommitIndex(), Repaired: r.repaired.Load()}
	fmt.Sscan(r.raft.Stats()["term"], &st.Term)
	cf := r.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return st, err
	}
	nodes, err := r.nodes()
	if err != nil {
		return st, err
	}
	for _, s := range cf.Configuration().Servers {
		m := MemberState{ID: string(s.ID), RaftAddr: string(s.Address), Voter: s.Suffrage == raft.Voter}
		if n, ok := nodes[m.ID]; ok {
			m.APIAddr = n.GetApiAddr()
		}
		st.Members = append(st.Members, m)
	}
	return st, nil
}

func (r *Replica) nodes() (map[string]*smilepb.NodeInfo, error) {
	list, err := r.cat.Nodes()
	if err != nil {
		return nil, err
	}
	m := make(map[string]*smilepb.NodeInfo, len(list))
	for _, n := range list {
		m[n.GetId()] = n
	}
	return m, nil
}

// peers are the other members of the Raft configuration that the catalog
// has addresses for.
func (r *Replica) peers() ([]*smilepb.NodeInfo, error) {
	cf := r.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, err
	}
	nodes, err := r.nodes()
	if err != nil {
		return nil, err
	}
	var out []*smilepb.NodeInfo
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == r.id {
			continue
		}
		if n, ok := nodes[string(s.ID)]; ok {
			out = append(out, n)
		}
	}
	return out, nil
}

// members is the size of the Raft configuration.
func (r *Replica) members() int {
	cf := r.raft.GetConfiguration()
	if cf.Error() != nil {
		return 1
	}
	return len(cf.Configuration().Servers)
}

// slogWriter hands hclog's lines to slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	// Raft warns of routine events too (an election at start, a follower
	// catching up): its warnings are info here, its errors warnings.
	switch {
	case strings.Contains(msg, "[ERROR]"):
		w.log.Warn(msg)
	case strings.Contains(msg, "[WARN]"):
		w.log.Info(msg)
	default:
		w.log.Debug(msg)
	}
	return len(p), nil
}

// fsm applies committed catalog entries to the local Badger catalog.
type fsm struct {
	cat *storage.Catalog
	log *slog.Logger
	// onTenant, when set, is told of every tenant change applied, and nil
	// after a snapshot install (the node's device schedulers follow the
	// catalog). It must not block.
	onTenant atomic.Pointer[func(*smilepb.Tenant)]
	// last is the index of the last entry applied (commands and
	// configuration changes; Raft's no-ops and barriers never reach the
	// FSM): what Sync waits for.
	last atomic.Uint64
}

// applied is the FSM's answer to one log entry: a result per command.
type applied struct {
	vplms []*smilepb.VPLM
	errs  []error
}

func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies the command entries among logs in as few Badger
// transactions as the catalog can, recording how far it got in the same
// transactions (a restart replays only what is missing).
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	var entries []storage.Entry
	var at []int // at[j]: the log of entries[j]
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			// Configuration changes move the applied position too, so
			// that Applied keeps up with the log.
			entries, at = append(entries, storage.Entry{Index: l.Index}), append(at, i)
			continue
		}
		var b smilepb.CatalogBatch
		if err := proto.Unmarshal(l.Data, &b); err != nil {
			// Every replica fails the same way on the same bytes.
			out[i] = &applied{errs: []error{fmt.Errorf("%w: raft entry %d: %w", storage.ErrInvalid, l.Index, err)}}
			entries, at = append(entries, storage.Entry{Index: l.Index}), append(at, i)
			continue
		}
		entries, at = append(entries, storage.Entry{Index: l.Index, Cmds: b.GetCmds()}), append(at, i)
	}
	if len(entries) > 0 {
		vs, errs := f.cat.ApplyEntries(entries)
		for j, e := range entries {
			if len(e.Cmds) == 0 {
				continue
			}
			i := at[j]
			out[i] = &applied{vplms: vs[j], errs: errs[j]}
			if hook := f.onTenant.Load(); hook != nil {
				for k, c := range e.Cmds {
					if pt := c.GetPutTenant(); pt != nil && (k >= len(errs[j]) || errs[j][k] == nil) {
						(*hook)(pt.GetTenant())
					}
				}
			}
			for _, err := range errs[j] {
				if err != nil && errorKind(err) == "internal" {
					// Badger failed under the catalog: going on would leave
					// this replica behind the log for good. Stop the process;
					// a restart replays from the applied position.
					f.log.Error("catalog state machine cannot apply the raft log", "index", logs[i].Index, "err", err)
					panic(fmt.Sprintf("cluster: catalog state machine: entry %d: %v", logs[i].Index, err))
				}
			}
		}
	}
	if n := len(logs); n > 0 {
		f.last.Store(logs[n-1].Index)
	}
	return out
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	s, err := f.cat.Snapshot()
	if err != nil {
		return nil, err
	}
	return fsmSnapshot{s}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.cat.Restore(rc); err != nil {
		return err
	}
	idx, err := f.cat.Applied()
	if err != nil {
		return err
	}
	f.last.Store(idx)
	if hook := f.onTenant.Load(); hook != nil {
		(*hook)(nil) // every tenant may have changed
	}
	return nil
}

type fsmSnapshot struct{ s *storage.CatalogSnapshot }

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.s.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() { s.s.Release() }

var (
	_ raft.BatchingFSM    = (*fsm)(nil)
	_ actors.Catalog      = (*Replica)(nil)
	_ actors.BlobStore    = (*Replica)(nil)
	_ actors.ParamsSource = (*Replica)(nil)
)

// StepDown hands Raft leadership to another voter when this node leads
// (a node leaving gracefully: writes pause for a transfer, not for an
// election timeout). A follower has nothing to do.
func (r *Replica) StepDown(ctx context.Context) error {
	if !r.IsLeader() || r.members() < 2 {
		return nil
	}
	f := r.raft.LeadershipTransfer()
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// OnTenant has fn told of every tenant's settings as the catalog applies
// them, on every node (so each node's device schedulers follow a PutTenant
// made through any node); nil after a snapshot is installed (any tenant
// may have changed). fn must not block: it runs on the state machine.
func (r *Replica) OnTenant(fn func(*smilepb.Tenant)) { r.fsm.onTenant.Store(&fn) }
