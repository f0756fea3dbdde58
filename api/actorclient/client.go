package actorclient

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pc "github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/storage"
)

// Errors of the client itself; each wraps the actors error of its code
// (actors.Code gives it).
var (
	// ErrClosed: a call on a closed client, or one running when it closed
	// (code unavailable).
	ErrClosed = errors.New("actorclient: client closed")
	// ErrNoServers: no serving member is known to the client (code
	// unavailable).
	ErrNoServers = errors.New("actorclient: no serving member known")
	// ErrJobCanceled: the training job Train waited on was canceled
	// (code unavailable).
	ErrJobCanceled = errors.New("actorclient: training job canceled")
	// ErrUncertain: a train request got no answer from the member it went
	// to before the caller's deadline; that member may have started the
	// job. It is not resent, since a job started twice trains twice (code
	// timeout, or unavailable when the caller went away).
	ErrUncertain = errors.New("actorclient: no answer: the job may have started")
)

// Config configures a client.
type Config struct {
	// Seeds are HTTP API addresses of running members ("127.0.0.1:7077"),
	// as `smile serve --join` takes them; one that answers is enough.
	Seeds []string
	// Key is the cluster key (smile serve --cluster-key), if the cluster
	// has one.
	Key string
	// Host and Port are the client's actor-system (gRPC) address, which
	// the members answer to; port 0 picks a free one.
	Host string
	Port int
	// Gossip is the client's memberlist address, host:port (port 0: a
	// free one).
	Gossip string
	// Timeout bounds a call whose context has no deadline (Train: each of
	// its steps, not the whole run).
	Timeout time.Duration
	// AttemptTimeout bounds one try of a call at one member; after it the
	// next member is tried.
	AttemptTimeout time.Duration
	// PollEvery is how often Train reads its job's record.
	PollEvery time.Duration
	// Log receives the client's and protoactor's logs (nil: slog.Default()).
	Log *slog.Logger
}

// DefaultConfig is a client on loopback (free ports) that gives a call 30
// seconds, a member 5 seconds of them, and polls a job 4 times a second.
// Seeds must be set.
func DefaultConfig() Config {
	return Config{Host: "127.0.0.1", Gossip: "127.0.0.1:0", Timeout: 30 * time.Second, AttemptTimeout: 5 * time.Second,
		PollEvery: 250 * time.Millisecond}
}

// Validate checks the configuration (the addresses are checked when the
// client joins).
func (c Config) Validate() error {
	switch {
	case len(c.Seeds) == 0:
		return fmt.Errorf("%w: actorclient: no seed: name the HTTP API address of a member", actors.ErrBadConfig)
	case slices.Contains(c.Seeds, ""):
		return fmt.Errorf("%w: actorclient: an empty seed address", actors.ErrBadConfig)
	case c.Timeout < time.Millisecond, c.AttemptTimeout < time.Millisecond, c.PollEvery < time.Millisecond:
		return fmt.Errorf("%w: actorclient: timeout %v, attempt timeout %v, poll every %v: want each >= 1ms",
			actors.ErrBadConfig, c.Timeout, c.AttemptTimeout, c.PollEvery)
	}
	return nil
}

// member is what the client needs of its cluster membership
// (*cluster.ClientMember).
type member interface {
	// Servers are the actor addresses of live serving members, best first.
	Servers() []string
	Close() error
}

