package cluster

import (
	"context"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/storage"
)

// LocalCatalog is the catalog of a single node: commands go straight to
// the local Badger catalog, one place where the storage issue puts Raft in
// front (Apply becomes a raft.Apply of the encoded command).
type LocalCatalog struct{ C *storage.Catalog }

func (l LocalCatalog) Apply(ctx context.Context, cmd *smilepb.CatalogCommand) (*smilepb.VPLM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return l.C.Apply(cmd)
}

func (l LocalCatalog) Get(ctx context.Context, id string) (*smilepb.VPLM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return l.C.Get(id)
}

func (l LocalCatalog) List(ctx context.Context, tenant, after string, limit int) ([]*smilepb.VPLM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return l.C.List(tenant, after, limit)
}

var _ actors.Catalog = LocalCatalog{}
