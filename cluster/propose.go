package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/storage"
)

// Apply commits one catalog command through Raft and returns its result
// (see storage.Catalog.ApplyEntries). A command that names a params blob
// waits until the blob is on min(Replicas, nodes) nodes.
func (r *Replica) Apply(ctx context.Context, cmd *smilepb.CatalogCommand) (*smilepb.VPLM, error) {
	vs, errs := r.ApplyBatch(ctx, []*smilepb.CatalogCommand{cmd})
	return vs[0], errs[0]
}

// ApplyBatch commits cmds as one Raft log entry, applied in order, with a
// result per command. Commands proposed at once from many goroutines are
// batched by Raft as well (one synced log write for many entries).
func (r *Replica) ApplyBatch(ctx context.Context, cmds []*smilepb.CatalogCommand) ([]*smilepb.VPLM, []error) {
	out := make([]*smilepb.VPLM, len(cmds))
	errs := make([]error, len(cmds))
	var send []*smilepb.CatalogCommand
	var at []int
	for i, c := range cmds {
		if d := blobOf(c); d != "" {
			if err := r.replicate(ctx, d); err != nil {
				errs[i] = err
				continue
			}
		}
		send = append(send, c)
		at = append(at, i)
	}
	if len(send) == 0 {
		return out, errs
	}
	data, err := proto.Marshal(&smilepb.CatalogBatch{Cmds: send})
	if err != nil {
		for _, i := range at {
			errs[i] = fmt.Errorf("%w: %w", storage.ErrInvalid, err)
		}
		return out, errs
	}
	res, ambiguous, err := r.propose(ctx, data)
	if err == nil && (len(res.errs) != len(send) || len(res.vplms) > len(send)) {
		// A leader that could not read the entry answers one error for it.
		if len(res.errs) == 1 && res.errs[0] != nil {
			err = res.errs[0]
		} else {
			err = fmt.Errorf("%w: the leader answered %d results for %d commands", actors.ErrInternal, len(res.errs), len(send))
		}
	}
	for j, i := range at {
		if err != nil {
			errs[i] = err
			continue
		}
		if j < len(res.vplms) {
			out[i] = res.vplms[j]
		}
		errs[i] = res.errs[j]
		if ambiguous && errs[i] != nil {
			out[i], errs[i] = r.settle(ctx, send[j], errs[i])
		}
	}
	return out, errs
}

// settle decides a command whose first proposal may have been committed
// (the leader was lost after it took the entry) and whose retry failed as a
// repeat would: a create that finds its own entry, a new version already
// in place, a delete of what is gone.
func (r *Replica) settle(ctx context.Context, cmd *smilepb.CatalogCommand, err error) (*smilepb.VPLM, error) {
	switch c := cmd.GetCmd().(type) {
	case *smilepb.CatalogCommand_Create:
		if !errors.Is(err, storage.ErrExists) {
			return nil, err
		}
		want := c.Create.GetVplm()
		v, gerr := r.Get(ctx, want.GetId())
		if gerr == nil && v.GetParamsDigest() == want.GetParamsDigest() && v.GetTenant() == want.GetTenant() &&
			v.GetCreatedUnixMs() == want.GetCreatedUnixMs() {
			return v, nil
		}
	case *smilepb.CatalogCommand_NewVersion:
		if !errors.Is(err, storage.ErrConflict) {
			return nil, err
		}
		v, gerr := r.Get(ctx, c.NewVersion.GetId())
		if gerr == nil && v.GetVersion() == c.NewVersion.GetVersion() && v.GetParamsDigest() == c.NewVersion.GetParamsDigest() {
			return v, nil
		}
	case *smilepb.CatalogCommand_Delete:
		if errors.Is(err, storage.ErrNotFound) {
			return nil, nil
		}
	}
	return nil, err
}

// blobOf is the params blob a command commits, if any.
func blobOf(c *smilepb.CatalogCommand) string {
	switch c := c.GetCmd().(type) {
	case *smilepb.CatalogCommand_Create:
		return c.Create.GetVplm().GetParamsDigest()
	case *smilepb.CatalogCommand_NewVersion:
		return c.NewVersion.GetParamsDigest()
	}
	return ""
}