// Client is a cluster client. Its methods are safe for concurrent use.
type Client struct {
	m     member
	sys   *actor.ActorSystem
	cl    *pc.Cluster    // nil: no inference (tests of the service calls)
	calls *actors.Caller // nil: no inference
	cfg   Config
	log   *slog.Logger

	mu       sync.Mutex
	closed   bool
	inflight map[uint64]context.CancelCauseFunc // calls running, canceled by Close
	next     uint64
	// waiting are the inference calls waiting on a vPLM activation, by
	// the member that hosts it (see watchMembers).
	waiting map[string]map[uint64]context.CancelCauseFunc

	done      chan struct{} // closed by Close: watchMembers returns
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// errHostLeft ends an inference call waiting on an activation whose
// member left the cluster.
var errHostLeft = errors.New("actorclient: the member hosting the vPLM left")

// memberWatchEvery is how often the client compares the members it knows
// with those its inference calls wait on.
const memberWatchEvery = 100 * time.Millisecond

// New joins the cluster of cfg.Seeds as a client member.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := cluster.StartClient(ctx, cluster.ClientConfig{Host: cfg.Host, Port: cfg.Port, Gossip: cfg.Gossip, Seeds: cfg.Seeds,
		Key: cfg.Key, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	calls, err := actors.NewCaller(m.Cluster())
	if err != nil {
		_ = m.Close()
		return nil, err
	}
	return newClient(m, m.Cluster().ActorSystem, m.Cluster(), calls, cfg), nil
}

func newClient(m member, sys *actor.ActorSystem, cl *pc.Cluster, calls *actors.Caller, cfg Config) *Client {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	c := &Client{m: m, sys: sys, cl: cl, calls: calls, cfg: cfg, log: log.With("part", "actorclient"),
		inflight: map[uint64]context.CancelCauseFunc{}, waiting: map[string]map[uint64]context.CancelCauseFunc{}, done: make(chan struct{})}
	c.wg.Add(1)
	go c.watchMembers()
	return c
}

// watchMembers ends the inference calls waiting on a member that was
// serving and is no longer: protoactor would hold such a request until
// its remote gives the member up (about 10 seconds of reconnecting),
// where a fresh activation elsewhere answers in milliseconds.
func (c *Client) watchMembers() {
	defer c.wg.Done()
	t := time.NewTicker(memberWatchEvery)
	defer t.Stop()
	seen := map[string]bool{} // members ever seen serving
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		live := map[string]bool{}
		for _, s := range c.m.Servers() {
			live[s], seen[s] = true, true
		}
		c.mu.Lock()
		for host, calls := range c.waiting {
			if seen[host] && !live[host] {
				for _, cancel := range calls {
					cancel(errHostLeft)
				}
				delete(c.waiting, host)
			}
		}
		c.mu.Unlock()
	}
}

// watchHost registers an inference call waiting on host; the func
// returned withdraws it.
func (c *Client) watchHost(host string, cancel context.CancelCauseFunc) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.next
	c.next++
	if c.waiting[host] == nil {
		c.waiting[host] = map[uint64]context.CancelCauseFunc{}
	}
	c.waiting[host][id] = cancel
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.waiting[host], id)
		if len(c.waiting[host]) == 0 {
			delete(c.waiting, host)
		}
	}
}

// Close leaves the cluster. Calls still running end with ErrClosed.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		for _, cancel := range c.inflight {
			cancel(ErrClosed)
		}
		c.mu.Unlock()
		close(c.done)
		c.wg.Wait()
		c.closeErr = c.m.Close()
	})
	return c.closeErr
}

// begin bounds a call: by Timeout when ctx has no deadline (bounded), and
// by Close. end must be called when the call returns.
func (c *Client) begin(ctx context.Context, bounded bool) (_ context.Context, end func(), _ error) {
	var cancelTimeout context.CancelFunc = func() {}
	if _, ok := ctx.Deadline(); !ok && bounded {
		ctx, cancelTimeout = context.WithTimeout(ctx, c.cfg.Timeout)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cancel(ErrClosed)
		cancelTimeout()
		return nil, nil, closedError()
	}
	id := c.next
	c.next++
	c.inflight[id] = cancel
	return ctx, func() {
		c.mu.Lock()
		delete(c.inflight, id)
		c.mu.Unlock()
		cancel(nil)
		cancelTimeout()
	}, nil
}

func closedError() error { return fmt.Errorf("%w: %w", actors.ErrUnavailable, ErrClosed) }

