package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// RaftStore is hashicorp/raft's LogStore and StableStore on a Store: the
// node's own Raft log (l/) and its term and vote (s/). Writes are as durable
// as the Store's (DefaultOptions syncs every commit, which Raft's safety
// needs). It is safe for concurrent use; after the Store is closed every
// method returns ErrClosed.
type RaftStore struct {
	s *Store
}

var (
	_ raft.LogStore    = (*RaftStore)(nil)
	_ raft.StableStore = (*RaftStore)(nil)
)

// NewRaftStore returns the Raft log and stable store kept in s.
func NewRaftStore(s *Store) *RaftStore { return &RaftStore{s: s} }

var (
	prefixRaftLog    = []byte("l/")
	prefixRaftStable = []byte("s/")
)

// raftLogKey is l/ + the index big-endian, so key order is log order.
func raftLogKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64(bytes.Clone(prefixRaftLog), index)
}

func raftStableKey(k []byte) []byte { return append(bytes.Clone(prefixRaftStable), k...) }

// FirstIndex returns the lowest stored index, 0 when there is none.
func (r *RaftStore) FirstIndex() (uint64, error) { return r.edgeIndex(false) }

// LastIndex returns the highest stored index, 0 when there is none.
func (r *RaftStore) LastIndex() (uint64, error) { return r.edgeIndex(true) }

func (r *RaftStore) edgeIndex(last bool) (uint64, error) {
	var index uint64
	err := r.s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix, opts.PrefetchValues, opts.Reverse = prefixRaftLog, false, last
		it := txn.NewIterator(opts)
		defer it.Close()
		seek := prefixRaftLog
		if last {
			// A reverse Seek lands on the greatest key <= seek.
			seek = raftLogKey(math.MaxUint64)
		}
		if it.Seek(seek); it.ValidForPrefix(prefixRaftLog) {
			k := it.Item().Key()
			if len(k) != len(prefixRaftLog)+8 {
				return fmt.Errorf("%w: raft log key %q", ErrCorrupt, k)
			}
			index = binary.BigEndian.Uint64(k[len(prefixRaftLog):])
		}
		return nil
	})
	return index, err
}

// GetLog reads the entry at index into log; raft.ErrLogNotFound, unwrapped
// because Raft compares with ==, when there is none.
func (r *RaftStore) GetLog(index uint64, log *raft.Log) error {
	return r.s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(raftLogKey(index))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return raft.ErrLogNotFound
		}
		if err != nil {
			return fmt.Errorf("storage: raft log %d: %w", index, err)
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("storage: raft log %d: %w", index, err)
		}
		if err := decodeRaftLog(v, log); err != nil {
			return fmt.Errorf("%w (index %d)", err, index)
		}
		if log.Index != index {
			return fmt.Errorf("%w: raft log %d holds index %d", ErrCorrupt, index, log.Index)
		}
		return nil
	})
}

// StoreLog stores one entry.
func (r *RaftStore) StoreLog(log *raft.Log) error { return r.StoreLogs([]*raft.Log{log}) }

// StoreLogs stores entries, gaps allowed. A batch bigger than one Badger
// transaction is committed in several, in order, so a crash part way
// leaves a prefix of the batch: what Raft sees when an append fails.
func (r *RaftStore) StoreLogs(logs []*raft.Log) error {
	err := r.s.writeChunked(len(logs), func(txn *badger.Txn, i int) error {
		return txn.Set(raftLogKey(logs[i].Index), encodeRaftLog(logs[i]))
	})
	if err != nil && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("storage: store raft logs: %w", err)
	}
	return err
}

// DeleteRange removes the entries from min to max, both included.
func (r *RaftStore) DeleteRange(min, max uint64) error {
	const round = 10_000
	for min <= max {
		// Collect the keys present rather than count from min to max: Raft
		// may name a range far wider than what is stored.
		var keys [][]byte
		err := r.s.view(func(txn *badger.Txn) error {
			opts := badger.DefaultIteratorOptions
			opts.Prefix, opts.PrefetchValues = prefixRaftLog, false
			it := txn.NewIterator(opts)
			defer it.Close()
			end := raftLogKey(max)
			for it.Seek(raftLogKey(min)); it.ValidForPrefix(prefixRaftLog) && len(keys) < round; it.Next() {
				k := it.Item().KeyCopy(nil)
				if bytes.Compare(k, end) > 0 {
					break
				}
				keys = append(keys, k)
			}
			return nil
		})
		if err == nil && len(keys) > 0 {
			err = r.s.writeChunked(len(keys), func(txn *badger.Txn, i int) error { return txn.Delete(keys[i]) })
		}
		if err != nil && !errors.Is(err, ErrClosed) {
			return fmt.Errorf("storage: delete raft logs %d-%d: %w", min, max, err)
		}
		if err != nil || len(keys) < round {
			return err
		}
		last := binary.BigEndian.Uint64(keys[len(keys)-1][len(prefixRaftLog):])
		if last == math.MaxUint64 {
			return nil
		}
		min = last + 1
	}
	return nil
}

