package storage

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Records are the store's plain keyed values beside the catalog and blobs:
// state that belongs to one node's work rather than to the replicated
// catalog (training jobs, their checkpoints, cached representations). Each
// kind lives under its own namespace, a key prefix that cannot collide with
// the catalog's (c/), blobs' (b/) or reference counts' (r/):
//
//	j/<job id>                 TrainJob, protobuf: a training job's record
//	k/<job id>                 the job's last checkpoint (train.FitOptions.Checkpoint bytes)
//	x/<cache key>/h            a representation cache's header
//	x/<cache key>/c/<%08d>     one chunk of cached representations
//	x/<cache key>/done         the completion marker, written after every chunk
//	t/<table id>/h             a PLOT table's manifest (see actors/plot.go)
//	t/<table id>/g/<%08d>      a chunk of its n-gram list
//
// Keys within a namespace are opaque to the store; callers keep them
// free of NUL bytes.

// Namespace is a record key prefix.
type Namespace string

// The record namespaces.
const (
	NSJob        Namespace = "j/"
	NSCheckpoint Namespace = "k/"
	NSRepCache   Namespace = "x/"
	NSPlotTable  Namespace = "t/"
)

func (ns Namespace) valid() bool {
	return ns == NSJob || ns == NSCheckpoint || ns == NSRepCache || ns == NSPlotTable
}

// Record is one keyed value, or (Delete) the removal of one.
type Record struct {
	NS     Namespace
	Key    string
	Value  []byte
	Delete bool
}

func recordKey(ns Namespace, k string) ([]byte, error) {
	if !ns.valid() {
		return nil, fmt.Errorf("%w: record namespace %q", ErrInvalid, ns)
	}
	if k == "" || strings.IndexByte(k, 0) >= 0 {
		return nil, fmt.Errorf("%w: record key %q", ErrInvalid, k)
	}
	return append([]byte(ns), k...), nil
}

// GetRecord returns the value stored under ns/key (ErrNotFound if none).
func (s *Store) GetRecord(ns Namespace, key string) ([]byte, error) {
	k, err := recordKey(ns, key)
	if err != nil {
		return nil, err
	}
	var v []byte
	err = s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: record %s%s", ErrNotFound, ns, key)
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	return v, err
}

// PutRecords writes (and deletes) recs in one transaction: all or none.
func (s *Store) PutRecords(recs ...Record) error {
	keys := make([][]byte, len(recs))
	for i, r := range recs {
		k, err := recordKey(r.NS, r.Key)
		if err != nil {
			return err
		}
		keys[i] = k
	}
	err := s.update(func(txn *badger.Txn) error {
		for i, r := range recs {
			var err error
			if r.Delete {
				err = txn.Delete(keys[i])
			} else {
				err = txn.Set(keys[i], r.Value)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("storage: put records: %w", err)
	}
	return err
}

// ScanRecords calls fn for every record of ns whose key starts with
// prefix, in key order, until fn returns an error (returned as is). The
// value is only valid during the call.
func (s *Store) ScanRecords(ns Namespace, prefix string, fn func(key string, value []byte) error) error {
	if !ns.valid() {
		return fmt.Errorf("%w: record namespace %q", ErrInvalid, ns)
	}
	p := append([]byte(ns), prefix...)
	return s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = p
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			item := it.Item()
			k := bytes.TrimPrefix(item.Key(), []byte(ns))
			if err := item.Value(func(v []byte) error { return fn(string(k), v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteRecords removes every record of ns whose key starts with prefix
// (in several transactions when there are many: not atomic).
func (s *Store) DeleteRecords(ns Namespace, prefix string) error {
	if !ns.valid() {
		return fmt.Errorf("%w: record namespace %q", ErrInvalid, ns)
	}
	p := append([]byte(ns), prefix...)
	for {
		var keys [][]byte
		err := s.view(func(txn *badger.Txn) error {
			opts := badger.DefaultIteratorOptions
			opts.Prefix, opts.PrefetchValues = p, false
			it := txn.NewIterator(opts)
			defer it.Close()
			for it.Seek(p); it.ValidForPrefix(p) && len(keys) < 1000; it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		if err := s.update(func(txn *badger.Txn) error {
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("storage: delete records: %w", err)
		}
	}
}