// ctxError is the error of a call whose ctx ended: the client closed, the
// caller went away (unavailable), or its deadline passed (timeout), with
// the last failure seen, if any.
func ctxError(ctx context.Context, what string, last error) error {
	if errors.Is(context.Cause(ctx), ErrClosed) {
		return closedError()
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("%w: %s: the caller went away: %w", actors.ErrUnavailable, what, ctx.Err())
	}
	if last != nil {
		return fmt.Errorf("%w: %s: %w (last try: %v)", actors.ErrTimeout, what, ctx.Err(), last)
	}
	return fmt.Errorf("%w: %s: %w", actors.ErrTimeout, what, ctx.Err())
}

// Inference.

// Classify answers texts with a classification vPLM.
func (c *Client) Classify(ctx context.Context, id string, texts []string) (*smilepb.ClassifyReply, error) {
	return infer[*smilepb.ClassifyReply](ctx, c, id, func(dl int64) proto.Message {
		return &smilepb.ClassifyRequest{ModelId: id, Texts: texts, DeadlineUnixMs: dl}
	})
}

// Embed answers texts with an embedding vPLM.
func (c *Client) Embed(ctx context.Context, id string, texts []string) (*smilepb.EmbedReply, error) {
	return infer[*smilepb.EmbedReply](ctx, c, id, func(dl int64) proto.Message {
		return &smilepb.EmbedRequest{ModelId: id, Texts: texts, DeadlineUnixMs: dl}
	})
}

// reply is what a vPLM actor answers an inference with.
type reply interface {
	proto.Message
	GetError() *smilepb.Error
}

// infer sends the request msg makes (given the call's deadline) to the
// actor of vPLM id and unwraps its reply.
func infer[R reply](ctx context.Context, c *Client, id string, msg func(deadlineMs int64) proto.Message) (R, error) {
	var zero R
	if err := storage.ValidID(id); err != nil {
		return zero, fmt.Errorf("%w: %w", actors.ErrNotFound, err)
	}
	ctx, end, err := c.begin(ctx, true)
	if err != nil {
		return zero, err
	}
	defer end()
	if c.calls == nil {
		return zero, fmt.Errorf("%w: actorclient: this client does no inference", actors.ErrInternal)
	}
	dl, _ := ctx.Deadline()
	res, err := c.request(ctx, id, msg(dl.UnixMilli()))
	if err != nil {
		if errors.Is(context.Cause(ctx), ErrClosed) {
			return zero, closedError()
		}
		return zero, err
	}
	r, ok := res.(R)
	if !ok {
		return zero, fmt.Errorf("%w: vPLM %s answered %T", actors.ErrInternal, id, res)
	}
	if err := actors.FromProto(r.GetError()); err != nil {
		return zero, err
	}
	return r, nil
}

// request sends msg to the activation of vPLM id (actors.Caller), sent
// again to a new one when the member hosting the one it waits on leaves.
func (c *Client) request(ctx context.Context, id string, msg proto.Message) (any, error) {
	for {
		// The activation the Caller will use: the cached one, else the
		// identity lookup's (cached for it).
		pid, ok := c.cl.PidCache.Get(id, actors.KindVPLM)
		if !ok || pid == nil {
			if pid = c.cl.Get(id, actors.KindVPLM); pid != nil {
				c.cl.PidCache.Set(id, actors.KindVPLM, pid)
			}
		}
		actx, cancel := context.WithCancelCause(ctx)
		unwatch := func() {}
		if pid != nil {
			unwatch = c.watchHost(pid.Address, cancel)
		}
		res, err := c.calls.Request(actx, id, msg)
		unwatch()
		cancel(nil)
		if err != nil && ctx.Err() == nil && errors.Is(context.Cause(actx), errHostLeft) {
			c.log.Debug("vPLM host left: resending", "vplm", id, "host", pid.Address)
			c.cl.PidCache.RemoveByValue(id, actors.KindVPLM, pid)
			continue
		}
		return res, err
	}
}

// Calls to the service actors.

// retry is how a service call may be resent.
type retry uint8

