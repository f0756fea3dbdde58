package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pc "github.com/asynkron/protoactor-go/cluster"
	"github.com/hashicorp/memberlist"

	"github.com/smile-vplm/smile/actors"
)

// Membership: a protoactor-go ClusterProvider on hashicorp/memberlist.
//
// Each process is one memberlist node named by its actor system's id (a
// fresh one per start), with metadata saying who it is: its persistent node
// id, actor and API addresses, the backbones it serves, how many vPLMs it
// hosts, and whether it is leaving or is a client. Every change of the
// memberlist view is turned into a protoactor topology
// (MemberList.UpdateClusterTopology) and into the placement view the
// identity lookup (placement.go) ranks owners from.
//
// protoactor blocks, forever, the member ids that left its topology: a node
// that was declared dead and comes back (a long pause, a partition) is
// ignored by its peers' actor systems though memberlist lets it in again.
// So a peer that sees a blocked id alive tells that node, and the node
// restarts its cluster identity (Node.Removed) instead of lingering.

// GossipConfig configures a node's membership.
type GossipConfig struct {
	// Bind is memberlist's address (TCP and UDP), host:port; port 0 picks
	// a free one.
	Bind string
	// Advertise is the address peers reach Bind at (default: Bind, with
	// the port it got).
	Advertise string
	// Seeds are gossip addresses of members to join (none: a new cluster,
	// or one whose members join this node).
	Seeds []string
	// Key, when set, encrypts gossip (AES-256-GCM with a key derived from
	// it): peers need the same key.
	Key string
	// ProbeInterval, ProbeTimeout and SuspicionMult set failure
	// detection: a dead node is declared after about ProbeInterval +
	// ProbeTimeout + SuspicionMult x ProbeInterval.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	SuspicionMult int
	// GossipInterval is how often state is gossiped to a few peers.
	GossipInterval time.Duration
}

// DefaultGossipConfig detects a peer that stopped answering in two to
// three seconds (a probe every 500ms, failed after 400ms, then 3 probe
// intervals of suspicion in which the peer may refute): tuned for a LAN,
// with room for a loaded machine's pauses. A peer whose process died is
// found sooner: its connections break (placement.go).
func DefaultGossipConfig() GossipConfig {
	return GossipConfig{Bind: "127.0.0.1:0", ProbeInterval: 500 * time.Millisecond, ProbeTimeout: 400 * time.Millisecond,
		SuspicionMult: 3, GossipInterval: 100 * time.Millisecond}
}

// Validate checks the configuration.
func (c GossipConfig) Validate() error {
	if _, _, err := splitAddr(c.Bind); err != nil {
		return fmt.Errorf("%w: gossip address %q: %w", actors.ErrBadConfig, c.Bind, err)
	}
	if c.Advertise != "" {
		if err := dialable(c.Advertise); err != nil {
			return fmt.Errorf("%w: gossip advertise address: %w", actors.ErrBadConfig, err)
		}
	}
	for _, s := range c.Seeds {
		if err := dialable(s); err != nil {
			return fmt.Errorf("%w: gossip seed: %w", actors.ErrBadConfig, err)
		}
	}
	switch {
	case c.ProbeInterval < 10*time.Millisecond, c.ProbeTimeout < 5*time.Millisecond, c.ProbeTimeout > c.ProbeInterval:
		return fmt.Errorf("%w: gossip probe interval %v, timeout %v: want interval >= 10ms and 5ms <= timeout <= interval",
			actors.ErrBadConfig, c.ProbeInterval, c.ProbeTimeout)
	case c.SuspicionMult < 1:
		return fmt.Errorf("%w: gossip suspicion multiplier %d: want >= 1", actors.ErrBadConfig, c.SuspicionMult)
	case c.GossipInterval < time.Millisecond:
		return fmt.Errorf("%w: gossip interval %v: want >= 1ms", actors.ErrBadConfig, c.GossipInterval)
	}
	return nil
}

