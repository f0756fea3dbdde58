package storage

import (
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
)

// API keys (c/k/<id>, APIKey) and cluster nodes (c/n/<id>, NodeInfo) are
// catalog records like tenants: changed only by catalog commands, so every
// node agrees on who may call and where the members are.

func planPutAPIKey(k *smilepb.APIKey, o applyOpts) (*change, error) {
	if k == nil {
		return nil, fmt.Errorf("%w: put API key without a key", ErrInvalid)
	}
	if err := ValidID(k.GetId()); err != nil {
		return nil, fmt.Errorf("API key id: %w", err)
	}
	if err := ValidID(k.GetTenant()); err != nil {
		return nil, fmt.Errorf("API key tenant: %w", err)
	}
	if !isLowerHex(k.GetHash(), 64) {
		return nil, fmt.Errorf("%w: API key %q: hash must be 64 lowercase hex digits (sha256)", ErrInvalid, k.GetId())
	}
	nk := proto.CloneOf(k)
	if nk.CreatedUnixMs == 0 && o.local {
		nk.CreatedUnixMs = o.now.UnixMilli()
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(nk)
	if err != nil {
		return nil, fmt.Errorf("%w: API key %q: %w", ErrInvalid, k.GetId(), err)
	}
	ch := &change{}
	ch.set(key(prefixAPIKey, nk.Id), b)
	return ch, nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func planDeleteAPIKey(txn *badger.Txn, id string) (*change, error) {
	if err := ValidID(id); err != nil {
		return nil, fmt.Errorf("API key id: %w", err)
	}
	ok, err := has(txn, key(prefixAPIKey, id))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: API key %q", ErrNotFound, id)
	}
	ch := &change{}
	ch.del(key(prefixAPIKey, id))
	return ch, nil
}

// ValidNodeID checks a cluster node id (a Raft server id): 1 to 128
// printable ASCII characters other than space and '/' (ErrBadID otherwise).
// Addresses such as "10.0.0.7:7000" are valid ids.
func ValidNodeID(id string) error {
	ok := id != "" && len(id) <= 128 && !strings.ContainsAny(id, "/ ")
	for i := 0; ok && i < len(id); i++ {
		ok = id[i] > ' ' && id[i] < 0x7f
	}
	if !ok {
		return fmt.Errorf("%w: node id %q must be 1 to 128 printable ASCII characters, no space or '/'", ErrBadID, id)
	}
	return nil
}

func planPutNode(n *smilepb.NodeInfo) (*change, error) {
	if n == nil {
		return nil, fmt.Errorf("%w: put node without a node", ErrInvalid)
	}
	if err := ValidNodeID(n.GetId()); err != nil {
		return nil, err
	}
	if n.GetRaftAddr() == "" || n.GetApiAddr() == "" {
		return nil, fmt.Errorf("%w: node %q needs a raft and an API address", ErrInvalid, n.GetId())
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("%w: node %q: %w", ErrInvalid, n.GetId(), err)
	}
	ch := &change{}
	ch.set(key(prefixNode, n.GetId()), b)
	return ch, nil
}

// APIKey returns the key with that id (ErrNotFound, ErrBadID).
func (c *Catalog) APIKey(id string) (*smilepb.APIKey, error) {
	if err := ValidID(id); err != nil {
		return nil, fmt.Errorf("API key id: %w", err)
	}
	k := new(smilepb.APIKey)
	err := c.s.catView(func(txn *badger.Txn) error {
		item, err := txn.Get(key(prefixAPIKey, id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: API key %q", ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		return decodeRecord(item, k, "API key")
	})
	if err != nil {
		return nil, err
	}
	return k, nil
}

// APIKeys returns the tenant's keys (every tenant's for ""), in id order.
func (c *Catalog) APIKeys(tenant string) ([]*smilepb.APIKey, error) {
	if tenant != "" {
		if err := ValidID(tenant); err != nil {
			return nil, fmt.Errorf("tenant: %w", err)
		}
	}
	var out []*smilepb.APIKey
	err := c.scan(prefixAPIKey, func(item *badger.Item) error {
		k := new(smilepb.APIKey)
		if err := decodeRecord(item, k, "API key"); err != nil {
			return err
		}
		if tenant == "" || k.Tenant == tenant {
			out = append(out, k)
		}
		return nil
	})
	return out, err
}

// Nodes returns every node the catalog knows, in id order.
func (c *Catalog) Nodes() ([]*smilepb.NodeInfo, error) {
	var out []*smilepb.NodeInfo
	err := c.scan(prefixNode, func(item *badger.Item) error {
		n := new(smilepb.NodeInfo)
		if err := decodeRecord(item, n, "node"); err != nil {
			return err
		}
		out = append(out, n)
		return nil
	})
	return out, err
}

func (c *Catalog) scan(prefix []byte, fn func(item *badger.Item) error) error {
	return c.s.catView(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := fn(it.Item()); err != nil {
				return err
			}
		}
		return nil
	})
}

func decodeRecord(item *badger.Item, m proto.Message, what string) error {
	if err := item.Value(func(b []byte) error { return proto.Unmarshal(b, m) }); err != nil {
		return fmt.Errorf("%w: %s record %q: %w", ErrCorrupt, what, item.Key(), err)
	}
	return nil
}