const (
	// retryRead: the call changes nothing; resent after any failure.
	retryRead retry = iota
	// retryWrite: resent after any failure; a try that may have been
	// applied (no answer, or unavailable) makes the outcome uncertain,
	// for the caller to resolve.
	retryWrite
	// retryStart: resent only when no try can have been applied (the node
	// was not reached, refused before starting, or said unavailable,
	// which the service only says before a job starts).
	retryStart
)

// result is a service call's answer.
type result struct {
	rep  *smilepb.ServiceReply
	node string // the member that answered
	// uncertain: an earlier try may have been applied.
	uncertain bool
}

// call sends req to the service actor of a serving member (or of node
// pin, when set, which then is the only one tried) and returns its answer:
// when a member is unreachable, overloaded or slower than AttemptTimeout,
// the next is tried, and after a round of them all the client backs off
// (25ms, doubling to 1s) and starts again, until ctx ends.
func (c *Client) call(ctx context.Context, req *smilepb.ServiceRequest, how retry, pin string) (result, error) {
	what := opName(req)
	var (
		res     result
		last    error
		tried   = map[string]bool{}
		backoff = 25 * time.Millisecond
	)
	wait := func() bool {
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, time.Second)
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		if ctx.Err() != nil {
			return res, ctxError(ctx, what, last)
		}
		addr := pin
		if addr == "" {
			addr = c.pick(tried)
			if addr == "" {
				if last == nil {
					last = fmt.Errorf("%w: %w", actors.ErrUnavailable, ErrNoServers)
				}
				clear(tried)
				if !wait() {
					return res, ctxError(ctx, what, last)
				}
				continue
			}
		}
		tried[addr] = true
		var (
			actx   context.Context
			cancel context.CancelFunc
		)
		if how == retryStart {
			// A start may read a whole dataset; it is not resent after no
			// answer, so it gets all the time there is.
			actx, cancel = context.WithCancel(ctx)
		} else {
			actx, cancel = context.WithTimeout(ctx, c.cfg.AttemptTimeout)
		}
		rep, err := actors.RequestService(actx, c.sys, addr, req)
		cancel()
		if err == nil && rep.GetError() == nil {
			res.rep, res.node = rep, addr
			return res, nil
		}
		resend := false
		switch {
		case err == nil:
			// The node answered an error: final, except those that say
			// nothing was done here, or (unavailable) that this member
			// cannot do it now.
			switch rep.GetError().GetCode() {
			case actors.CodeOverloaded:
				resend = true
			case actors.CodeUnavailable:
				resend = true
				res.uncertain = res.uncertain || how == retryWrite
			}
			if !resend {
				res.rep, res.node = rep, addr
				return res, nil
			}
			last = fmt.Errorf("%s: %w", addr, actors.FromProto(rep.GetError()))
		case errors.Is(err, actor.ErrDeadLetter) && ctx.Err() == nil:
			resend = true // not delivered: nothing was done
			last = err
		case how == retryStart && !errors.Is(err, actors.ErrInternal):
			// Sent, and no answer before ctx ended: the job may run.
			return res, fmt.Errorf("%w (%s sent to %s: %w)", ctxError(ctx, what, last), what, addr, ErrUncertain)
		case ctx.Err() != nil:
			return res, ctxError(ctx, what, last)
		case errors.Is(err, actors.ErrTimeout):
			resend = true
			res.uncertain = res.uncertain || how == retryWrite
			last = err
		default:
			return res, err
		}
		c.log.Debug("service call failed over", "op", what, "member", addr, "err", last)
		if pin != "" && !wait() {
			return res, ctxError(ctx, what, last)
		}
	}
}

// pick is the best serving member not tried yet ("" when none is left).
func (c *Client) pick(tried map[string]bool) string {
	for _, s := range c.m.Servers() {
		if !tried[s] {
			return s
		}
	}
	return ""
}

func opName(req *smilepb.ServiceRequest) string {
	switch req.GetOp().(type) {
	case *smilepb.ServiceRequest_Create:
		return "create"
	case *smilepb.ServiceRequest_Delete:
		return "delete"
	case *smilepb.ServiceRequest_Get:
		return "get"
	case *smilepb.ServiceRequest_List:
		return "list"
	case *smilepb.ServiceRequest_Train:
		return "train"
	case *smilepb.ServiceRequest_Job:
		return "job"
	case *smilepb.ServiceRequest_CancelJob:
		return "cancel job"
	}
	return "service call"
}

