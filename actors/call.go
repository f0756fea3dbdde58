package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"
)

// Calls to vPLM actors.
//
// protoactor drops, without any answer, the user messages still in an
// actor's mailbox when it stops. A vPLM actor stops when idle or deleted,
// and a request can reach its mailbox in that instant: with a plain
// request-response its caller would wait out its whole deadline. So the
// service watches the actor each request waits on; if the actor terminates
// before answering, the request (a pure read: classify, embed, get,
// reload) is sent again, to a fresh activation. A vPLM actor never stops
// while a request of it is at the device, so a request is only resent
// when it was never processed, or (a reply racing the stop) processed
// with its answer not yet delivered: then it is computed twice, and the
// first answer wins.

// watchStart asks the watcher to tell ch (by closing it) when pid stops.
type watchStart struct {
	pid *actor.PID
	ch  chan struct{}
}

// watchEnd withdraws a watchStart.
type watchEnd struct {
	pid *actor.PID
	ch  chan struct{}
}

// stopWatcher is a local actor that watches the vPLM actors that requests
// are waiting on. A watch outlives its last waiter by watchLinger: a busy
// vPLM on another node is then watched once, not twice per request (each
// Watch and Unwatch of a remote actor is a message over the network).
type stopWatcher struct {
	waiting map[string]map[chan struct{}]struct{}
	// idle are watched actors no request waits on, since when.
	idle      map[string]idleWatch
	lastSweep time.Time
}

type idleWatch struct {
	pid   *actor.PID
	since time.Time
}

// watchLinger is how long an actor stays watched after its last request.
const watchLinger = 10 * time.Second

func (w *stopWatcher) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *watchStart:
		k := pidKey(m.pid)
		set, ok := w.waiting[k]
		if !ok {
			set = map[chan struct{}]struct{}{}
			w.waiting[k] = set
			if _, watched := w.idle[k]; watched {
				delete(w.idle, k)
			} else {
				ctx.Watch(m.pid)
			}
		}
		set[m.ch] = struct{}{}
	case *watchEnd:
		k := pidKey(m.pid)
		if set, ok := w.waiting[k]; ok {
			delete(set, m.ch)
			if len(set) == 0 {
				delete(w.waiting, k)
				w.idle[k] = idleWatch{pid: m.pid, since: time.Now()}
			}
		}
		w.sweep(ctx)
	case *actor.Terminated:
		k := pidKey(m.Who)
		for ch := range w.waiting[k] {
			close(ch)
		}
		delete(w.waiting, k)
		delete(w.idle, k)
	}
}

// sweep unwatches the actors idle past watchLinger (at most once a
// second: it walks every idle watch).
func (w *stopWatcher) sweep(ctx actor.Context) {
	now := time.Now()
	if now.Sub(w.lastSweep) < time.Second {
		return
	}
	w.lastSweep = now
	for k, iw := range w.idle {
		if now.Sub(iw.since) > watchLinger {
			ctx.Unwatch(iw.pid)
			delete(w.idle, k)
		}
	}
}

func pidKey(p *actor.PID) string { return p.Address + "/" + p.Id }

// Caller sends requests to vPLM actors by id.
type Caller struct {
	cl      *cluster.Cluster
	watcher *actor.PID
}

func NewCaller(cl *cluster.Cluster) (*Caller, error) {
	props := actor.PropsFromProducer(func() actor.Actor {
		return &stopWatcher{waiting: map[string]map[chan struct{}]struct{}{}, idle: map[string]idleWatch{}}
	})
	pid, err := cl.ActorSystem.Root.SpawnNamed(props, "vplm-stop-watcher")
	if err != nil {
		return nil, fmt.Errorf("actors: spawn the stop watcher: %w", err)
	}
	return &Caller{cl: cl, watcher: pid}, nil
}

// pid resolves id's activation (activating it if needed).
func (c *Caller) pid(id string) *actor.PID {
	if pid, ok := c.cl.PidCache.Get(id, KindVPLM); ok && pid != nil {
		return pid
	}
	pid := c.cl.Get(id, KindVPLM)
	if pid != nil {
		c.cl.PidCache.Set(id, KindVPLM, pid)
	}
	return pid
}

