package actors

import (
	"context"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/train"
)

// The train.Dataset implementations a training job reads: cached
// representations (the normal case), the same computed afresh on every
// Load (the comparison the benchmark makes), and token ids (full
// fine-tuning, which runs every layer itself).

// Exec binds the device to a tenant: each call is one Work of that tenant,
// waited for (see DeviceHandle.Do; when ctx ends while the work runs, it
// returns once the work has).
func (h *DeviceHandle) Exec(sys *actor.ActorSystem, tenant string) ExecFunc {
	return func(ctx context.Context, tokens int, run func(bb model.Backbone) error) error {
		_, err := h.doWait(ctx, sys, &Work{Tenant: tenant, Tokens: tokens, Run: run})
		return err
	}
}

func pickLabels(labels []int, idx []int) ([]int, error) {
	out := make([]int, len(idx))
	for k, i := range idx {
		if i < 0 || i >= len(labels) {
			return nil, fmt.Errorf("%w: example %d of %d", ErrInternal, i, len(labels))
		}
		out[k] = labels[i]
	}
	return out, nil
}

type cachedDataset struct {
	set    *RepSet
	labels []int
}

// NewCachedDataset reads a complete representation cache; labels[i] is
// example i's label index.
func NewCachedDataset(set *RepSet, labels []int) (train.Dataset, error) {
	if set.Len() != len(labels) {
		return nil, fmt.Errorf("%w: %d cached examples, %d labels", ErrInternal, set.Len(), len(labels))
	}
	return &cachedDataset{set: set, labels: labels}, nil
}

func (d *cachedDataset) Len() int { return len(d.labels) }

func (d *cachedDataset) Load(ctx context.Context, idx []int) (*train.Inputs, []int, error) {
	labels, err := pickLabels(d.labels, idx)
	if err != nil {
		return nil, nil, err
	}
	in, err := d.set.Load(ctx, idx)
	if err != nil {
		return nil, nil, err
	}
	return in, labels, nil
}

type uncachedDataset struct {
	ids    [][]int32
	labels []int
	key    RepKey // Kind and Layer
	widths []int
	cfg    RepCacheConfig
	exec   ExecFunc
}

// NewUncachedDataset computes an engine's inputs (kind at layer, as
// Engine.Input says) through the backbone on every Load, in device work
// items (exec) sized as a cache build's. bb gives only the geometry.
func NewUncachedDataset(bb model.Backbone, ids [][]int32, labels []int, kind train.InputKind, layer int, exec ExecFunc) (train.Dataset, error) {
	if len(ids) != len(labels) {
		return nil, fmt.Errorf("%w: %d examples, %d labels", ErrInternal, len(ids), len(labels))
	}
	widths, err := RepWidths(bb, kind, layer)
	if err != nil {
		return nil, err
	}
	return &uncachedDataset{ids: ids, labels: labels, key: RepKey{Kind: kind, Layer: layer}, widths: widths, cfg: DefaultRepCacheConfig(), exec: exec}, nil
}

func (d *uncachedDataset) Len() int { return len(d.labels) }

func (d *uncachedDataset) Load(ctx context.Context, idx []int) (*train.Inputs, []int, error) {
	labels, err := pickLabels(d.labels, idx)
	if err != nil {
		return nil, nil, err
	}
	ids := make([][]int32, len(idx))
	for k, i := range idx {
		ids[k] = d.ids[i]
	}
	planes, _, err := computeReps(ctx, d.key, nil, ids, d.widths, d.cfg, d.exec)
	if err != nil {
		return nil, nil, err
	}
	in := &train.Inputs{H: planes[0]}
	if len(planes) > 1 {
		in.Z = planes[1]
	}
	if perToken(d.key.Kind) {
		in.Offsets = make([]int, len(ids)+1)
		for k, s := range ids {
			in.Offsets[k+1] = in.Offsets[k] + len(s)
		}
	}
	return in, labels, nil
}

type idsDataset struct {
	ids    [][]int32
	labels []int
}

func (d *idsDataset) Len() int { return len(d.labels) }

func (d *idsDataset) Load(_ context.Context, idx []int) (*train.Inputs, []int, error) {
	labels, err := pickLabels(d.labels, idx)
	if err != nil {
		return nil, nil, err
	}
	in := &train.Inputs{IDs: make([][]int32, len(idx))}
	for k, i := range idx {
		in.IDs[k] = d.ids[i]
	}
	return in, labels, nil
}