func splitAddr(s string) (string, int, error) {
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(ps)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("port %q", ps)
	}
	return h, p, nil
}

// memberMeta is a node's memberlist metadata (JSON, within memberlist's
// 512-byte cap: checked at start).
type memberMeta struct {
	Node      string   `json:"n,omitempty"` // persistent node id (the Raft id)
	Host      string   `json:"h"`           // actor system address
	Port      int      `json:"p"`
	API       string   `json:"a,omitempty"` // HTTP API address
	Backbones []string `json:"b,omitempty"`
	Devices   int      `json:"d,omitempty"`
	Resident  int      `json:"r,omitempty"` // vPLM activations hosted
	Leaving   bool     `json:"l,omitempty"`
	Client    bool     `json:"c,omitempty"`
}

func (m *memberMeta) addr() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }

// memberView is one member as placement sees it.
type memberView struct {
	ID   string // actor system id (the protoactor member id)
	Meta memberMeta
}

// view is the membership the identity lookup places vPLMs over: serving
// members only (no clients), replaced as a whole on every change.
type view struct {
	Members []memberView // sorted by ID
	byAddr  map[string]int
}

func (v *view) byAddress(addr string) (memberView, bool) {
	if v == nil {
		return memberView{}, false
	}
	i, ok := v.byAddr[addr]
	if !ok {
		return memberView{}, false
	}
	return v.Members[i], true
}

// Message types sent between nodes over memberlist (first byte).
const msgRemoved byte = 'R' // "your member id is blocked here: restart your identity"

// gossip is the ClusterProvider.
type gossip struct {
	cfg    GossipConfig
	log    *slog.Logger
	client bool
	// joinLater: a failed join at start is not fatal (a node whose catalog
	// names its peers retries, Node.rejoin).
	joinLater bool

	mu   sync.Mutex
	meta memberMeta
	enc  []byte // meta encoded, as last set

	ml   *memberlist.Memberlist
	addr string // gossip address, as advertised
	cl   *pc.Cluster
	view atomic.Pointer[view]
	// onView, when set, runs (on the topology goroutine) after each
	// change of the members or their leaving; lastSig is the last seen.
	onView  func(*view)
	lastSig string

	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	removed     chan struct{}
	removedOnce sync.Once
	told        map[string]time.Time // removed ids told, when (loop's)

	// nodes are copies of memberlist's nodes, from its events (the nodes
	// Members() returns are shared with memberlist, which writes them under
	// its own lock); dead are the member ids declared dead here, which
	// must not come back (guarded by mu).
	nodes map[string]nodeCopy
	dead  map[string]time.Time
}

// nodeCopy is what this node keeps of a memberlist node.
type nodeCopy struct {
	name   string
	gossip string // host:port
	meta   []byte
}

func copyNode(n *memberlist.Node) nodeCopy {
	return nodeCopy{name: n.Name, gossip: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), meta: slices.Clone(n.Meta)}
}

func newGossip(cfg GossipConfig, meta memberMeta, client bool, log *slog.Logger) *gossip {
	meta.Client = client
	return &gossip{cfg: cfg, log: log, client: client, meta: meta, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), removed: make(chan struct{}), told: map[string]time.Time{},
		nodes: map[string]nodeCopy{}, dead: map[string]time.Time{}}
}

// encodeMeta encodes m, refusing what does not fit memberlist's cap even
// at its largest (leaving, and a resident count of 10 digits), so that no
// later update can fail.
func encodeMeta(m memberMeta) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	worst := m
	worst.Leaving, worst.Resident = true, 1<<31
	wb, err := json.Marshal(worst)
	if err != nil {
		return nil, err
	}
	if len(wb) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: node metadata is up to %d bytes, memberlist's cap is %d (fewer or shorter backbone names, a shorter node id or addresses)",
			actors.ErrBadConfig, len(wb), memberlist.MetaMaxSize)
	}
	return b, nil
}

