package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pc "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/smile-vplm/smile/actors"
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
}

// DefaultNodeConfig listens on loopback with a free port.
func DefaultNodeConfig() NodeConfig {
	return NodeConfig{Host: "127.0.0.1", Device: actors.DefaultDeviceConfig(), VPLM: actors.DefaultVPLMConfig(), Trainer: actors.DefaultTrainerConfig()}
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
	return c.VPLM.Validate()
}

// Node is one SMILE member: an actor system in a (today single-member)
// protoactor cluster, a device actor per backbone, and the vPLM kind.
type Node struct {
	closeOnce sync.Once
	closeErr  error
	sys       *actor.ActorSystem
	cl        *pc.Cluster
	devices   map[string]*actors.DeviceHandle
	svc       *actors.Service
	log       *slog.Logger
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
	n := &Node{sys: sys, devices: map[string]*actors.DeviceHandle{}, log: log}
	ok := false
	defer func() {
		if !ok {
			n.stopDevices(context.Background())
			if n.cl != nil {
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
	rc := remote.Configure(cfg.Host, cfg.Port)
	ccfg := pc.Configure(Name, singleMember{}, disthash.New(), rc,
		pc.WithKinds(actors.VPLMKind(env)), pc.WithRequestTimeout(cfg.VPLM.RequestTimeout+5*time.Second))
	if err := startMember(pc.New(sys, ccfg), n); err != nil {
		return nil, err
	}
	var err error
	if n.svc, err = actors.NewService(n.cl, env, blobs, n.devices, backbones[0].Info().Name); err != nil {
		return nil, err
	}
	if err := n.svc.EnableTraining(blobs, cfg.Trainer); err != nil {
		return nil, err
	}
	tenants, err := cat.Tenants()
	if err != nil {
		return nil, err
	}
	for _, t := range tenants {
		if err := n.svc.ApplyTenant(ctx, t); err != nil {
			return nil, err
		}
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
	cl.StartMember()
	n.cl = cl
	return nil
}

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
		if n.svc != nil {
			errs = append(errs, n.svc.Shutdown(ctx))
		}
		errs = append(errs, n.stopDevices(ctx))
		n.closeErr = errors.Join(errs...)
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
