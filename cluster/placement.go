package cluster

import (
	"hash/fnv"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pc "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/smile-vplm/smile/actors"
)

// Placement: SMILE's identity lookup, in place of disthash (which waits a
// hard-coded 5 seconds on a dead owner and moves every actor whose hash
// owner changes).
//
// A vPLM's home is the first of the serving members ranked by rendezvous
// hashing (highest random weight of node id and vPLM id) among those that
// serve its backbone and are neither leaving nor suspected. The home's
// placement actor decides where the vPLM is activated, once:
//   - an activation it already knows (its own, or one registered with it)
//     is the answer: a vPLM stays where it is resident (affinity), and a
//     node joining does not move it;
//   - else the home activates it itself if its load (activations hosted)
//     stays within the bound ceil((1+Epsilon) x mean load), or asks the
//     next member in rank order within the bound (bounded load).
//
// When membership changes, every node registers each of its activations
// whose home moved with the new home, so the new home knows where it is.
//
// Duplicate activations: a node's placement actor is the only spawner of
// vPLM actors on it, so there is at most one activation of a vPLM per
// node. Across nodes there is at most one while the nodes agree on
// membership, since one home decides. While views differ (a failure or
// join not yet gossiped everywhere) a second home can activate a second
// copy; the registration that follows the change reaches one home, which
// keeps the older activation and stops the other. vPLM actors hold no
// state of their own (every request reads the catalog), so a duplicate
// costs memory, never a wrong answer. TestPlacementDuplicates measures it.

// placementName is the placement actor's name on every serving node.
const placementName = "smile-placement"

// Epsilon bounds a node's load to (1+Epsilon) times the mean.
const Epsilon = 0.25

// spillTimeout bounds a home's wait on one spill target: well under a
// caller's wait on the home, so one dead target costs the caller nothing.
const spillTimeout = 500 * time.Millisecond

// Request ids of ActivationRequest between placement actors.
const (
	reqResolve = ""      // from a caller: decide, as the home
	reqPlace   = "place" // from a home: activate here if within the bound
	reqTake    = "take"  // from a leaving node, or a home that cannot serve it: activate here if you can serve it
)

// placement is the identity lookup of a node or client.
type placement struct {
	cl     *pc.Cluster
	g      *gossip
	log    *slog.Logger
	client bool
	// backboneOf names a vPLM's backbone ("" when unknown: any member).
	backboneOf func(id string) string
	// canHost reports whether this node can serve a vPLM (a plot-mode
	// vPLM needs its PLOT table here); unset: any.
	canHost atomic.Pointer[func(id string) bool]
	timeout time.Duration

	// suspect are actor addresses whose endpoint terminated, and when:
	// skipped for a while, ahead of memberlist's verdict.
	mu      sync.Mutex
	suspect map[string]time.Time

	actor *actor.PID
	sub   *eventstream.Subscription
	// resident is the number of activations on this node.
	resident atomic.Int64
}

func newPlacement(g *gossip, backboneOf func(string) string, log *slog.Logger) *placement {
	return &placement{g: g, backboneOf: backboneOf, log: log, timeout: 2 * time.Second, suspect: map[string]time.Time{}}
}

func (p *placement) Setup(cl *pc.Cluster, _ []string, isClient bool) {
	p.cl, p.client = cl, isClient
	p.sub = cl.ActorSystem.EventStream.Subscribe(func(ev any) {
		switch e := ev.(type) {
		case *remote.EndpointTerminatedEvent:
			p.mu.Lock()
			p.suspect[e.Address] = time.Now()
			p.mu.Unlock()
		case *remote.EndpointConnectedEvent:
			p.mu.Lock()
			delete(p.suspect, e.Address)
			p.mu.Unlock()
		}
	})
	if isClient {
		return
	}
	props := actor.PropsFromProducer(func() actor.Actor {
		return &placementActor{p: p, local: map[string]*actor.PID{}, byPID: map[string]string{}, dir: map[string]*actor.PID{},
			dirBy: map[string]string{}, sent: map[string]int{}, seen: map[string]int{}, spilling: map[string][]*actor.PID{}}
	})
	pid, err := cl.ActorSystem.Root.SpawnNamed(props, placementName)
	if err != nil {
		p.log.Error("placement actor", "err", err)
		return
	}
	p.actor = pid
}

func (p *placement) Shutdown() {
	if p.sub != nil {
		p.cl.ActorSystem.EventStream.Unsubscribe(p.sub)
	}
	if p.actor != nil {
		_ = p.cl.ActorSystem.Root.PoisonFuture(p.actor).Wait()
	}
}

