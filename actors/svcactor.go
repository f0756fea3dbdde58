package actors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/model"
)

// The service actor: a node's Service as a named actor, so that processes
// in the cluster that are not nodes (api/actorclient) create, delete, list
// and train vPLMs over protoactor instead of HTTP. Every node runs one,
// named ServiceActorName; a caller addresses it with
// actor.NewPID(nodeAddress, ServiceActorName) and sends a
// smilepb.ServiceRequest (RequestService does, and waits).
//
// A call can take seconds (a Raft commit, reading a dataset, a cancel
// waiting for its job), so each runs in a goroutine of its own and answers
// its sender from there; the actor's mailbox only ever starts calls. At
// most ServiceMaxInflight run at once: beyond that a request is answered
// overloaded at once. A request whose deadline (read on this node's
// clock) has passed when it arrives is dropped: its caller has stopped
// waiting. Stopping the actor cancels the calls still running (each
// answers, with the error its service method returns).

// ServiceActorName is the name of every node's service actor.
const ServiceActorName = "smile-service"

// Bounds of the service actor.
const (
	// ServiceTimeout bounds a call whose request has no deadline.
	ServiceTimeout = 30 * time.Second
	// ServiceMaxInflight bounds the calls running at once.
	ServiceMaxInflight = 4096
	// ListLimit is a list's page size when the request names none, and
	// MaxListLimit the largest one served.
	ListLimit    = 100
	MaxListLimit = 1000
)

// UploadName is how errors about uploaded training examples name them
// ("datasets: unknown label ... (examples_jsonl:12)").
const UploadName = "examples_jsonl"

// SpawnServiceActor starts the node's service actor over svc, named
// ServiceActorName (actor.ErrNameExists if the node has one). Stop it
// before svc shuts down: calls still running are canceled.
func SpawnServiceActor(sys *actor.ActorSystem, svc *Service) (*actor.PID, error) {
	log := svc.env.Log
	if log == nil {
		log = slog.Default()
	}
	props := actor.PropsFromProducer(func() actor.Actor {
		return &serviceActor{svc: svc, sys: sys, log: log.With("part", "service-actor"),
			sem: make(chan struct{}, ServiceMaxInflight), stopping: make(chan struct{})}
	})
	pid, err := sys.Root.SpawnNamed(props, ServiceActorName)
	if err != nil {
		return nil, fmt.Errorf("actors: spawn the service actor: %w", err)
	}
	return pid, nil
}

type serviceActor struct {
	svc *Service
	sys *actor.ActorSystem
	log *slog.Logger
	sem chan struct{} // one slot per call running
	// stopping is closed when the actor stops: running calls end.
	stopping chan struct{}
}

func (a *serviceActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *smilepb.ServiceRequest:
		a.start(ctx, m)
	case *actor.Stopping:
		close(a.stopping)
	case actor.SystemMessage, actor.AutoReceiveMessage:
	default:
		// Lifecycle messages have no sender; a request of the wrong type
		// does, and gets a typed answer instead of a wait to its deadline.
		if ctx.Sender() != nil {
			ctx.Respond(&smilepb.ServiceReply{Node: a.sys.Address(),
				Error: ToProto(fmt.Errorf("%w: the service actor takes a ServiceRequest, not %T", ErrBadRequest, m))})
		}
	}
}

// start runs one call in a goroutine of its own. Only what is read here
// (the sender) may come from the actor's context: the goroutine answers
// through the actor system.
func (a *serviceActor) start(ctx actor.Context, req *smilepb.ServiceRequest) {
	sender := ctx.Sender()
	deadline := time.Now().Add(ServiceTimeout)
	if ms := req.GetDeadlineUnixMs(); ms > 0 {
		deadline = time.UnixMilli(ms)
	}
	if !time.Now().Before(deadline) {
		// The caller has given up: whatever it gets is dropped.
		return
	}
	select {
	case a.sem <- struct{}{}:
	default:
		if sender != nil {
			ctx.Respond(&smilepb.ServiceReply{Node: a.sys.Address(),
				Error: ToProto(fmt.Errorf("%w: %d service calls running: retry later", ErrOverloaded, cap(a.sem)))})
		}
		return
	}
	go func() {
		defer func() { <-a.sem }()
		cctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		go func() {
			select {
			case <-a.stopping:
				cancel()
			case <-cctx.Done():
			}
		}()
		rep := a.call(cctx, req)
		rep.Node = a.sys.Address()
		if sender != nil && time.Now().Before(deadline) {
			a.sys.Root.Send(sender, rep)
		}
	}()
}