func (g *gossip) StartMember(c *pc.Cluster) error { return g.start(c) }
func (g *gossip) StartClient(c *pc.Cluster) error { return g.start(c) }

func (g *gossip) start(c *pc.Cluster) error {
	g.cl = c
	host, port, err := c.ActorSystem.GetHostPort()
	if err != nil {
		return fmt.Errorf("cluster: actor address: %w", err)
	}
	g.mu.Lock()
	g.meta.Host, g.meta.Port = host, port
	enc, err := encodeMeta(g.meta)
	g.enc = enc
	g.mu.Unlock()
	if err != nil {
		return err
	}
	bh, bp, err := splitAddr(g.cfg.Bind)
	if err != nil {
		return fmt.Errorf("%w: gossip address: %w", actors.ErrBadConfig, err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.ActorSystem.ID
	mc.BindAddr, mc.BindPort = bh, bp
	mc.AdvertisePort = bp
	if g.cfg.Advertise != "" {
		ah, ap, _ := splitAddr(g.cfg.Advertise)
		mc.AdvertiseAddr, mc.AdvertisePort = ah, ap
	}
	mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = g.cfg.ProbeInterval, g.cfg.ProbeTimeout, g.cfg.SuspicionMult
	mc.GossipInterval = g.cfg.GossipInterval
	mc.PushPullInterval = 5 * time.Second
	mc.TCPTimeout = 2 * time.Second
	if g.cfg.Key != "" {
		k := sha256.Sum256([]byte("smile gossip key\x00" + g.cfg.Key))
		mc.SecretKey = k[:]
	}
	mc.Delegate = g
	mc.Events = g
	mc.Logger = log.New(slogWriter{g.log.With("lib", "memberlist")}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("%w: gossip on %s: %w", actors.ErrBadConfig, g.cfg.Bind, err)
	}
	g.ml = ml
	g.addr = copyNode(ml.LocalNode()).gossip
	go g.loop()
	if len(g.cfg.Seeds) > 0 {
		if _, err := ml.Join(g.cfg.Seeds); err != nil {
			if !g.joinLater {
				g.Shutdown(false)
				return fmt.Errorf("%w: gossip join via %v: %w", actors.ErrUnavailable, g.cfg.Seeds, err)
			}
			g.log.Warn("gossip join failed: starting alone, retrying in the background", "seeds", g.cfg.Seeds, "err", err)
		}
	}
	g.refresh()
	return nil
}

// Addr is the gossip address peers reach this node at.
func (g *gossip) Addr() string { return g.addr }

// Shutdown leaves (graceful: peers learn at once) and stops gossiping.
func (g *gossip) Shutdown(graceful bool) error {
	var err error
	g.stopOnce.Do(func() {
		if g.ml != nil {
			if graceful {
				err = g.ml.Leave(2 * time.Second)
			}
			if serr := g.ml.Shutdown(); err == nil {
				err = serr
			}
		}
		close(g.stop)
		if g.ml != nil {
			<-g.done
		}
	})
	return err
}

// setMeta changes this node's metadata and gossips it (best effort: the
// push-pull exchange carries it too).
func (g *gossip) setMeta(f func(*memberMeta)) error {
	g.mu.Lock()
	m := g.meta
	f(&m)
	enc, err := encodeMeta(m)
	if err == nil {
		if string(enc) == string(g.enc) {
			g.mu.Unlock()
			return nil
		}
		g.meta, g.enc = m, enc
	}
	g.mu.Unlock()
	if err != nil {
		return err
	}
	if g.ml != nil {
		// Wait for the broadcast to go out, a bounded while (0 would
		// wait forever: memberlist's UpdateNode has no "don't wait").
		err = g.ml.UpdateNode(500 * time.Millisecond)
	}
	g.refresh()
	return err
}

// loop turns memberlist's view into protoactor's topology, one change at
// a time (UpdateClusterTopology must not run concurrently with itself).
func (g *gossip) loop() {
	defer close(g.done)
	t := time.NewTicker(time.Second) // a change lost between kicks is caught up
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-g.kick:
		case <-t.C:
		}
		g.update()
	}
}