// hostable reports whether this node can serve id (canHost).
func (p *placement) hostable(id string) bool {
	f := p.canHost.Load()
	return f == nil || (*f)(id)
}

// isSuspect reports whether addr's endpoint terminated lately (2s).
func (p *placement) isSuspect(addr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.suspect[addr]
	if ok && time.Since(t) > 2*time.Second {
		delete(p.suspect, addr)
		return false
	}
	return ok
}

// ranked is the members that may host id, best first. exclude names an
// actor address to leave out (a leaving node placing its own vPLMs).
func (p *placement) ranked(id, exclude string) []memberView {
	v := p.g.view.Load()
	if v == nil {
		return nil
	}
	bb := ""
	if p.backboneOf != nil {
		bb = p.backboneOf(id)
	}
	type scored struct {
		m memberView
		w uint64
	}
	out := make([]scored, 0, len(v.Members))
	for _, m := range v.Members {
		addr := m.Meta.addr()
		if m.Meta.Leaving || addr == exclude || p.isSuspect(addr) {
			continue
		}
		if bb != "" && !slices.Contains(m.Meta.Backbones, bb) {
			continue
		}
		out = append(out, scored{m, hrw(m.Meta.Node, m.ID, id)})
	}
	slices.SortFunc(out, func(a, b scored) int {
		switch {
		case a.w > b.w:
			return -1
		case a.w < b.w:
			return 1
		}
		return 0
	})
	ms := make([]memberView, len(out))
	for i, s := range out {
		ms[i] = s.m
	}
	return ms
}

// hrw is the rendezvous weight of a node for a vPLM: by the node's
// persistent id, so a node that restarts is home to the same vPLMs.
func hrw(node, member, id string) uint64 {
	if node == "" {
		node = member
	}
	h := fnv.New64a()
	h.Write([]byte(node))
	h.Write([]byte{0})
	h.Write([]byte(id))
	x := h.Sum64()
	// splitmix64's finaliser: fnv's low bits mix poorly.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// Get resolves a vPLM's activation: asks its home (then the next members,
// if the home does not answer).
func (p *placement) Get(ci *pc.ClusterIdentity) *actor.PID {
	cands := p.ranked(ci.Identity, "")
	for i, m := range cands {
		if i == 3 {
			break
		}
		pid := p.ask(m.Meta.addr(), ci, reqResolve)
		if pid != nil {
			return pid
		}
	}
	return nil
}

// ask sends an activation request to the placement actor at addr.
func (p *placement) ask(addr string, ci *pc.ClusterIdentity, kind string) *actor.PID {
	res, err := p.cl.ActorSystem.Root.RequestFuture(actor.NewPID(addr, placementName),
		&pc.ActivationRequest{ClusterIdentity: ci, RequestId: kind}, p.timeout).Result()
	if err != nil {
		// No suspicion from a timeout: the home may be waiting on a
		// spill target that died. Broken connections and gossip decide.
		p.log.Debug("activation request", "at", addr, "id", ci.Identity, "err", err)
		return nil
	}
	r, ok := res.(*pc.ActivationResponse)
	if !ok || r.Failed || r.Pid == nil {
		return nil
	}
	return r.Pid
}

// RemovePid forgets an activation a caller found dead: its home drops it
// from its directory.
func (p *placement) RemovePid(ci *pc.ClusterIdentity, pid *actor.PID) {
	p.cl.PidCache.RemoveByValue(ci.Identity, ci.Kind, pid)
	if cands := p.ranked(ci.Identity, ""); len(cands) > 0 {
		p.cl.ActorSystem.Root.Send(actor.NewPID(cands[0].Meta.addr(), placementName),
			&pc.ActivationTerminated{Pid: pid, ClusterIdentity: ci})
	}
}

// Resident is the number of vPLM activations on this node.
func (p *placement) Resident() int { return int(p.resident.Load()) }

// bound is the most activations a node may host after one more: the
// members' mean load, times 1+Epsilon, rounded up.
func bound(loads []int) int {
	total := 1
	for _, l := range loads {
		total += l
	}
	return int(math.Ceil((1 + Epsilon) * float64(total) / float64(max(len(loads), 1))))
}

// placementActor is a node's one spawner of vPLM actors, and the
// directory of the vPLMs it is home to.
type placementActor struct {
	p     *placement
	local map[string]*actor.PID // id → activation on this node
	byPID map[string]string     // activation's pid id → vPLM id
	dir   map[string]*actor.PID // id → activation elsewhere, for vPLMs homed here
	// dirBy maps a directory entry's pid (watched) back to its vPLM.
	dirBy map[string]string
	// sent counts the vPLMs this home placed on each member since that
	// member's gossiped load last changed (seen): added to the gossiped
	// load, which lags a burst of activations.
	sent map[string]int
	seen map[string]int
	// spilling holds the callers waiting while a vPLM homed here is
	// activated elsewhere: one placement per vPLM at a time.
	spilling map[string][]*actor.PID
	// handing marks a node that is leaving: it activates nothing more.
	handing bool
}

// handOver is sent by Node.Leave: place every local vPLM on its new home,
// then stop the local activations.
type handOver struct{ done chan int }

// reconcile is sent after each change of membership.
type reconcile struct{}

func (a *placementActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *pc.ActivationRequest:
		a.activation(ctx, m)
	case *pc.Activation: // a node registers an activation with its home
		a.register(ctx, m)
	case *pc.ActivationTerminated:
		key := m.GetClusterIdentity().GetIdentity()
		if d, ok := a.dir[key]; ok && d.Equal(m.Pid) {
			a.dropDir(ctx, key)
		}
	case *actor.Terminated:
		if id, ok := a.dirBy[pidKey(m.Who)]; ok { // a directory entry's activation ended
			if d, ok := a.dir[id]; ok && d.Equal(m.Who) {
				a.dropDir(ctx, id)
			}
			delete(a.dirBy, pidKey(m.Who))
			return
		}
		if id, ok := a.byPID[m.Who.Id]; ok {
			delete(a.byPID, m.Who.Id)
			if cur, ok := a.local[id]; ok && cur.Id == m.Who.Id {
				delete(a.local, id)
				a.p.resident.Store(int64(len(a.local)))
				a.p.cl.PidCache.RemoveByValue(id, actors.KindVPLM, m.Who)
				// Tell the home, if it is elsewhere, to drop its record.
				if c := a.p.ranked(id, ""); len(c) > 0 && c[0].Meta.addr() != ctx.Self().Address {
					ctx.Send(actor.NewPID(c[0].Meta.addr(), placementName),
						&pc.ActivationTerminated{Pid: m.Who, ClusterIdentity: pc.NewClusterIdentity(id, actors.KindVPLM)})
				}
			}
		}
	case *reconcile:
		a.reconcile(ctx)
	case *handOver:
		a.handOver(ctx, m)
	}
}