// propose gets an encoded CatalogBatch committed and applied, on this node
// when it leads, else through the leader. ambiguous says an earlier try may
// have been committed although it failed here.
func (r *Replica) propose(ctx context.Context, data []byte) (res *applied, ambiguous bool, err error) {
	wait := 10 * time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return nil, ambiguous, fmt.Errorf("%w: catalog write: %w", actors.ErrUnavailable, err)
		}
		if r.raft.State() == raft.Shutdown {
			return nil, ambiguous, fmt.Errorf("%w: catalog write: %w", actors.ErrUnavailable, raft.ErrRaftShutdown)
		}
		var sent bool
		if r.IsLeader() {
			res, sent, err = r.proposeLocal(data)
		} else {
			res, sent, err = r.forward(ctx, data)
		}
		if err == nil {
			return res, ambiguous, nil
		}
		ambiguous = ambiguous || sent
		if errors.Is(err, raft.ErrRaftShutdown) {
			return nil, ambiguous, fmt.Errorf("%w: catalog write: %w", actors.ErrUnavailable, err)
		}
		r.log.Debug("catalog write retried", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// errNotLeader: this node cannot take a proposal or read index now.
var errNotLeader = errors.New("cluster: not the raft leader")

// errAbandoned: the replica closed before Raft answered a future; the
// entry may still be committed by the next leader.
var errAbandoned = errors.New("cluster: replica closed before raft answered")

// wait is f.Error(), or errAbandoned once the replica has closed:
// hashicorp/raft never answers a future still queued (in the buffered
// apply channel, or committed but not yet handed to the FSM) when it shuts
// down, and that future's Error blocks forever (hashicorp/raft#498). The
// goroutine left waiting on such a future is the price.
func (r *Replica) wait(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-r.closed:
		select {
		case err := <-done:
			return err
		default:
			return errAbandoned
		}
	}
}

// proposeLocal submits data to this node's Raft as leader. sent says the
// entry may be in the log even though err is set.
func (r *Replica) proposeLocal(data []byte) (*applied, bool, error) {
	f := r.raft.Apply(data, r.cfg.ApplyTimeout)
	if err := r.wait(f); err != nil {
		switch {
		case errors.Is(err, errAbandoned):
			return nil, true, fmt.Errorf("%w: %w", errNotLeader, err)
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout),
			errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrRaftShutdown):
			return nil, false, fmt.Errorf("%w: %w", errNotLeader, err)
		}
		return nil, true, err
	}
	res, ok := f.Response().(*applied)
	if !ok || res == nil {
		return nil, true, fmt.Errorf("cluster: raft entry %d has no catalog result", f.Index())
	}
	return res, false, nil
}

// Get returns the vPLM with that id as of now: a write acknowledged before
// the call is seen (a read index from the leader, then this node's catalog
// once it has applied that far).
func (r *Replica) Get(ctx context.Context, id string) (*smilepb.VPLM, error) {
	if err := r.Sync(ctx); err != nil {
		return nil, err
	}
	return r.cat.Get(id)
}

// GetLocal reads this node's catalog without asking the leader: what
// serving uses, so inference goes on while the cluster elects a leader.
// Callers that need a write made elsewhere fall back to Get on ErrNotFound.
func (r *Replica) GetLocal(ctx context.Context, id string) (*smilepb.VPLM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return r.cat.Get(id)
}

// List is a linearizable page of the catalog (see Get).
func (r *Replica) List(ctx context.Context, tenant, after string, limit int) ([]*smilepb.VPLM, error) {
	if err := r.Sync(ctx); err != nil {
		return nil, err
	}
	return r.cat.List(tenant, after, limit)
}

// CheckQuota checks a tenant's quotas on this node's copy (advisory: see
// storage.Catalog.CheckQuota).
func (r *Replica) CheckQuota(tenant string, vplms, bytes uint64) error {
	return r.cat.CheckQuota(tenant, vplms, bytes)
}

// Tenant is a tenant's settings and usage as of now (see Get).
func (r *Replica) Tenant(ctx context.Context, name string) (*smilepb.Tenant, *smilepb.TenantUsage, error) {
	if err := r.Sync(ctx); err != nil {
		return nil, nil, err
	}
	return tenantAndUsage(r.cat, name)
}

