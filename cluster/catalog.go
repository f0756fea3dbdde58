package cluster

import (
	"context"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/storage"
)

// LocalCatalog is a catalog without Raft: commands go straight to the
// local Badger catalog. Nodes started without a Replica use it (tests of
// the actors on one node); `smile serve` always runs a Replica.
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

func (l LocalCatalog) Tenant(ctx context.Context, name string) (*smilepb.Tenant, *smilepb.TenantUsage, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return tenantAndUsage(l.C, name)
}

// tenantAndUsage reads a tenant's settings and usage from a catalog.
func tenantAndUsage(c *storage.Catalog, name string) (*smilepb.Tenant, *smilepb.TenantUsage, error) {
	t, _, err := c.Tenant(name)
	if err != nil {
		return nil, nil, err
	}
	u, err := c.Usage(name)
	if err != nil {
		return nil, nil, err
	}
	return t, u, nil
}

func (l LocalCatalog) CheckQuota(tenant string, vplms, bytes uint64) error {
	return l.C.CheckQuota(tenant, vplms, bytes)
}

var (
	_ actors.Catalog      = LocalCatalog{}
	_ actors.QuotaChecker = LocalCatalog{}
	_ actors.QuotaChecker = (*Replica)(nil)
)
