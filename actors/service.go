package actors

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/actors/sched"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/storage"
)

// BlobStore is where new params blobs go before their catalog entry is
// committed (blob first, then catalog).
type BlobStore interface {
	PutBlob(data []byte) (string, error)
}

// CreateSpec is what a tenant chooses when deriving a vPLM.
type CreateSpec struct {
	ID       string
	Tenant   string
	Backbone string
	Task     smilepb.Task
	Labels   []string
	Adapter  model.AdapterKind
	Rank     int   // 0: model.DefaultRank
	Layers   []int // nil: model.DefaultAdapterLayers (plot mode: those above the table's cut)
	EmbedDim int   // embed task: 0 answers the backbone's pooled width
	// Precision of the stored params (zero: fp16); new versions from
	// training keep it.
	Precision model.Precision
	// Mode is how the layers below the adapters run: "" or ModeFull on
	// the backbone; ModePlot from Table, a complete PLOT table of the
	// backbone (lower-layer skipping). A plot vPLM's adapters sit above
	// the table's cut, and it trains in plot mode too.
	Mode  string
	Table string
}

// A vPLM's modes (CreateSpec.Mode, VPLM.mode).
const (
	ModeFull = storage.ModeFull
	ModePlot = storage.ModePlot
)

// plotMode reports whether a vPLM runs in plot mode.
func plotMode(v *smilepb.VPLM) bool { return v.GetMode() == ModePlot }

// Service is the node's vPLM service: the creator and the processor's
// front door. The API's handlers are thin wrappers over it. Its methods are
// safe for concurrent use.
type Service struct {
	cl       *cluster.Cluster
	env      *Env
	blobs    BlobStore
	devices  map[string]*DeviceHandle
	backbone string // default backbone
	now      func() time.Time
	calls    *Caller
	tr       *trainer // nil until EnableTraining
}

// NewService builds the service over a started cluster member.
func NewService(cl *cluster.Cluster, env *Env, blobs BlobStore, devices map[string]*DeviceHandle, defaultBackbone string) (*Service, error) {
	calls, err := NewCaller(cl)
	if err != nil {
		return nil, err
	}
	return &Service{cl: cl, env: env, blobs: blobs, devices: devices, backbone: defaultBackbone, now: time.Now, calls: calls}, nil
}

// DefaultBackbone is the backbone a create without one uses.
func (s *Service) DefaultBackbone() string { return s.backbone }