func (a *placementActor) activation(ctx actor.Context, m *pc.ActivationRequest) {
	id := m.GetClusterIdentity().GetIdentity()
	if pid, ok := a.local[id]; ok {
		ctx.Respond(&pc.ActivationResponse{Pid: pid})
		return
	}
	if a.handing {
		ctx.Respond(&pc.ActivationResponse{Failed: true})
		return
	}
	self := ctx.Self().Address
	if m.RequestId != reqResolve {
		// Another node places id here: an activation this node knows of
		// elsewhere is the answer (no second copy).
		if pid := a.liveDir(ctx, id); pid != nil {
			ctx.Respond(&pc.ActivationResponse{Pid: pid})
			return
		}
		if !a.p.hostable(id) {
			ctx.Respond(&pc.ActivationResponse{Failed: true})
			return
		}
	}
	switch {
	case m.RequestId == reqTake:
		ctx.Respond(a.spawn(ctx, id))
		return
	case strings.HasPrefix(m.RequestId, reqPlace):
		// A home spills here: within the bound, by this node's exact count
		// against the larger of its own bound and the home's, or refused.
		homeBound, _ := strconv.Atoi(strings.TrimPrefix(m.RequestId, reqPlace))
		_, _, b := a.loads(id, self)
		if len(a.local)+1 > max(b, homeBound) {
			ctx.Respond(&pc.ActivationResponse{Failed: true})
			return
		}
		ctx.Respond(a.spawn(ctx, id))
		return
	}
	if pid := a.liveDir(ctx, id); pid != nil {
		ctx.Respond(&pc.ActivationResponse{Pid: pid})
		return
	}
	if waiting, ok := a.spilling[id]; ok { // being placed elsewhere
		a.spilling[id] = append(waiting, ctx.Sender())
		return
	}
	cands, loads, b := a.loads(id, self)
	if len(cands) == 0 && !a.hosts(id) {
		ctx.Respond(&pc.ActivationResponse{Failed: true})
		return
	}
	steps := a.plan(id, self, cands, loads, b)
	if len(steps) == 0 || steps[0].addr == self {
		ctx.Respond(a.spawn(ctx, id))
		return
	}
	a.spilling[id] = []*actor.PID{ctx.Sender()}
	a.spill(ctx, m.ClusterIdentity, steps)
}

