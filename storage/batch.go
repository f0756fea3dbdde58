package storage

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Helpers for work bigger than one Badger transaction. They use the
// Badger handle directly, without Store.mu: callers hold what they need.

// updateChunked runs op(txn, i) for i in [0, n) in read-write
// transactions, committing whenever Badger says the transaction is full
// and redoing a chunk whose commit lost a race (so op must be safe to run
// again on a fresh transaction: it rereads what it decides on).
func updateChunked(db *badger.DB, n int, op func(txn *badger.Txn, i int) error) error {
	conflicts := 0
	for start := 0; start < n; {
		txn := db.NewTransaction(true)
		i := start
		for ; i < n; i++ {
			err := op(txn, i)
			if errors.Is(err, badger.ErrTxnTooBig) && i > start {
				break
			}
			if err != nil {
				txn.Discard()
				return err
			}
		}
		err := txn.Commit()
		if errors.Is(err, badger.ErrConflict) {
			if conflicts++; conflicts >= conflictRetries {
				return fmt.Errorf("storage: %d conflicting retries: %w", conflicts, err)
			}
			continue
		}
		if err != nil {
			return err
		}
		start = i
	}
	return nil
}

// deletePrefix deletes every key that starts with prefix, in as many
// transactions as it takes (not atomic; callers make it idempotent).
func deletePrefix(db *badger.DB, prefix []byte) error {
	for {
		keys, err := pageKeys(db, prefix, nil, 10_000)
		if err != nil || len(keys) == 0 {
			return err
		}
		if err := updateChunked(db, len(keys), func(txn *badger.Txn, i int) error {
			return txn.Delete(keys[i])
		}); err != nil {
			return err
		}
	}
}

// pageKeys returns up to n keys with prefix that sort after after (from the
// first when after is nil), without reading values.
func pageKeys(db *badger.DB, prefix, after []byte, n int) ([][]byte, error) {
	var keys [][]byte
	err := db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix, opts.PrefetchValues = prefix, false
		it := txn.NewIterator(opts)
		defer it.Close()
		start := prefix
		if after != nil {
			start = after
		}
		for it.Seek(start); it.ValidForPrefix(prefix) && len(keys) < n; it.Next() {
			if after != nil && bytes.Equal(it.Item().Key(), after) {
				continue
			}
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	return keys, err
}

// hasPrefix reports whether any key starts with prefix.
func hasPrefix(txn *badger.Txn, prefix []byte) bool {
	opts := badger.DefaultIteratorOptions
	opts.Prefix, opts.PrefetchValues = prefix, false
	it := txn.NewIterator(opts)
	defer it.Close()
	it.Rewind()
	return it.Valid()
}

// scanPrefix calls fn for every key with prefix, in key order; key and
// value are only valid during the call.
func scanPrefix(txn *badger.Txn, prefix []byte, fn func(k, v []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if err := item.Value(func(v []byte) error { return fn(item.Key(), v) }); err != nil {
			return err
		}
	}
	return nil
}