// Create derives a new vPLM: an identity-initialised adapter and head (it
// answers like the base backbone at once), stored as a blob, then committed
// to the catalog.
//
// In plot mode the table must exist (ErrTableNotFound), be complete
// (ErrTableIncomplete) and belong to the backbone: its name and the
// fingerprint of its weights (ErrBadRequest); an adapter layer at or below
// the table's cut is a bad request. The table is opened on this node.
func (s *Service) Create(ctx context.Context, spec CreateSpec) (*smilepb.VPLM, error) {
	if err := storage.ValidID(spec.ID); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if spec.Tenant == "" {
		spec.Tenant = "default"
	}
	if err := storage.ValidID(spec.Tenant); err != nil {
		return nil, fmt.Errorf("%w: tenant: %w", ErrBadRequest, err)
	}
	if spec.Backbone == "" {
		spec.Backbone = s.backbone
	}
	dev, ok := s.devices[spec.Backbone]
	if !ok {
		return nil, fmt.Errorf("%w: backbone %q is not served here", ErrBadRequest, spec.Backbone)
	}
	ps := model.ParamsSpec{Adapter: spec.Adapter, Rank: spec.Rank, Layers: spec.Layers, Labels: spec.Labels, EmbedDim: spec.EmbedDim}
	if ps.Adapter == 0 {
		ps.Adapter = model.AdapterBottleneck
	}
	if ps.Rank == 0 {
		ps.Rank = model.DefaultRank
	}
	mode, cut := ModeFull, 0
	switch spec.Mode {
	case "", ModeFull:
		if spec.Table != "" {
			return nil, fmt.Errorf("%w: table %q given for a full-mode vPLM (mode %q uses a table)", ErrBadRequest, spec.Table, ModePlot)
		}
	case ModePlot:
		if spec.Table == "" {
			return nil, fmt.Errorf("%w: a plot-mode vPLM needs a PLOT table", ErrBadRequest)
		}
		m, err := s.plotTableFor(ctx, spec.Backbone, spec.Table, spec.Tenant)
		if err != nil {
			return nil, err
		}
		mode, cut = ModePlot, int(m.Cut)
	default:
		return nil, fmt.Errorf("%w: mode %q: want %q or %q", ErrBadRequest, spec.Mode, ModeFull, ModePlot)
	}
	if len(ps.Layers) == 0 {
		for _, l := range model.DefaultAdapterLayers(dev.Backbone().Info().Layers) {
			if l > cut {
				ps.Layers = append(ps.Layers, l)
			}
		}
		if len(ps.Layers) == 0 {
			return nil, fmt.Errorf("%w: no default adapter layer lies above table %s's cut (%d)", ErrBadRequest, spec.Table, cut)
		}
	}
	for _, l := range ps.Layers {
		if l <= cut {
			return nil, fmt.Errorf("%w: adapter layer %d: table %s replaces layers 1..%d, a plot-mode adapter needs a layer above %d",
				ErrBadRequest, l, spec.Table, cut, cut)
		}
	}
	switch spec.Task {
	case smilepb.Task_TASK_CLASSIFY:
		ps.Head = model.HeadClassify
	case smilepb.Task_TASK_EMBED:
		ps.Head = model.HeadEmbed
	default:
		return nil, fmt.Errorf("%w: task must be classify or embed", ErrBadRequest)
	}
	if err := ps.Validate(dev.Backbone()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	h := fnv.New64a()
	h.Write([]byte(spec.ID))
	params, err := model.NewParams(dev.Backbone(), ps, h.Sum64())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	blob, err := params.EncodeAs(spec.Precision)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	// Over quota, refuse before the blob is stored and replicated (the
	// catalog's own check, when the create commits, is the one that holds).
	if qc, ok := s.env.Catalog.(QuotaChecker); ok {
		if err := qc.CheckQuota(spec.Tenant, 1, uint64(len(blob))); err != nil {
			return nil, err
		}
	}
	digest, err := s.blobs.PutBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: store params: %w", ErrUnavailable, err)
	}
	layers := make([]uint32, len(ps.Layers))
	for i, l := range ps.Layers {
		layers[i] = uint32(l)
	}
	now := s.now().UnixMilli()
	v := &smilepb.VPLM{
		Id: spec.ID, Tenant: spec.Tenant, Backbone: spec.Backbone, Task: spec.Task, Labels: spec.Labels,
		Adapter:  &smilepb.AdapterConfig{Kind: adapterKindPB(ps.Adapter), Rank: uint32(ps.Rank), Layers: layers, Alpha: ps.Alpha},
		EmbedDim: uint32(spec.EmbedDim), ParamsDigest: digest, ParamsBytes: uint64(len(blob)),
		CreatedUnixMs: now, UpdatedUnixMs: now, Mode: mode, Precision: spec.Precision.String(),
	}
	if mode == ModePlot {
		v.Table = spec.Table
	}
	out, err := s.env.Catalog.Apply(ctx, &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_Create{Create: &smilepb.CreateVPLM{Vplm: v}}})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func adapterKindPB(k model.AdapterKind) smilepb.AdapterKind {
	if k == model.AdapterLoRA {
		return smilepb.AdapterKind_ADAPTER_LORA
	}
	return smilepb.AdapterKind_ADAPTER_BOTTLENECK
}

// Delete removes a vPLM from the catalog and tells its actor, so no
// request is answered by it afterwards.
func (s *Service) Delete(ctx context.Context, id string) error {
	if err := storage.ValidID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if _, err := s.env.Catalog.Apply(ctx, &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_Delete{Delete: &smilepb.DeleteVPLM{Id: id}}}); err != nil {
		return err
	}
	// The actor reloads, finds no entry and stops once its requests in
	// flight are answered. If this message is lost the actor still answers
	// not_found from its next request on (each request reads the catalog)
	// and passivates when idle.
	rctx, cancel := context.WithTimeout(ctx, s.env.Config.RequestTimeout)
	defer cancel()
	_, _ = s.request(rctx, id, &smilepb.Reload{Id: id})
	return nil
}

// Get returns a vPLM's catalog entry.
func (s *Service) Get(ctx context.Context, id string) (*smilepb.VPLM, error) {
	if err := storage.ValidID(id); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return s.env.Catalog.Get(ctx, id)
}

// List pages through the catalog by id.
func (s *Service) List(ctx context.Context, tenant, after string, limit int) ([]*smilepb.VPLM, error) {
	return s.env.Catalog.List(ctx, tenant, after, limit)
}

// PutTenant stores a tenant's virtual processor (weight and limits) and
// applies it on every device of the node.
func (s *Service) PutTenant(ctx context.Context, t *smilepb.Tenant) error {
	if err := storage.ValidID(t.GetName()); err != nil {
		return fmt.Errorf("%w: tenant: %w", ErrBadRequest, err)
	}
	tc := TenantConfig(t)
	if err := tc.Validate(); err != nil {
		return fmt.Errorf("%w: tenant %s: %w", ErrBadRequest, t.Name, err)
	}
	if _, err := s.env.Catalog.Apply(ctx, &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_PutTenant{PutTenant: &smilepb.PutTenant{Tenant: t}}}); err != nil {
		return err
	}
	return s.ApplyTenant(ctx, t)
}