// step is one member a home asks to activate a vPLM, and how.
type step struct{ addr, kind string }

// plan is where a home tries to activate id, in order: the members within
// the load bound in rank order (each may still refuse, by its exact
// count). A plot-mode vPLM whose table is not here skips this node, and
// then asks the others regardless of load. With every step refused, the
// home activates it itself: over the bound (loads known late, in a burst
// of first activations) rather than nowhere.
func (a *placementActor) plan(id, self string, cands []memberView, loads []int, b int) []step {
	here := a.p.hostable(id)
	var steps, rest []step
	for i, c := range cands {
		addr := c.Meta.addr()
		if addr == self && !here {
			continue
		}
		if loads[i]+1 <= b {
			steps = append(steps, step{addr, reqPlace + strconv.Itoa(b)})
		}
		if !here {
			rest = append(rest, step{addr, reqTake})
		}
	}
	return append(steps, rest...)
}

// loads ranks the members that may host id with their loads (this node's
// exact, the others' as gossiped) and the bound.
func (a *placementActor) loads(id, self string) ([]memberView, []int, int) {
	cands := a.p.ranked(id, "")
	loads := make([]int, len(cands))
	for i, c := range cands {
		addr := c.Meta.addr()
		if addr == self {
			loads[i] = len(a.local)
			continue
		}
		if a.seen[addr] != c.Meta.Resident { // a fresh load: our placements are in it
			a.seen[addr], a.sent[addr] = c.Meta.Resident, 0
		}
		loads[i] = c.Meta.Resident + a.sent[addr]
	}
	return cands, loads, bound(loads)
}

// spill asks the steps' members in turn to activate ci, activating it
// here when every one refuses, and answers the callers waiting on it.
func (a *placementActor) spill(ctx actor.Context, ci *pc.ClusterIdentity, steps []step) {
	id := ci.Identity
	if len(steps) == 0 || steps[0].addr == ctx.Self().Address {
		a.answer(ctx, id, a.spawn(ctx, id))
		return
	}
	st := steps[0]
	f := ctx.RequestFuture(actor.NewPID(st.addr, placementName),
		&pc.ActivationRequest{ClusterIdentity: ci, RequestId: st.kind}, spillTimeout)
	ctx.ReenterAfter(f, func(res any, err error) {
		if pid, ok := a.local[id]; ok { // activated here meanwhile
			a.answer(ctx, id, &pc.ActivationResponse{Pid: pid})
			return
		}
		r, ok := res.(*pc.ActivationResponse)
		if err != nil || !ok || r.Pid == nil {
			a.spill(ctx, ci, steps[1:])
			return
		}
		a.sent[st.addr]++
		a.setDir(ctx, id, r.Pid)
		a.answer(ctx, id, r)
	})
}

// answer answers every caller waiting on id's placement.
func (a *placementActor) answer(ctx actor.Context, id string, r *pc.ActivationResponse) {
	waiting := a.spilling[id]
	delete(a.spilling, id)
	for _, s := range waiting {
		ctx.Send(s, r)
	}
}

// hosts reports whether this node serves id's backbone.
func (a *placementActor) hosts(id string) bool {
	if a.p.backboneOf == nil {
		return true
	}
	bb := a.p.backboneOf(id)
	a.p.g.mu.Lock()
	defer a.p.g.mu.Unlock()
	return bb == "" || slices.Contains(a.p.g.meta.Backbones, bb)
}

func (a *placementActor) spawn(ctx actor.Context, id string) *pc.ActivationResponse {
	if pid, ok := a.local[id]; ok {
		return &pc.ActivationResponse{Pid: pid}
	}
	kind := a.p.cl.GetClusterKind(actors.KindVPLM)
	if kind == nil {
		return &pc.ActivationResponse{Failed: true}
	}
	ci := pc.NewClusterIdentity(id, actors.KindVPLM)
	pid := ctx.SpawnPrefix(pc.WithClusterIdentity(kind.Props, ci), id)
	a.local[id] = pid
	a.byPID[pid.Id] = id
	delete(a.dir, id)
	a.p.resident.Store(int64(len(a.local)))
	return &pc.ActivationResponse{Pid: pid}
}

