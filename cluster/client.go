package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	pc "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/smile-vplm/smile/actors"
)

// ClientConfig configures a client member: an actor system that gossips
// with the cluster and calls vPLM actors directly, but hosts none.
type ClientConfig struct {
	Host string // actor system (gRPC) host
	Port int    // 0: a free port
	// Gossip is the memberlist address (port 0: a free one).
	Gossip string
	// Seeds are HTTP API addresses of members (as smile serve --join),
	// asked in turn for the gossip addresses to join.
	Seeds []string
	// Key is the cluster key (gossip encryption, internal routes).
	Key string
	// Failure, when set, tunes failure detection (its ProbeInterval,
	// ProbeTimeout, SuspicionMult and GossipInterval; the rest is ignored):
	// the cluster's nodes' settings, DefaultGossipConfig's by default.
	Failure *GossipConfig
	Log     *slog.Logger
}

// ClientMember is a started client member.
type ClientMember struct {
	sys       *actor.ActorSystem
	cl        *pc.Cluster
	g         *gossip
	closeOnce sync.Once
}

// StartClient joins the cluster as a protoactor client (StartClient: it
// gossips, resolves vPLMs through SMILE's placement and calls them, and
// hosts nothing).
func StartClient(ctx context.Context, cfg ClientConfig) (c *ClientMember, err error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Gossip == "" {
		cfg.Gossip = net.JoinHostPort(cfg.Host, "0")
	}
	if len(cfg.Seeds) == 0 {
		return nil, fmt.Errorf("%w: a client needs the API address of at least one member", actors.ErrBadConfig)
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	gcfg := DefaultGossipConfig()
	if f := cfg.Failure; f != nil {
		gcfg.ProbeInterval, gcfg.ProbeTimeout, gcfg.SuspicionMult, gcfg.GossipInterval = f.ProbeInterval, f.ProbeTimeout, f.SuspicionMult, f.GossipInterval
	}
	gcfg.Bind, gcfg.Key = cfg.Gossip, cfg.Key
	if err := gcfg.Validate(); err != nil {
		return nil, err
	}
	seeds, err := gossipSeeds(ctx, cfg.Seeds, cfg.Key)
	if err != nil {
		return nil, err
	}
	gcfg.Seeds = seeds
	if cfg.Port != 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
		if err != nil {
			return nil, fmt.Errorf("%w: actor address: %w", actors.ErrBadConfig, err)
		}
		ln.Close()
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return log.With("lib", "protoactor")
	}))
	g := newGossip(gcfg, memberMeta{}, true, log)
	place := newPlacement(g, nil, log)
	ccfg := pc.Configure(Name, g, place, remote.Configure(cfg.Host, cfg.Port))
	quietProtoGossip(ccfg)
	cl := pc.New(sys, ccfg)
	c = &ClientMember{sys: sys, cl: cl, g: g}
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%w: starting the client member: %v", actors.ErrUnavailable, v)
		}
		if err != nil {
			c.Close()
		}
	}()
	cl.StartClient()
	return c, nil
}

// Cluster is the client's protoactor cluster (cluster.Get resolves vPLMs).
func (c *ClientMember) Cluster() *pc.Cluster { return c.cl }

// Servers are the actor addresses of the live serving members, those not
// leaving first.
func (c *ClientMember) Servers() []string {
	var first, last []string
	for _, m := range c.g.members() {
		if m.State == "leaving" {
			last = append(last, m.Actor)
		} else {
			first = append(first, m.Actor)
		}
	}
	return append(first, last...)
}

// Close leaves the gossip and stops the actor system. It never calls
// protoactor's Cluster.Shutdown, which panics on a client.
func (c *ClientMember) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.g.Shutdown(true)
		if c.cl.IdentityLookup != nil {
			c.cl.IdentityLookup.Shutdown()
		}
		c.sys.Shutdown()
		if c.cl.Remote != nil {
			c.cl.Remote.Shutdown(false)
		}
	})
	return err
}