// Tenant returns a tenant's stored settings (nil: none stored, it runs on
// the defaults) and its usage, as of now.
func (s *Service) Tenant(ctx context.Context, name string) (*smilepb.Tenant, *smilepb.TenantUsage, error) {
	if err := storage.ValidID(name); err != nil {
		return nil, nil, fmt.Errorf("%w: tenant: %w", ErrBadRequest, err)
	}
	return s.env.Catalog.Tenant(ctx, name)
}

// ApplyTenant sets a stored tenant's virtual processor on every device of
// the node (at start, and after PutTenant).
func (s *Service) ApplyTenant(ctx context.Context, t *smilepb.Tenant) error {
	name, tc := t.GetName(), TenantConfig(t)
	for _, d := range s.devices {
		res, err := s.cl.ActorSystem.Root.RequestFuture(d.PID, &SetTenant{Name: name, Config: tc}, timeoutOf(ctx)).Result()
		if err != nil {
			return fmt.Errorf("%w: device: %w", ErrUnavailable, err)
		}
		if ack, ok := res.(*Ack); ok && ack.Err != nil {
			return fmt.Errorf("%w: %w", ErrBadRequest, ack.Err)
		}
	}
	return nil
}

// TenantConfig converts a catalog tenant to the scheduler's form.
func TenantConfig(t *smilepb.Tenant) sched.TenantConfig {
	tc := sched.TenantConfig{Weight: t.GetWeight(), MaxInflight: int(t.GetMaxInflight()), RatePerSec: t.GetRatePerS(), Burst: int(t.GetBurst())}
	if tc.Weight == 0 {
		tc.Weight = 1
	}
	if tc.RatePerSec > 0 && tc.Burst == 0 {
		tc.Burst = max(1, int(math.Ceil(tc.RatePerSec)))
	}
	return tc
}

// Classify answers texts with a classification vPLM.
func (s *Service) Classify(ctx context.Context, id string, texts []string) (*smilepb.ClassifyReply, error) {
	return infer[*smilepb.ClassifyReply](ctx, s, id, &smilepb.ClassifyRequest{ModelId: id, Texts: texts, DeadlineUnixMs: deadlineMs(ctx)})
}

// Embed answers texts with an embedding vPLM.
func (s *Service) Embed(ctx context.Context, id string, texts []string) (*smilepb.EmbedReply, error) {
	return infer[*smilepb.EmbedReply](ctx, s, id, &smilepb.EmbedRequest{ModelId: id, Texts: texts, DeadlineUnixMs: deadlineMs(ctx)})
}

// reply is what a vPLM actor answers an inference with.
type reply interface {
	proto.Message
	GetError() *smilepb.Error
}

// infer sends an inference request to id's actor and unwraps its reply.
func infer[R reply](ctx context.Context, s *Service, id string, msg proto.Message) (R, error) {
	var zero R
	if err := storage.ValidID(id); err != nil {
		return zero, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	res, err := s.request(ctx, id, msg)
	if err != nil {
		return zero, err
	}
	r, ok := res.(R)
	if !ok {
		return zero, fmt.Errorf("%w: vPLM answered %T", ErrInternal, res)
	}
	if err := FromProto(r.GetError()); err != nil {
		return zero, err
	}
	return r, nil
}

// DeviceStats asks every device actor of the node for its statistics.
func (s *Service) DeviceStats(ctx context.Context) ([]*DeviceStats, error) {
	var out []*DeviceStats
	for _, d := range s.devices {
		res, err := s.cl.ActorSystem.Root.RequestFuture(d.PID, &GetDeviceStats{}, timeoutOf(ctx)).Result()
		if err != nil {
			return nil, fmt.Errorf("%w: device: %w", ErrUnavailable, err)
		}
		out = append(out, res.(*DeviceStats))
	}
	return out, nil
}

// request sends msg to the vPLM actor of id (activating it if needed) and
// waits for its answer or ctx, whichever comes first (see call.go).
func (s *Service) request(ctx context.Context, id string, msg proto.Message) (any, error) {
	return s.calls.Request(ctx, id, msg)
}

// deadlineMs is ctx's deadline in Unix milliseconds (0: none).
func deadlineMs(ctx context.Context) int64 {
	if dl, ok := ctx.Deadline(); ok {
		return dl.UnixMilli()
	}
	return 0
}

// timeoutOf is the time left before ctx's deadline (a minute without one).
func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return time.Minute
}
