package actorclient

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
)

// Fakes for the tests of the client's failover and resolution rules:
// scripted service actors at made-up member addresses, all in the
// client's own actor system (an address resolver stands in for the
// network: no gRPC, so nothing but the rules is under test), and a member
// that lists them.

var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// script answers a request: a reply, or nil to answer nothing.
type script func(req *smilepb.ServiceRequest) *smilepb.ServiceReply

// fakeNode is a node's service actor as a process: it answers by its
// script and records the ops it was sent.
type fakeNode struct {
	addr string
	sys  *actor.ActorSystem
	mu   sync.Mutex
	fn   script
	ops  []string
}

func (f *fakeNode) SendUserMessage(_ *actor.PID, m any) {
	var sender *actor.PID
	if env, ok := m.(*actor.MessageEnvelope); ok {
		m, sender = env.Message, env.Sender
	}
	req, ok := m.(*smilepb.ServiceRequest)
	if !ok {
		return
	}
	f.mu.Lock()
	f.ops = append(f.ops, opName(req))
	fn := f.fn
	f.mu.Unlock()
	if rep := fn(req); rep != nil && sender != nil {
		rep.Node = f.addr
		f.sys.Root.Send(sender, rep)
	}
}

func (f *fakeNode) SendSystemMessage(*actor.PID, any) {}
func (f *fakeNode) Stop(*actor.PID)                   {}

func (f *fakeNode) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops)
}

// fakeNet is a test's actor system and the fake nodes it resolves.
type fakeNet struct {
	sys   *actor.ActorSystem
	mu    sync.Mutex
	nodes map[string]*fakeNode
}

func newFakeNet(t *testing.T) *fakeNet {
	n := &fakeNet{sys: actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return quiet })),
		nodes: map[string]*fakeNode{}}
	n.sys.ProcessRegistry.RegisterAddressResolver(func(pid *actor.PID) (actor.Process, bool) {
		n.mu.Lock()
		defer n.mu.Unlock()
		f, ok := n.nodes[pid.Address]
		if !ok || pid.Id != actors.ServiceActorName {
			return nil, false
		}
		return f, true
	})
	t.Cleanup(n.sys.Shutdown)
	return n
}

// node adds a fake node answering by fn (nil: a node with no service
// actor, whose requests are dead letters).
func (n *fakeNet) node(fn script) *fakeNode {
	n.mu.Lock()
	defer n.mu.Unlock()
	f := &fakeNode{addr: fmt.Sprintf("fake-%d:1", len(n.nodes)), sys: n.sys, fn: fn}
	if fn != nil {
		n.nodes[f.addr] = f
	} else {
		n.nodes[f.addr+"-dead"] = f // counted, never resolved
	}
	return f
}

// fakes starts a fake network with a node per script.
func fakes(t *testing.T, scripts ...script) (*fakeNet, []*fakeNode) {
	t.Helper()
	n := newFakeNet(t)
	var out []*fakeNode
	for _, fn := range scripts {
		out = append(out, n.node(fn))
	}
	return n, out
}

// fakeMember lists the fakes' addresses as the serving members.
type fakeMember struct {
	mu      sync.Mutex
	servers []string
	closed  bool
}

func (m *fakeMember) Servers() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.servers)
}

func (m *fakeMember) set(nodes ...*fakeNode) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.servers = nil
	for _, n := range nodes {
		m.servers = append(m.servers, n.addr)
	}
}

func (m *fakeMember) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

// client is a client over nodes (in that order of preference) with
// short timeouts.
func (n *fakeNet) client(t *testing.T, nodes ...*fakeNode) (*Client, *fakeMember) {
	t.Helper()
	m := &fakeMember{}
	m.set(nodes...)
	cfg := DefaultConfig()
	cfg.Seeds = []string{"unused:1"}
	cfg.AttemptTimeout = 300 * time.Millisecond
	cfg.Timeout = 5 * time.Second
	cfg.PollEvery = 10 * time.Millisecond
	cfg.Log = quiet
	c := newClient(m, n.sys, nil, nil, cfg)
	t.Cleanup(func() { c.Close() })
	return c, m
}

// Scripts.

func answer(rep *smilepb.ServiceReply) script {
	return func(*smilepb.ServiceRequest) *smilepb.ServiceReply { return rep }
}

func fails(code, msg string) script {
	return answer(&smilepb.ServiceReply{Error: &smilepb.Error{Code: code, Message: msg}})
}

func silent() script { return func(*smilepb.ServiceRequest) *smilepb.ServiceReply { return nil } }

// fakeCatalog is a catalog that several fake nodes share: a create that a
// node swallows (answers nothing) is applied all the same.
type fakeCatalog struct {
	mu      sync.Mutex
	entries map[string]*smilepb.VPLM
}

func newFakeCatalog() *fakeCatalog { return &fakeCatalog{entries: map[string]*smilepb.VPLM{}} }

// serve applies req and answers it; swallow makes the node answer nothing
// to writes (applied all the same).
func (c *fakeCatalog) serve(swallow bool) script {
	return func(req *smilepb.ServiceRequest) *smilepb.ServiceReply {
		c.mu.Lock()
		defer c.mu.Unlock()
		rep := &smilepb.ServiceReply{}
		switch op := req.GetOp().(type) {
		case *smilepb.ServiceRequest_Create:
			r := op.Create
			if _, ok := c.entries[r.GetId()]; ok {
				return &smilepb.ServiceReply{Error: &smilepb.Error{Code: actors.CodeExists, Message: "exists"}}
			}
			v := &smilepb.VPLM{Id: r.GetId(), Tenant: "default", Backbone: "use-lite", Task: r.GetTask(), Labels: r.GetLabels(), Version: 1,
				Adapter:       &smilepb.AdapterConfig{Kind: smilepb.AdapterKind_ADAPTER_BOTTLENECK, Rank: 64, Layers: []uint32{2}},
				CreatedUnixMs: time.Now().UnixMilli()}
			c.entries[v.Id] = v
			rep.Vplm = v
		case *smilepb.ServiceRequest_Delete:
			if _, ok := c.entries[op.Delete]; !ok {
				return &smilepb.ServiceReply{Error: &smilepb.Error{Code: actors.CodeNotFound, Message: "no such vPLM"}}
			}
			delete(c.entries, op.Delete)
		case *smilepb.ServiceRequest_Get:
			v, ok := c.entries[op.Get]
			if !ok {
				return &smilepb.ServiceReply{Error: &smilepb.Error{Code: actors.CodeNotFound, Message: "no such vPLM"}}
			}
			rep.Vplm = v
			return rep
		default:
			return &smilepb.ServiceReply{Error: &smilepb.Error{Code: actors.CodeBadRequest, Message: "not faked"}}
		}
		if swallow {
			return nil
		}
		return rep
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