type answer struct {
	res any
	err error
}

// inbox is a reply address of one request: a process that hands the first
// message it gets to a channel and drops any later one (a late duplicate
// answer), unlike protoactor's futures, which must not be completed twice.
type inbox struct{ ch chan any }

func (b *inbox) SendUserMessage(_ *actor.PID, m any) {
	if env, ok := m.(*actor.MessageEnvelope); ok {
		m = env.Message
	}
	select {
	case b.ch <- m:
	default:
	}
}

func (b *inbox) SendSystemMessage(*actor.PID, any) {}
func (b *inbox) Stop(*actor.PID)                   {}

// Request sends msg to the vPLM actor of id and waits for its answer, a
// stop of that actor (then it resends), or ctx.
func (c *Caller) Request(ctx context.Context, id string, msg proto.Message) (any, error) {
	root := c.cl.ActorSystem.Root
	backoff := time.Millisecond
	var last error
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, ctxError(id, err, last)
		}
		if attempt > 0 {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil, ctxError(id, ctx.Err(), last)
			}
			backoff = min(2*backoff, 100*time.Millisecond)
		}
		pid := c.pid(id)
		if pid == nil {
			last = fmt.Errorf("no activation for vPLM %s", id)
			continue
		}
		stopped := make(chan struct{})
		root.Send(c.watcher, &watchStart{pid: pid, ch: stopped})
		box := &inbox{ch: make(chan any, 1)}
		reply, ok := c.cl.ActorSystem.ProcessRegistry.Add(box, "reply"+c.cl.ActorSystem.ProcessRegistry.NextId())
		if !ok {
			root.Send(c.watcher, &watchEnd{pid: pid, ch: stopped})
			return nil, fmt.Errorf("%w: reply address taken", ErrInternal)
		}
		root.RequestWithCustomSender(pid, msg, reply)
		var a answer
		take := func(m any) {
			if _, dead := m.(*actor.DeadLetterResponse); dead {
				a.err = actor.ErrDeadLetter
			} else {
				a.res = m
			}
		}
		select {
		case m := <-box.ch:
			take(m)
		case <-stopped:
			// An actor that answers and then stops (a deleted vPLM
			// retiring) makes both cases ready: the answer wins.
			select {
			case m := <-box.ch:
				take(m)
			default:
				a.err = actor.ErrDeadLetter // the actor stopped with our message unanswered
			}
		case <-ctx.Done():
		}
		c.cl.ActorSystem.ProcessRegistry.Remove(reply)
		if a.res == nil && a.err == nil { // ctx ended first
			root.Send(c.watcher, &watchEnd{pid: pid, ch: stopped})
			return nil, ctxError(id, ctx.Err(), last)
		}
		root.Send(c.watcher, &watchEnd{pid: pid, ch: stopped})
		if a.err == nil && a.res != nil {
			return a.res, nil
		}
		if a.err == nil {
			a.err = fmt.Errorf("vPLM %s answered nothing", id)
		}
		last = a.err
		if errors.Is(a.err, actor.ErrDeadLetter) {
			// Forget it here and at the identity lookup (which tells the
			// vPLM's home, whose directory may still name it).
			c.cl.PidCache.Remove(id, KindVPLM)
			if c.cl.IdentityLookup != nil {
				c.cl.IdentityLookup.RemovePid(cluster.NewClusterIdentity(id, KindVPLM), pid)
			}
			continue
		}
		if errors.Is(a.err, actor.ErrTimeout) {
			return nil, fmt.Errorf("%w: vPLM %s: %v", ErrTimeout, id, a.err)
		}
		return nil, fmt.Errorf("%w: vPLM %s: %v", ErrUnavailable, id, a.err)
	}
}

func ctxError(id string, err, last error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: vPLM %s: the caller went away", ErrUnavailable, id)
	}
	if last != nil {
		return fmt.Errorf("%w: vPLM %s: %v (last attempt: %v)", ErrTimeout, id, err, last)
	}
	return fmt.Errorf("%w: vPLM %s: %v", ErrTimeout, id, err)
}