// call runs one request on the service. A panic in it is answered as an
// internal error (a node must not die of one bad request).
func (a *serviceActor) call(ctx context.Context, req *smilepb.ServiceRequest) (rep *smilepb.ServiceReply) {
	defer func() {
		if v := recover(); v != nil {
			a.log.Error("panic in a service call", "op", fmt.Sprintf("%T", req.GetOp()), "panic", v, "stack", string(debug.Stack()))
			rep = &smilepb.ServiceReply{Error: ToProto(fmt.Errorf("%w: panic: %v", ErrInternal, v))}
		}
	}()
	rep = &smilepb.ServiceReply{}
	var err error
	s := a.svc
	switch op := req.GetOp().(type) {
	case *smilepb.ServiceRequest_Create:
		var spec CreateSpec
		if spec, err = CreateSpecFromProto(op.Create); err == nil {
			rep.Vplm, err = s.Create(ctx, spec)
		}
	case *smilepb.ServiceRequest_Delete:
		err = s.Delete(ctx, op.Delete)
	case *smilepb.ServiceRequest_Get:
		rep.Vplm, err = s.Get(ctx, op.Get)
	case *smilepb.ServiceRequest_List:
		rep.Vplms, rep.Next, err = s.listPage(ctx, op.List)
	case *smilepb.ServiceRequest_Train:
		var tr TrainRequest
		if tr, err = s.TrainRequestFromProto(ctx, op.Train); err == nil {
			rep.Job, err = s.Train(ctx, tr)
		}
	case *smilepb.ServiceRequest_Job:
		rep.Job, err = s.Job(ctx, op.Job)
	case *smilepb.ServiceRequest_CancelJob:
		rep.Job, err = s.CancelJob(ctx, op.CancelJob)
	case nil:
		err = fmt.Errorf("%w: a service request without an operation", ErrBadRequest)
	default:
		err = fmt.Errorf("%w: unknown service operation %T", ErrBadRequest, op)
	}
	if err != nil {
		return &smilepb.ServiceReply{Error: ToProto(err)}
	}
	return rep
}

// listPage serves one page of a list and the id the next page starts
// after ("" on the last page).
func (s *Service) listPage(ctx context.Context, req *smilepb.ListRequest) ([]*smilepb.VPLM, string, error) {
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = ListLimit
	case limit > MaxListLimit:
		return nil, "", fmt.Errorf("%w: list limit %d: want 1..%d", ErrBadRequest, limit, MaxListLimit)
	}
	vs, err := s.List(ctx, req.GetTenant(), req.GetAfter(), limit)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(vs) == limit {
		next = vs[len(vs)-1].GetId()
	}
	return vs, next, nil
}

// CreateSpecFromProto converts a create request from its wire form. The
// service checks the rest (Service.Create).
func CreateSpecFromProto(r *smilepb.CreateRequest) (CreateSpec, error) {
	spec := CreateSpec{ID: r.GetId(), Tenant: r.GetTenant(), Backbone: r.GetBackbone(), Task: r.GetTask(), Labels: r.GetLabels(),
		Rank: int(r.GetRank()), EmbedDim: int(r.GetEmbedDim()), Mode: r.GetMode(), Table: r.GetTable()}
	switch r.GetAdapter() {
	case smilepb.AdapterKind_ADAPTER_UNSPECIFIED:
	case smilepb.AdapterKind_ADAPTER_BOTTLENECK:
		spec.Adapter = model.AdapterBottleneck
	case smilepb.AdapterKind_ADAPTER_LORA:
		spec.Adapter = model.AdapterLoRA
	default:
		return spec, fmt.Errorf("%w: adapter kind %v: want bottleneck or lora", ErrBadRequest, r.GetAdapter())
	}
	for _, l := range r.GetLayers() {
		spec.Layers = append(spec.Layers, int(l))
	}
	if p := r.GetPrecision(); p != "" {
		var err error
		if spec.Precision, err = model.ParsePrecision(p); err != nil {
			return spec, fmt.Errorf("%w: precision %q: want fp16 or int8", ErrBadRequest, p)
		}
	}
	return spec, nil
}

