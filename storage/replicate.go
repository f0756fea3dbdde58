package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Helpers for blob replication: a node stores blobs a peer sends in bulk
// (PutBlobs), stores one under the digest it was asked for, replacing a
// corrupt copy (PutBlobAs, after GetBlob said ErrCorrupt), and lists the
// blobs the catalog references that it lacks (MissingBlobs).

// PutBlobs stores every blob and returns their digests, in order, as
// PutBlob would one at a time, but in one synced transaction (more only
// when they are over 64 MiB together or too many for Badger's transaction
// limits): the groups PutBlob's concurrent callers share. On error some
// groups may have been stored.
func (s *Store) PutBlobs(datas [][]byte) ([]string, error) {
	out := make([]string, len(datas))
	puts := make([]*blobPut, len(datas))
	for i, b := range datas {
		puts[i] = &blobPut{d: digestOf(b), data: b}
		out[i] = string(puts[i].d)
	}
	for start := 0; start < len(puts); {
		end := start + groupLen(puts[start:])
		if err := s.commitGroup(puts[start:end]); err != nil {
			return nil, err
		}
		start = end
	}
	return out, nil
}

// PutBlobAs stores data under digest, which it must hash to (ErrBadDigest
// for a malformed digest; ErrCorrupt, also ErrDigestMismatch, otherwise).
// A stored copy that no longer hashes to digest is replaced; a good one is
// kept.
func (s *Store) PutBlobAs(digest string, data []byte) error {
	d, err := ParseDigest(digest)
	if err != nil {
		return err
	}
	if got := digestOf(data); got != d {
		return fmt.Errorf("%w (%w): data for blob %s hashes to %s", ErrCorrupt, ErrDigestMismatch, d, got)
	}
	err = s.update(func(txn *badger.Txn) error { return s.putBlobTxn(txn, d, data, true) })
	if err != nil {
		return fmt.Errorf("storage: put blob %s: %w", d.Short(), err)
	}
	return nil
}

// MissingBlobs returns up to limit (all when limit <= 0) digests the
// catalog references (a reference count above zero) whose blob this node
// does not store, in digest order: what a follower, a backup or a repair
// must fetch from peers.
func (s *Store) MissingBlobs(limit int) ([]string, error) {
	var out []string
	err := s.catView(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix, opts.PrefetchValues = prefixRef, false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			d := Digest("sha256:" + string(it.Item().Key()[len(prefixRef):]))
			_, err := txn.Get(blobKey(d))
			if errors.Is(err, badger.ErrKeyNotFound) {
				out = append(out, string(d))
				if limit > 0 && len(out) == limit {
					return nil
				}
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}
