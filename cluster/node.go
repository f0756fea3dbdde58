package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pc "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/storage"
)

// Name is the protoactor cluster name of SMILE nodes.
const Name = "smile"

// NodeConfig configures a node.
type NodeConfig struct {
	// Host and Port are the actor system's remote (gRPC) address; port 0
	// picks a free one.
	Host   string
	Port   int
	Device actors.DeviceConfig
	VPLM   actors.VPLMConfig
	// Trainer configures training jobs (Trainer.DataDir: where datasets
	// are pulled).
	Trainer actors.TrainerConfig
	// Log receives the node's and protoactor's logs (nil: slog.Default()).
	Log *slog.Logger
	// Replica, when set, is the node's Raft catalog replica (StartReplica
	// on the same store and catalog): catalog writes go through Raft and
	// params blobs missing here come from peers. Without it the node
	// applies commands to the local catalog directly (tests of one node).
	Replica *Replica
	// Gossip configures membership (memberlist). Gossip.Seeds empty, the
	// node asks Join's members, then the catalog's known nodes, for them.
	Gossip GossipConfig
	// Join are HTTP API addresses of members (smile serve --join), asked
	// for the gossip addresses to join.
	Join []string
	// APIAddr is this node's HTTP API address, told to peers.
	APIAddr string
	// ClusterKey, when set, encrypts gossip and is presented to peers'
	// internal routes.
	ClusterKey string
}

// DefaultNodeConfig listens on loopback with a free port.
func DefaultNodeConfig() NodeConfig {
	return NodeConfig{Host: "127.0.0.1", Device: actors.DefaultDeviceConfig(), VPLM: actors.DefaultVPLMConfig(),
		Trainer: actors.DefaultTrainerConfig(), Gossip: DefaultGossipConfig()}
}

// Validate checks the configuration.
func (c NodeConfig) Validate() error {
	if c.Host == "" {
		return fmt.Errorf("%w: empty host", actors.ErrBadConfig)
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("%w: port %d", actors.ErrBadConfig, c.Port)
	}
	if err := c.Device.Validate(); err != nil {
		return err
	}
	if err := c.Trainer.Validate(); err != nil {
		return err
	}
	if err := c.Gossip.Validate(); err != nil {
		return err
	}
	for _, j := range c.Join {
		if err := dialable(j); err != nil {
			return fmt.Errorf("%w: join address: %w", actors.ErrBadConfig, err)
		}
	}
	return c.VPLM.Validate()
}

// Node is one SMILE member: an actor system in a protoactor cluster whose
// membership is gossiped (gossip.go), a device actor per backbone, the
// vPLM kind placed by SMILE's identity lookup (placement.go), and the
// node's service actor.
type Node struct {
	closeOnce sync.Once
	closeErr  error
	leaveOnce sync.Once
	sys       *actor.ActorSystem
	cl        *pc.Cluster
	g         *gossip
	place     *placement
	rp        *Replica // nil: a node without Raft (tests)
	devices   map[string]*actors.DeviceHandle
	svc       *actors.Service
	svcActor  *actor.PID
	log       *slog.Logger
	// life ends when the node closes: its goroutines stop.
	life    context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup // the node's goroutines, waited for by Close
	leaving atomic.Bool
}