// register records an activation another node holds of a vPLM homed
// here. If this node activated it too (views differed), the registered,
// older one stays and the local one stops; if the directory already holds
// another live activation elsewhere, that one stays and the registered
// one stops.
func (a *placementActor) register(ctx actor.Context, m *pc.Activation) {
	id := m.GetClusterIdentity().GetIdentity()
	if m.Pid == nil || m.Pid.Address == ctx.Self().Address {
		return
	}
	if cur := a.liveDir(ctx, id); cur != nil && !cur.Equal(m.Pid) {
		a.p.log.Debug("duplicate activation: stopping the one registered last", "id", id, "kept", cur.Address, "stopped", m.Pid.Address)
		ctx.Poison(m.Pid)
		return
	}
	if pid, ok := a.local[id]; ok {
		a.p.log.Debug("duplicate activation: stopping the local one", "id", id, "kept", m.Pid.Address)
		delete(a.local, id)
		a.p.resident.Store(int64(len(a.local)))
		a.p.cl.PidCache.RemoveByValue(id, actors.KindVPLM, pid)
		ctx.Poison(pid)
	}
	a.setDir(ctx, id, m.Pid)
}

// setDir records that id runs at pid (elsewhere), watching it so the
// entry goes when the activation does.
func (a *placementActor) setDir(ctx actor.Context, id string, pid *actor.PID) {
	if old, ok := a.dir[id]; ok {
		if old.Equal(pid) {
			return
		}
		a.dropDir(ctx, id)
	}
	a.dir[id] = pid
	a.dirBy[pidKey(pid)] = id
	ctx.Watch(pid)
}

func (a *placementActor) dropDir(ctx actor.Context, id string) {
	if pid, ok := a.dir[id]; ok {
		delete(a.dir, id)
		delete(a.dirBy, pidKey(pid))
		ctx.Unwatch(pid)
	}
}

// liveDir is id's directory entry if its member is alive (else it goes).
func (a *placementActor) liveDir(ctx actor.Context, id string) *actor.PID {
	pid, ok := a.dir[id]
	if !ok {
		return nil
	}
	if _, live := a.p.g.view.Load().byAddress(pid.Address); live && !a.p.isSuspect(pid.Address) {
		return pid
	}
	a.dropDir(ctx, id)
	return nil
}

func pidKey(p *actor.PID) string { return p.Address + "/" + p.Id }

// reconcile registers the local activations whose home is now another
// node with that home, and forgets directory entries on members gone.
func (a *placementActor) reconcile(ctx actor.Context) {
	v := a.p.g.view.Load()
	for id, pid := range a.dir {
		if _, ok := v.byAddress(pid.Address); !ok {
			a.dropDir(ctx, id)
		}
	}
	self := ctx.Self().Address
	for id, pid := range a.local {
		if c := a.p.ranked(id, ""); len(c) > 0 && c[0].Meta.addr() != self {
			ctx.Send(actor.NewPID(c[0].Meta.addr(), placementName),
				&pc.Activation{Pid: pid, ClusterIdentity: pc.NewClusterIdentity(id, actors.KindVPLM)})
		}
	}
}

// handOver activates each local vPLM on the member that is its home
// without this node, then stops the local activations; callers waiting on
// them resend (actors.Caller) and find the new ones. It answers the
// number handed over.
func (a *placementActor) handOver(ctx actor.Context, m *handOver) {
	a.handing = true
	self := ctx.Self().Address
	type pending struct {
		id string
		f  *actor.Future
	}
	var ps []pending
	for id := range a.local {
		c := a.p.ranked(id, self)
		if len(c) == 0 {
			continue
		}
		ps = append(ps, pending{id, ctx.RequestFuture(actor.NewPID(c[0].Meta.addr(), placementName),
			&pc.ActivationRequest{ClusterIdentity: pc.NewClusterIdentity(id, actors.KindVPLM), RequestId: reqTake}, a.p.timeout)})
	}
	// Wait off the mailbox for the new activations, then stop ours.
	local := make(map[string]*actor.PID, len(a.local))
	for id, pid := range a.local {
		local[id] = pid
	}
	go func() {
		n := 0
		for _, p := range ps {
			if res, err := p.f.Result(); err == nil {
				if r, ok := res.(*pc.ActivationResponse); ok && r.Pid != nil {
					n++
				}
			}
		}
		for id, pid := range local {
			a.p.cl.PidCache.RemoveByValue(id, actors.KindVPLM, pid)
			a.p.cl.ActorSystem.Root.Poison(pid)
		}
		m.done <- n
	}()
}