// Sync waits until this node's catalog holds every change committed before
// the call: the leader runs a Raft barrier (proving it still leads and
// applying all it committed) and names the last entry applied; this node
// then waits to have applied that far.
func (r *Replica) Sync(ctx context.Context) error {
	wait := 5 * time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: catalog read: %w", actors.ErrUnavailable, err)
		}
		if r.raft.State() == raft.Shutdown {
			return fmt.Errorf("%w: catalog read: %w", actors.ErrUnavailable, raft.ErrRaftShutdown)
		}
		var idx uint64
		var err error
		if r.IsLeader() {
			idx, err = r.readIndex()
		} else {
			idx, err = r.remoteReadIndex(ctx)
		}
		if err == nil {
			return r.waitApplied(ctx, idx)
		}
		if errors.Is(err, raft.ErrRaftShutdown) {
			return fmt.Errorf("%w: catalog read: %w", actors.ErrUnavailable, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// readIndex is, at the leader, the last entry its catalog applied after a
// barrier: every write acknowledged before the call is at or below it.
func (r *Replica) readIndex() (uint64, error) {
	if err := r.wait(r.raft.Barrier(r.cfg.ApplyTimeout)); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, errAbandoned) {
			return 0, fmt.Errorf("%w: %w", errNotLeader, err)
		}
		return 0, err
	}
	return r.fsm.last.Load(), nil
}

func (r *Replica) waitApplied(ctx context.Context, idx uint64) error {
	wait := 500 * time.Microsecond
	for r.fsm.last.Load() < idx {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: catalog read: applied %d of %d: %w", actors.ErrUnavailable, r.fsm.last.Load(), idx, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
	return nil
}

// join asks the members at cfg.Join, in turn, to add this node, until
// one does.
func (r *Replica) join(ctx context.Context) error {
	me := r.self()
	wait := 100 * time.Millisecond
	seeds := r.cfg.Seeds()
	for i := 0; ; i++ {
		seed := seeds[i%len(seeds)]
		err := r.postJoin(ctx, seed, me)
		if err == nil {
			return nil
		}
		r.log.Info("joining the cluster", "via", seed, "err", err)
		if (i+1)%len(seeds) != 0 {
			continue // the next seed at once
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: join via %s: %w", actors.ErrUnavailable, r.cfg.Join, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func (r *Replica) self() *smilepb.NodeInfo {
	return &smilepb.NodeInfo{Id: r.id, RaftAddr: r.RaftAddr(), ApiAddr: r.cfg.APIAddr}
}

// register waits for a leader and puts this node's addresses in the
// catalog when they are not there yet (first start, or new addresses).
func (r *Replica) register(ctx context.Context) error {
	me := r.self()
	wait := 10 * time.Millisecond
	for {
		if r.leaderID() != "" {
			nodes, err := r.nodes()
			if err != nil {
				return err
			}
			if n, ok := nodes[r.id]; ok && proto.Equal(n, me) {
				return nil
			}
			// A follower forwards to the leader, whose address it learns
			// from the log it is catching up on.
			_, lok := nodes[r.leaderID()]
			if r.IsLeader() || lok {
				if _, err := r.Apply(ctx, &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_PutNode{PutNode: &smilepb.PutNode{Node: me}}}); err != nil {
					return err
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: no raft leader (leader %q): %w", actors.ErrUnavailable, r.leaderID(), ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// addServer, at the leader, makes n a member (a voter while there are
// fewer than MaxVoters, else a non-voter) and records its addresses.
func (r *Replica) addServer(ctx context.Context, n *smilepb.NodeInfo) error {
	if err := storage.ValidID(n.GetId()); err != nil {
		return fmt.Errorf("%w: node id: %w", storage.ErrInvalid, err)
	}
	for _, a := range []string{n.GetRaftAddr(), n.GetApiAddr()} {
		if err := dialable(a); err != nil {
			return fmt.Errorf("%w: node %q: %w", storage.ErrInvalid, n.GetId(), err)
		}
	}
	cf := r.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	voters, found := 0, false
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
		if string(s.ID) == n.GetId() && string(s.Address) == n.GetRaftAddr() {
			found = true
		}
	}
	if !found {
		var f raft.IndexFuture
		if voters < r.cfg.MaxVoters {
			f = r.raft.AddVoter(raft.ServerID(n.GetId()), raft.ServerAddress(n.GetRaftAddr()), 0, r.cfg.ApplyTimeout)
		} else {
			f = r.raft.AddNonvoter(raft.ServerID(n.GetId()), raft.ServerAddress(n.GetRaftAddr()), 0, r.cfg.ApplyTimeout)
		}
		if err := f.Error(); err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
				return fmt.Errorf("%w: %w", errNotLeader, err)
			}
			return err
		}
		r.log.Info("node joined", "id", n.GetId(), "raft", n.GetRaftAddr(), "api", n.GetApiAddr(), "voter", voters < r.cfg.MaxVoters)
	}
	_, err := r.Apply(ctx, &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_PutNode{PutNode: &smilepb.PutNode{Node: n}}})
	return err
}