// Set stores val under key.
func (r *RaftStore) Set(key, val []byte) error {
	val = bytes.Clone(val)
	return r.s.update(func(txn *badger.Txn) error { return txn.Set(raftStableKey(key), val) })
}

// Get returns the value under key, ErrStableKeyNotFound if none.
func (r *RaftStore) Get(key []byte) ([]byte, error) {
	var v []byte
	err := r.s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(raftStableKey(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrStableKeyNotFound
		}
		if err != nil {
			return fmt.Errorf("storage: raft stable %q: %w", key, err)
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err == nil && v == nil {
		v = []byte{} // set to empty: not the same as missing
	}
	return v, err
}

// SetUint64 stores val under key, 8 bytes big-endian.
func (r *RaftStore) SetUint64(key []byte, val uint64) error {
	return r.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns the value under key, 0 (and no error) if none, as the
// StableStore interface documents.
func (r *RaftStore) GetUint64(key []byte) (uint64, error) {
	v, err := r.Get(key)
	switch {
	case errors.Is(err, ErrStableKeyNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	case len(v) != 8:
		return 0, fmt.Errorf("%w: raft stable %q holds %d bytes, not a uint64", ErrCorrupt, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// writeChunked runs op for 0..n-1, committing the transaction and going on
// in a fresh one whenever Badger says it is full. Write-only transactions
// never conflict, so there is nothing to retry.
func (s *Store) writeChunked(n int, op func(txn *badger.Txn, i int) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for i := range n {
		err := op(txn, i)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err = txn.Commit(); err != nil {
				return err
			}
			txn = s.db.NewTransaction(true)
			err = op(txn, i)
		}
		if err != nil {
			return err
		}
	}
	return txn.Commit()
}

// The encoding of a raft.Log (version 1):
//
//	byte     version (1)
//	uvarint  index
//	uvarint  term
//	byte     type
//	uvarint  len(data), data
//	uvarint  len(extensions), extensions
//	byte     1 if appended_at is set, then varint appended_at in Unix nanoseconds
//
// Nothing may follow. A later version adds fields after these and bumps the
// byte; decoders reject versions they do not know.
const raftLogVersion = 1

func encodeRaftLog(l *raft.Log) []byte {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+1+2*binary.MaxVarintLen32+len(l.Data)+len(l.Extensions)+1)
	b = append(b, raftLogVersion)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	if l.AppendedAt.IsZero() {
		return append(b, 0)
	}
	return binary.AppendVarint(append(b, 1), l.AppendedAt.UnixNano())
}

// decodeRaftLog fills l from b; Data and Extensions alias b. Errors wrap
// ErrCorrupt.
func decodeRaftLog(b []byte, l *raft.Log) error {
	d := raftLogDecoder{b: b}
	if v := d.byte(); d.err == nil && v != raftLogVersion {
		return fmt.Errorf("%w: raft log encoding version %d", ErrCorrupt, v)
	}
	out := raft.Log{Index: d.uvarint(), Term: d.uvarint(), Type: raft.LogType(d.byte())}
	out.Data = d.bytes()
	out.Extensions = d.bytes()
	if d.byte() == 1 {
		out.AppendedAt = time.Unix(0, d.varint())
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("%w: raft log encoding: %v", ErrCorrupt, d.err)
	}
	*l = out
	return nil
}

// raftLogDecoder reads fields until the first error, then only zeros.
type raftLogDecoder struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated")

func (d *raftLogDecoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail(errShort)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *raftLogDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *raftLogDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes returns nil for an empty field, a capped slice of b otherwise.
func (d *raftLogDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n == 0 {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(errShort)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *raftLogDecoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}