// TrainRequestFromProto converts a train request from its wire form:
// uploaded examples are parsed (ReadExamples) and, for a classify vPLM,
// checked against its labels, so that a wrong label is refused naming its
// line.
func (s *Service) TrainRequestFromProto(ctx context.Context, req *smilepb.TrainRequest) (TrainRequest, error) {
	tr := TrainRequest{Model: req.GetModel(), Dataset: req.GetDataset(), Config: req.GetConfig(), Full: req.GetFull()}
	switch {
	case req.GetModel() == "":
		return tr, fmt.Errorf("%w: train: no model named", ErrBadRequest)
	case req.GetDataset() == "" && len(req.GetExamplesJsonl()) == 0:
		return tr, fmt.Errorf("%w: no examples: name a dataset or upload JSONL examples", ErrBadRequest)
	case req.GetDataset() != "" && len(req.GetExamplesJsonl()) > 0:
		return tr, fmt.Errorf("%w: both a dataset (%q) and uploaded examples: send one", ErrBadRequest, req.GetDataset())
	case req.GetDataset() != "":
		return tr, nil
	}
	v, err := s.Get(ctx, req.GetModel())
	if err != nil {
		return tr, err
	}
	var labels []string
	if v.GetTask() == smilepb.Task_TASK_CLASSIFY {
		labels = v.GetLabels()
	}
	tr.Examples, err = ReadExamples(req.GetExamplesJsonl(), labels)
	return tr, err
}

// ReadExamples parses uploaded training examples, JSONL lines
// {"text","label"}, checking their labels against labels (none: any).
// Errors are ErrBadDataset and name the line (UploadName:line).
func ReadExamples(jsonl []byte, labels []string) ([]datasets.Example, error) {
	opts := datasets.DefaultLoadOptions()
	opts.MaxBytes = int64(len(jsonl)) + 1
	opts.Labels = labels
	ex, err := datasets.ReadJSONL(bytes.NewReader(jsonl), UploadName, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDataset, err)
	}
	return ex, nil
}

// RequestService sends req to the service actor of the node at addr (an
// actor-system address, host:port) from sys and waits for its reply, or
// ctx. The request carries ctx's deadline. The reply's own error is the
// caller's to read (FromProto); the error returned is the call's: no
// service actor there, or the node unreachable (ErrUnavailable wrapping
// actor.ErrDeadLetter: the request was not processed), no answer before
// ctx ended (ErrTimeout, or ErrUnavailable when ctx was canceled: it may
// have been processed), or an answer of another type (ErrInternal).
func RequestService(ctx context.Context, sys *actor.ActorSystem, addr string, req *smilepb.ServiceRequest) (*smilepb.ServiceReply, error) {
	// A copy, not a clone: the op (maybe megabytes of examples) is shared.
	msg := &smilepb.ServiceRequest{Op: req.GetOp(), DeadlineUnixMs: req.GetDeadlineUnixMs()}
	if dl, ok := ctx.Deadline(); ok && (msg.DeadlineUnixMs == 0 || dl.UnixMilli() < msg.DeadlineUnixMs) {
		msg.DeadlineUnixMs = dl.UnixMilli()
	}
	box := &inbox{ch: make(chan any, 1)}
	reply, ok := sys.ProcessRegistry.Add(box, "svc-reply"+sys.ProcessRegistry.NextId())
	if !ok {
		return nil, fmt.Errorf("%w: reply address taken", ErrInternal)
	}
	defer sys.ProcessRegistry.Remove(reply)
	sys.Root.RequestWithCustomSender(actor.NewPID(addr, ServiceActorName), msg, reply)
	select {
	case m := <-box.ch:
		switch m := m.(type) {
		case *smilepb.ServiceReply:
			return m, nil
		case *actor.DeadLetterResponse:
			return nil, fmt.Errorf("%w: no service actor reached at %s: %w", ErrUnavailable, addr, actor.ErrDeadLetter)
		default:
			return nil, fmt.Errorf("%w: the service actor at %s answered %T", ErrInternal, addr, m)
		}
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, fmt.Errorf("%w: service call to %s: the caller went away: %w", ErrUnavailable, addr, ctx.Err())
		}
		return nil, fmt.Errorf("%w: service call to %s: no answer: %w", ErrTimeout, addr, ctx.Err())
	}
}