func (g *gossip) refresh() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

func (g *gossip) update() {
	now := time.Now()
	for id, t := range g.told {
		if now.Sub(t) > time.Hour {
			delete(g.told, id)
		}
	}
	g.mu.Lock()
	for id, t := range g.dead {
		if now.Sub(t) > time.Hour && g.nodes[id].name == "" { // not seen back in an hour
			delete(g.dead, id)
		}
	}
	nodes := make([]nodeCopy, 0, len(g.nodes))
	var back []nodeCopy
	for _, n := range g.nodes {
		if _, dead := g.dead[n.name]; dead {
			back = append(back, n)
			continue
		}
		nodes = append(nodes, n)
	}
	g.mu.Unlock()
	for _, n := range back {
		g.tellRemoved(n)
	}
	v := &view{byAddr: map[string]int{}}
	var members []*pc.Member
	for _, n := range nodes {
		var m memberMeta
		if err := json.Unmarshal(n.meta, &m); err != nil || m.Host == "" || m.Client {
			continue
		}
		members = append(members, &pc.Member{Id: n.name, Host: m.Host, Port: int32(m.Port), Kinds: []string{actors.KindVPLM}})
		v.Members = append(v.Members, memberView{ID: n.name, Meta: m})
	}
	slices.SortFunc(v.Members, func(a, b memberView) int { return strings.Compare(a.ID, b.ID) })
	for i, m := range v.Members {
		v.byAddr[m.Meta.addr()] = i
	}
	g.view.Store(v)
	g.cl.MemberList.UpdateClusterTopology(members)
	// Placement reconciles when who is in, and who is leaving, changes
	// (not on every load update).
	var sig strings.Builder
	for _, m := range v.Members {
		fmt.Fprintf(&sig, "%s/%s/%t;", m.ID, m.Meta.Node, m.Meta.Leaving)
	}
	if g.onView != nil && sig.String() != g.lastSig {
		g.lastSig = sig.String()
		g.onView(v)
	}
}

// tellRemoved tells a node that is alive again under a member id that
// was declared dead here to restart its identity (at most every 2
// seconds): protoactor blocks such an id for good, and placement has
// moved its vPLMs.
func (g *gossip) tellRemoved(n nodeCopy) {
	if t, ok := g.told[n.name]; ok && time.Since(t) < 2*time.Second {
		return
	}
	g.told[n.name] = time.Now()
	addr, err := net.ResolveTCPAddr("tcp", n.gossip)
	if err != nil {
		return
	}
	go func() {
		to := memberlist.Address{Addr: addr.String(), Name: n.name}
		if err := g.ml.SendToAddress(to, append([]byte{msgRemoved}, n.name...)); err != nil {
			g.log.Debug("telling a removed member", "member", n.name, "err", err)
		}
	}()
}

// Removed is closed when this node learns that its peers removed its
// member id: it must restart with a new identity.
func (g *gossip) Removed() <-chan struct{} { return g.removed }

// memberlist.Delegate

func (g *gossip) NodeMeta(limit int) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.enc) > limit {
		return nil // refused at start; cannot happen after
	}
	return slices.Clone(g.enc)
}

func (g *gossip) NotifyMsg(b []byte) {
	if len(b) > 0 && b[0] == msgRemoved && g.cl != nil && string(b[1:]) == g.cl.ActorSystem.ID {
		g.removedOnce.Do(func() {
			g.log.Warn("peers removed this node's member id (it was unreachable): restarting with a new identity")
			close(g.removed)
		})
	}
}

func (g *gossip) GetBroadcasts(int, int) [][]byte { return nil }
func (g *gossip) LocalState(bool) []byte          { return nil }
func (g *gossip) MergeRemoteState([]byte, bool)   {}