// Start starts a node serving backbones (each owned by its device actor
// from now on: the caller must not run them, and closes them after
// Node.Close). The first backbone is the default for new vPLMs.
func Start(ctx context.Context, cfg NodeConfig, store *storage.Store, cat *storage.Catalog, backbones ...model.Backbone) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(backbones) == 0 {
		return nil, fmt.Errorf("%w: no backbone to serve", actors.ErrBadConfig)
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return log.With("lib", "protoactor")
	}))
	n := &Node{sys: sys, devices: map[string]*actors.DeviceHandle{}, log: log, rp: cfg.Replica}
	n.life, n.stop = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			n.stop()
			n.stopDevices(context.Background())
			if n.g != nil {
				n.g.Shutdown(false)
			}
			if n.cl != nil {
				if n.cl.Gossip != nil {
					n.cl.Gossip.Shutdown()
				}
				n.cl.Shutdown(false) // stops the actor system and frees the port
			} else {
				sys.Shutdown()
			}
		}
	}()
	// protoactor panics when its gRPC listener cannot bind: find out first.
	if cfg.Port != 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
		if err != nil {
			return nil, fmt.Errorf("%w: actor address: %w", actors.ErrBadConfig, err)
		}
		ln.Close()
	}
	var catalog actors.Catalog = LocalCatalog{C: cat}
	var blobs nodeStore = store
	if cfg.Replica != nil {
		catalog, blobs = cfg.Replica, replicatedStore{Store: store, r: cfg.Replica}
	}
	for _, bb := range backbones {
		name := bb.Info().Name
		if _, dup := n.devices[name]; dup {
			return nil, fmt.Errorf("%w: backbone %q given twice", actors.ErrBadConfig, name)
		}
		h, err := actors.SpawnDevice(sys, bb, blobs, cfg.Device)
		if err != nil {
			return nil, err
		}
		n.devices[name] = h
	}
	env := &actors.Env{
		Catalog: catalog,
		Device: func(b string) (*actors.DeviceHandle, bool) {
			h, ok := n.devices[b]
			return h, ok
		},
		Config: cfg.VPLM,
		Log:    log,
	}
	meta := memberMeta{API: cfg.APIAddr, Devices: len(backbones)}
	for _, bb := range backbones {
		meta.Backbones = append(meta.Backbones, bb.Info().Name)
	}
	gcfg := cfg.Gossip
	if cfg.Replica != nil {
		meta.Node = cfg.Replica.ID()
		if len(gcfg.Seeds) == 0 {
			gcfg.Seeds = n.seeds(ctx, cfg)
		}
	}
	n.g = newGossip(gcfg, meta, false, log)
	n.g.joinLater = cfg.Replica != nil
	n.place = newPlacement(n.g, func(id string) string {
		if v, err := cat.Get(id); err == nil {
			return v.GetBackbone()
		}
		return ""
	}, log)
	var svc atomic.Pointer[actors.Service] // set once the service exists
	canHost := func(id string) bool {
		v, err := cat.Get(id)
		s := svc.Load()
		return err != nil || s == nil || s.CanServe(v) // unknown here: let the actor say
	}
	n.place.canHost.Store(&canHost)
	n.g.onView = func(*view) {
		if n.place.actor != nil {
			n.sys.Root.Send(n.place.actor, &reconcile{})
		}
	}
	rc := remote.Configure(cfg.Host, cfg.Port)
	ccfg := pc.Configure(Name, n.g, n.place, rc,
		pc.WithKinds(actors.VPLMKind(env)), pc.WithRequestTimeout(cfg.VPLM.RequestTimeout+5*time.Second))
	quietProtoGossip(ccfg)
	if err := startMember(pc.New(sys, ccfg), n); err != nil {
		return nil, err
	}
	if cfg.Replica != nil {
		cfg.Replica.gossip.Store(n.g)
		n.every(3*time.Second, func() { n.rejoin(cfg) })
	}
	n.every(100*time.Millisecond, n.publishLoad)
	var err error
	if n.svc, err = actors.NewService(n.cl, env, blobs, n.devices, backbones[0].Info().Name); err != nil {
		return nil, err
	}
	if err := n.svc.EnableTraining(blobs, cfg.Trainer); err != nil {
		return nil, err
	}
	svc.Store(n.svc)
	if n.svcActor, err = actors.SpawnServiceActor(sys, n.svc); err != nil {
		return nil, err
	}
	// The tenants stored now, then every change the catalog applies.
	tenants, err := cat.Tenants()
	if err != nil {
		return nil, err
	}
	for _, t := range tenants {
		if err := n.svc.ApplyTenant(ctx, t); err != nil {
			return nil, err
		}
	}
	if cfg.Replica != nil {
		n.followTenants(cfg.Replica, cat)
	}
	ok = true
	log.Info("node started", "address", sys.Address(), "backbones", len(backbones))
	return n, nil
}

// startMember starts the cluster member, turning protoactor's panics on
// failure (a port taken in the meantime, a provider error) into an error.
func startMember(cl *pc.Cluster, n *Node) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%w: starting the cluster member: %v", actors.ErrUnavailable, v)
		}
	}()
	n.cl = cl
	cl.StartMember()
	return nil
}