// do makes a service call bounded as begin bounds it and returns its
// reply, or the reply's error.
func (c *Client) do(ctx context.Context, req *smilepb.ServiceRequest, how retry) (result, error) {
	ctx, end, err := c.begin(ctx, true)
	if err != nil {
		return result{}, err
	}
	defer end()
	res, err := c.call(ctx, req, how, "")
	if err != nil {
		return res, err
	}
	return res, actors.FromProto(res.rep.GetError())
}

// Create derives a vPLM. A create resent after a try that may have been
// applied, and answered already_exists, succeeds when the entry read back
// is the one req asks for (created since the first try, as req says).
func (c *Client) Create(ctx context.Context, req *smilepb.CreateRequest) (*smilepb.VPLM, error) {
	ctx, end, err := c.begin(ctx, true)
	if err != nil {
		return nil, err
	}
	defer end()
	start := time.Now()
	res, err := c.call(ctx, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Create{Create: req}}, retryWrite, "")
	if err != nil {
		return nil, err
	}
	err = actors.FromProto(res.rep.GetError())
	if err == nil {
		return res.rep.GetVplm(), nil
	}
	if res.uncertain && errors.Is(err, actors.ErrExists) {
		got, gerr := c.call(ctx, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Get{Get: req.GetId()}}, retryRead, "")
		if gerr == nil && got.rep.GetError() == nil && sameCreate(req, got.rep.GetVplm(), start) {
			return got.rep.GetVplm(), nil
		}
	}
	return nil, err
}

// createdSkew is how far a node's clock may be behind the client's for a
// vPLM to count as created since a create's first try.
const createdSkew = time.Minute

// sameCreate reports whether v is what req creates, created since start:
// the fields req sets (the server's defaults for the others) and a first
// version.
func sameCreate(req *smilepb.CreateRequest, v *smilepb.VPLM, start time.Time) bool {
	a := v.GetAdapter()
	kind := cmp.Or(req.GetAdapter(), smilepb.AdapterKind_ADAPTER_BOTTLENECK)
	switch {
	case v.GetId() != req.GetId(), v.GetVersion() != 1, v.GetCreatedUnixMs() < start.Add(-createdSkew).UnixMilli():
		return false
	case v.GetTenant() != cmp.Or(req.GetTenant(), "default"), req.GetBackbone() != "" && v.GetBackbone() != req.GetBackbone():
		return false
	case v.GetTask() != req.GetTask(), !slices.Equal(v.GetLabels(), req.GetLabels()), v.GetEmbedDim() != req.GetEmbedDim():
		return false
	case a.GetKind() != kind, req.GetRank() != 0 && a.GetRank() != req.GetRank(),
		len(req.GetLayers()) > 0 && !slices.Equal(a.GetLayers(), req.GetLayers()):
		return false
	case cmp.Or(v.GetPrecision(), "fp16") != cmp.Or(req.GetPrecision(), "fp16"):
		return false
	case cmp.Or(v.GetMode(), actors.ModeFull) != cmp.Or(req.GetMode(), actors.ModeFull), v.GetTable() != req.GetTable():
		return false
	}
	return true
}

// Delete removes a vPLM. A delete resent after a try that may have been
// applied, and answered not_found, succeeds.
func (c *Client) Delete(ctx context.Context, id string) error {
	res, err := c.do(ctx, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Delete{Delete: id}}, retryWrite)
	if err != nil && res.uncertain && res.rep != nil && errors.Is(err, actors.ErrNotFound) {
		return nil
	}
	return err
}

// Get returns a vPLM's catalog entry.
func (c *Client) Get(ctx context.Context, id string) (*smilepb.VPLM, error) {
	res, err := c.do(ctx, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Get{Get: id}}, retryRead)
	if err != nil {
		return nil, err
	}
	return res.rep.GetVplm(), nil
}

