package storage

import (
	"errors"
	"fmt"
	"math"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
)

// A tenant's usage (c/u/<tenant>, TenantUsage) is the number of its vPLMs
// and the sum of their params_bytes. Create, Delete and NewVersion change
// it in the same transaction as the vPLM, so it is replicated, snapshotted
// and hashed with the rest of the catalog. A tenant that holds nothing has
// no record. The sizes are the commands' params_bytes, as the proposer
// measured the blob: the catalog does not read blobs (a follower may not
// have them yet). Usage never goes below zero (a vPLM created before usage
// was kept gives back nothing it was not charged).

// Usage returns what the tenant holds; a tenant with no vPLMs (or unknown)
// holds zero.
func (c *Catalog) Usage(tenant string) (*smilepb.TenantUsage, error) {
	if err := ValidID(tenant); err != nil {
		return nil, fmt.Errorf("tenant: %w", err)
	}
	var u *smilepb.TenantUsage
	err := c.s.catView(func(txn *badger.Txn) (err error) {
		u, err = getUsage(txn, tenant)
		return err
	})
	return u, err
}

func getUsage(txn *badger.Txn, tenant string) (*smilepb.TenantUsage, error) {
	u := new(smilepb.TenantUsage)
	item, err := txn.Get(key(prefixUsage, tenant))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return u, nil
	}
	if err != nil {
		return nil, err
	}
	if err := item.Value(func(b []byte) error { return proto.Unmarshal(b, u) }); err != nil {
		return nil, fmt.Errorf("%w: usage record %q: %w", ErrCorrupt, item.Key(), err)
	}
	return u, nil
}

// getTenantTxn returns the tenant's record, or nil when there is none.
func getTenantTxn(txn *badger.Txn, name string) (*smilepb.Tenant, error) {
	item, err := txn.Get(key(prefixTenant, name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeTenant(item)
}

// chargeUsage works out the tenant's usage after adding vplms vPLMs and
// replacing oldBytes of params with newBytes, and checks it against the
// tenant's quotas (ErrQuotaExceeded). Only growth is checked: a change
// that keeps or shrinks a dimension passes even when a lowered quota is
// already exceeded, so a tenant over quota can still shrink.
func chargeUsage(txn *badger.Txn, tenant string, vplms, oldBytes, newBytes uint64) (*smilepb.TenantUsage, error) {
	u, err := getUsage(txn, tenant)
	if err != nil {
		return nil, err
	}
	was := proto.CloneOf(u)
	u.Vplms = satAdd(u.Vplms, vplms)
	u.Bytes = satAdd(satSub(u.Bytes, oldBytes), newBytes)
	t, err := getTenantTxn(txn, tenant)
	if err != nil || t == nil {
		return u, err
	}
	if m := t.GetMaxVplms(); m > 0 && vplms > 0 && u.Vplms > m {
		return nil, fmt.Errorf("%w: tenant %q: max_vplms is %d and it holds %d vPLMs", ErrQuotaExceeded, tenant, m, was.Vplms)
	}
	if m := t.GetMaxBytes(); m > 0 && newBytes > oldBytes && u.Bytes > m {
		return nil, fmt.Errorf("%w: tenant %q: max_bytes is %d and it holds %d bytes; this needs %d more",
			ErrQuotaExceeded, tenant, m, was.Bytes, newBytes-oldBytes)
	}
	return u, nil
}

// putUsage plans writing u as the tenant's usage (deleting the record when
// the tenant holds nothing).
func putUsage(ch *change, tenant string, u *smilepb.TenantUsage) {
	if u.GetVplms() == 0 && u.GetBytes() == 0 {
		ch.del(key(prefixUsage, tenant))
		return
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(u)
	if err != nil {
		panic(fmt.Sprintf("storage: marshal TenantUsage: %v", err)) // two uint64 fields cannot fail
	}
	ch.set(key(prefixUsage, tenant), b)
}

func satAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

func satSub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// CheckQuota reports, from this node's copy of the catalog, whether the
// tenant could take vplms more vPLMs and bytes more bytes of params
// (ErrQuotaExceeded otherwise, as a command would fail). It is advisory:
// a create checks before it stores and replicates its params blob, so an
// over-quota tenant does not fill disks; the state machine decides.
func (c *Catalog) CheckQuota(tenant string, vplms, bytes uint64) error {
	if err := ValidID(tenant); err != nil {
		return fmt.Errorf("tenant: %w", err)
	}
	return c.s.catView(func(txn *badger.Txn) error {
		_, err := chargeUsage(txn, tenant, vplms, 0, bytes)
		return err
	})
}