// quietProtoGossip all but turns off protoactor's own gossip between
// members (heartbeats and topology over actor messages): memberlist does
// membership here, and that gossip's handlers race with the remote's
// block list and share a math/rand source unguarded (the race detector
// reports both).
func quietProtoGossip(c *pc.Config) {
	c.GossipInterval = 24 * time.Hour
	c.HeartbeatExpiration = 24 * time.Hour
}

// seeds are the gossip addresses to join: asked of the --join members,
// else of the nodes the catalog knows (a member restarting).
func (n *Node) seeds(ctx context.Context, cfg NodeConfig) []string {
	apis := slices.Clone(cfg.Join)
	if nodes, err := cfg.Replica.Catalog().Nodes(); err == nil {
		for _, ni := range nodes {
			if ni.GetId() != cfg.Replica.ID() && ni.GetApiAddr() != "" && !slices.Contains(apis, ni.GetApiAddr()) {
				apis = append(apis, ni.GetApiAddr())
			}
		}
	}
	if len(apis) == 0 {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := gossipSeeds(sctx, apis, cfg.ClusterKey)
	if err != nil {
		n.log.Warn("no gossip seeds yet: starting alone, retrying in the background", "err", err)
	}
	return s
}

// goRun runs f on a goroutine Close waits for.
func (n *Node) goRun(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// every runs f every d until the node closes.
func (n *Node) every(d time.Duration, f func()) {
	n.goRun(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-n.life.Done():
				return
			case <-t.C:
			}
			f()
		}
	})
}

// rejoin joins the gossip of the nodes the catalog names and gossip does
// not know (their API answered nothing at start, or a partition healed
// after memberlist gave them up): every 3 s.
func (n *Node) rejoin(cfg NodeConfig) {
	nodes, err := cfg.Replica.Catalog().Nodes()
	if err != nil {
		return
	}
	known := map[string]bool{cfg.Replica.ID(): true}
	for _, m := range n.g.members() {
		known[m.Node] = true
	}
	var apis []string
	for _, ni := range nodes {
		if !known[ni.GetId()] && ni.GetApiAddr() != "" {
			apis = append(apis, ni.GetApiAddr())
		}
	}
	if len(apis) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(n.life, 2*time.Second) // Close ends the wait
	defer cancel()
	if s, err := gossipSeeds(ctx, apis, cfg.ClusterKey); err == nil && len(s) > 0 {
		if _, err := n.g.ml.Join(s); err != nil {
			n.log.Debug("gossip rejoin", "err", err)
		}
	}
}

// publishLoad gossips the number of vPLMs this node hosts when it changed
// (the bounded-load placement reads it): ten times a second.
func (n *Node) publishLoad() {
	r := n.place.Resident()
	if err := n.g.setMeta(func(m *memberMeta) { m.Resident = r }); err != nil {
		n.log.Debug("gossip metadata", "err", err)
	}
}