// List returns one page of the catalog, by id, and the id the next page
// starts after ("" on the last page).
func (c *Client) List(ctx context.Context, req *smilepb.ListRequest) ([]*smilepb.VPLM, string, error) {
	res, err := c.do(ctx, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_List{List: req}}, retryRead)
	if err != nil {
		return nil, "", err
	}
	return res.rep.GetVplms(), res.rep.GetNext(), nil
}

// Train starts a training job and waits for it to end, calling progress
// (if set) with its record at once and whenever it changes. The job runs
// on the member that started it; Train polls it there every PollEvery,
// and gives up (unavailable) when that member answers nothing for
// Timeout. It returns the final record: with nil for a job that
// succeeded, the job's error for one that failed, ErrJobCanceled for one
// canceled elsewhere. When ctx ends first, the job is canceled.
func (c *Client) Train(ctx context.Context, req *smilepb.TrainRequest, progress func(*smilepb.TrainJob)) (*smilepb.TrainJob, error) {
	ctx, end, err := c.begin(ctx, false)
	if err != nil {
		return nil, err
	}
	defer end()
	step := func(how retry, pin string, r *smilepb.ServiceRequest) (result, error) {
		sctx := ctx
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			sctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
			defer cancel()
		}
		res, err := c.call(sctx, r, how, pin)
		if err == nil {
			err = actors.FromProto(res.rep.GetError())
		}
		return res, err
	}
	res, err := step(retryStart, "", &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Train{Train: req}})
	if err != nil {
		return nil, err
	}
	job, node := res.rep.GetJob(), res.node
	if progress != nil {
		progress(job)
	}
	poll := &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_Job{Job: job.GetId()}}
	for active(job.GetState()) {
		select {
		case <-time.After(c.cfg.PollEvery):
		case <-ctx.Done():
			return job, c.cancelJob(ctx, node, job)
		}
		res, err := step(retryRead, node, poll)
		if err != nil {
			if ctx.Err() != nil {
				return job, c.cancelJob(ctx, node, job)
			}
			return job, fmt.Errorf("job %s on %s: %w", job.GetId(), node, err)
		}
		if rec := res.rep.GetJob(); !proto.Equal(rec, job) {
			job = rec
			if progress != nil {
				progress(job)
			}
		}
	}
	switch job.GetState() {
	case smilepb.JobState_JOB_SUCCEEDED:
		return job, nil
	case smilepb.JobState_JOB_CANCELED:
		return job, fmt.Errorf("%w: %w: job %s", actors.ErrUnavailable, ErrJobCanceled, job.GetId())
	}
	if err := actors.FromProto(job.GetError()); err != nil {
		return job, err
	}
	return job, fmt.Errorf("%w: job %s ended %v", actors.ErrInternal, job.GetId(), job.GetState())
}

// cancelJob cancels the job of a Train whose ctx ended (best effort,
// within AttemptTimeout) and returns the error Train returns.
func (c *Client) cancelJob(ctx context.Context, node string, job *smilepb.TrainJob) error {
	if errors.Is(context.Cause(ctx), ErrClosed) {
		return fmt.Errorf("%w (job %s on %s runs on)", closedError(), job.GetId(), node)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.AttemptTimeout)
	defer cancel()
	_, cerr := c.call(cctx, &smilepb.ServiceRequest{Op: &smilepb.ServiceRequest_CancelJob{CancelJob: job.GetId()}}, retryRead, node)
	err := ctxError(ctx, "train", nil)
	if cerr != nil {
		return fmt.Errorf("%w (job %s on %s: cancel: %v)", err, job.GetId(), node, cerr)
	}
	return fmt.Errorf("%w (job %s on %s canceled)", err, job.GetId(), node)
}

func active(s smilepb.JobState) bool {
	return s == smilepb.JobState_JOB_QUEUED || s == smilepb.JobState_JOB_CACHING || s == smilepb.JobState_JOB_TRAINING
}