// memberlist.EventDelegate: each event is copied and kicks the topology
// loop. A node that failed (declared dead, not left after announcing its
// leave) is remembered: if it comes back under the same id, it is told to
// restart its identity.

func (g *gossip) NotifyJoin(n *memberlist.Node)   { g.note(n, false) }
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.note(n, false) }
func (g *gossip) NotifyLeave(n *memberlist.Node)  { g.note(n, true) }

func (g *gossip) note(n *memberlist.Node, left bool) {
	c := copyNode(n)
	g.mu.Lock()
	if left {
		// memberlist's Node.State is stale in this callback: a node that
		// left gracefully said so in its metadata first (Node.Leave).
		var m memberMeta
		if json.Unmarshal(c.meta, &m) != nil || !m.Leaving {
			g.dead[c.name] = time.Now()
		}
		delete(g.nodes, c.name)
	} else {
		g.nodes[c.name] = c
	}
	g.mu.Unlock()
	g.refresh()
}

// routeGossip answers the gossip addresses of the cluster's serving
// members, for a node or client joining through an API address.
const routeGossip = "/internal/v1/cluster/gossip"

// gossipSeeds asks members' HTTP APIs, in turn, for the gossip addresses
// of the cluster's members: the first that answers with some wins.
func gossipSeeds(ctx context.Context, apis []string, key string) ([]string, error) {
	hc := &http.Client{Timeout: 3 * time.Second}
	var errs []error
	for _, api := range apis {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+routeGossip, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if key != "" {
			req.Header.Set(secretHeader, key)
		}
		resp, err := hc.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
		}
		var out gossipReply
		if err == nil {
			err = json.Unmarshal(body, &out)
		}
		if err == nil && len(out.Members) == 0 {
			err = errors.New("no members")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", api, err))
			continue
		}
		return out.Members, nil
	}
	return nil, fmt.Errorf("%w: gossip addresses from %v: %w", actors.ErrUnavailable, apis, errors.Join(errs...))
}

type gossipReply struct {
	Members []string `json:"members"`
}

// serveGossip answers routeGossip: this node's gossip address first, then
// its live peers'.
func (g *gossip) serveGossip(w http.ResponseWriter, _ *http.Request) {
	out := gossipReply{Members: []string{g.Addr()}}
	for _, m := range g.members() {
		if m.Gossip != out.Members[0] {
			out.Members = append(out.Members, m.Gossip)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// MemberInfo is a serving member as gossip reports it.
type MemberInfo struct {
	MemberID  string   `json:"member_id"` // actor system id, new at every start
	Node      string   `json:"node"`      // persistent node id (Raft)
	Actor     string   `json:"actor_addr"`
	API       string   `json:"api_addr,omitempty"`
	Gossip    string   `json:"gossip_addr"`
	State     string   `json:"state"` // alive, suspect, leaving
	Backbones []string `json:"backbones,omitempty"`
	Devices   int      `json:"devices"`
	Resident  int      `json:"resident_vplms"`
}

// members lists the serving members, by node id.
func (g *gossip) members() []MemberInfo {
	g.mu.Lock()
	nodes := make([]nodeCopy, 0, len(g.nodes))
	for _, n := range g.nodes {
		if _, dead := g.dead[n.name]; !dead {
			nodes = append(nodes, n)
		}
	}
	g.mu.Unlock()
	var out []MemberInfo
	for _, n := range nodes {
		var m memberMeta
		if json.Unmarshal(n.meta, &m) != nil || m.Client {
			continue
		}
		st := "alive"
		if m.Leaving {
			st = "leaving"
		}
		out = append(out, MemberInfo{MemberID: n.name, Node: m.Node, Actor: m.addr(), API: m.API, Gossip: n.gossip, State: st,
			Backbones: m.Backbones, Devices: m.Devices, Resident: m.Resident})
	}
	slices.SortFunc(out, func(a, b MemberInfo) int { return strings.Compare(a.Node+a.MemberID, b.Node+b.MemberID) })
	return out
}