// followTenants applies every tenant change the catalog commits, made
// through any node, to this node's device schedulers: the latest settings
// of each tenant, in the background (the state machine must not wait).
func (n *Node) followTenants(rp *Replica, cat *storage.Catalog) {
	var mu sync.Mutex
	pending := map[string]*smilepb.Tenant{}
	kick := make(chan struct{}, 1)
	rp.OnTenant(func(t *smilepb.Tenant) {
		mu.Lock()
		if t == nil { // a snapshot was installed: every tenant, again
			pending = nil
		} else if pending != nil {
			pending[t.GetName()] = t
		}
		mu.Unlock()
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	n.goRun(func() {
		for {
			select {
			case <-n.life.Done():
				return
			case <-kick:
			}
			mu.Lock()
			ts := pending
			pending = map[string]*smilepb.Tenant{}
			mu.Unlock()
			if ts == nil {
				all, err := cat.Tenants()
				if err != nil {
					n.log.Warn("reading the tenants after a snapshot install", "err", err)
					continue
				}
				ts = map[string]*smilepb.Tenant{}
				for _, t := range all {
					ts[t.GetName()] = t
				}
			}
			for _, t := range ts {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := n.svc.ApplyTenant(ctx, t); err != nil {
					n.log.Warn("applying a tenant's settings from the catalog", "tenant", t.GetName(), "err", err)
				}
				cancel()
			}
		}
	})
}

// Removed is closed when the cluster removed this node's member id (it
// was unreachable long enough to be declared dead): the node must be
// closed and started again, which gives it a new identity.
func (n *Node) Removed() <-chan struct{} { return n.g.Removed() }

// Leave hands this node's vPLMs over: peers stop placing vPLMs here, each
// resident vPLM is activated on its new home, then the local activations
// stop (callers waiting on them resend to the new ones). It answers the
// number of vPLMs handed over. Close follows (after the HTTP server has
// drained), and leaves the gossip saying so.
func (n *Node) Leave(ctx context.Context) (int, error) {
	handed := 0
	var err error
	n.leaveOnce.Do(func() {
		n.leaving.Store(true)
		if err = n.g.setMeta(func(m *memberMeta) { m.Leaving = true }); err != nil {
			n.log.Warn("announcing the leave", "err", err)
		}
		// Peers see the leave within a few gossip rounds; until then a
		// request may still be placed here and is handed over below.
		select {
		case <-time.After(3 * n.g.cfg.GossipInterval):
		case <-ctx.Done():
		}
		done := make(chan int, 1)
		n.sys.Root.Send(n.place.actor, &handOver{done: done})
		select {
		case handed = <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	})
	return handed, err
}

// Resident is the number of vPLM activations on this node.
func (n *Node) Resident() int { return n.place.Resident() }

// Members is the cluster's serving members as this node sees them.
func (n *Node) Members() []MemberInfo { return n.g.members() }

// GossipAddr is this node's gossip address.
func (n *Node) GossipAddr() string { return n.g.Addr() }

// Service is the node's vPLM service.
func (n *Node) Service() *actors.Service { return n.svc }

// Address is the node's actor-system address (host:port).
func (n *Node) Address() string { return n.sys.Address() }

// Close stops the training jobs (they stay in storage, for ResumeJobs at
// the next start), then the device actors (finishing their batch in flight
// and answering queued requests with unavailable), then the cluster
// member. An error means a device actor did not finish in time: its
// compute may still run, so the caller must not close the backbones. Close
// is idempotent.
func (n *Node) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.svcActor != nil { // its calls in flight end first
			_ = n.sys.Root.StopFuture(n.svcActor).Wait()
		}
		if n.svc != nil {
			errs = append(errs, n.svc.Shutdown(ctx))
		}
		errs = append(errs, n.stopDevices(ctx))
		n.closeErr = errors.Join(errs...)
		n.stop()
		n.wg.Wait()
		n.g.Shutdown(n.leaving.Load()) // a leaving node says so: peers do not count it dead
		// protoactor's gossip loop ticks once a day here (quietProtoGossip):
		// stop it, or it outlives the node.
		n.cl.Gossip.Shutdown()
		n.cl.Shutdown(false)
	})
	return n.closeErr
}

func (n *Node) stopDevices(ctx context.Context) error {
	var errs []error
	for _, h := range n.devices {
		if h != nil && h.PID != nil {
			errs = append(errs, h.Stop(ctx, n.sys))
		}
	}
	return errors.Join(errs...)
}

// Device returns the node's device actor for a backbone.
func (n *Node) Device(backbone string) (*actors.DeviceHandle, bool) {
	h, ok := n.devices[backbone]
	return h, ok
}

// ActorSystem is the node's protoactor system (for local messages to its
// device actors).
func (n *Node) ActorSystem() *actor.ActorSystem { return n.sys }

// nodeStore is what a node's actors keep in storage.
type nodeStore interface {
	actors.TrainStore
	actors.ParamsSource
}

// replicatedStore is the node's store with params blobs read through the
// replica: a blob missing or corrupt here is fetched from a peer.
type replicatedStore struct {
	*storage.Store
	r *Replica
}

func (s replicatedStore) GetBlob(digest string) ([]byte, error) { return s.r.GetBlob(digest) }
func (s replicatedStore) PutBlob(data []byte) (string, error)   { return s.r.PutBlob(data) }
