package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Blob garbage collection.
//
// A blob is live while a reference count (r/<hex>) names it; the catalog
// deletes it when the count drops to zero. A blob put but never committed
// to the catalog (a create that failed, a client that went away) has no
// count: PutBlob gives it a pending marker, g/<hex> -> put time and size,
// refreshed by every later put of the same bytes while it is unreferenced.
// GC deletes unreferenced blobs whose marker is older than the grace
// period (long enough for the create it was put for to commit and
// replicate), drops markers whose blob got referenced or is gone, and
// gives a marker dated now to any unreferenced blob without one (a blob a
// Restore left without references, or one put before markers existed),
// which a later GC may sweep. Each decision rereads the count in the
// transaction that deletes, so a create committing at the same moment
// either makes GC's commit conflict (and GC rereads and keeps the blob) or
// finds the blob gone (Apply: ErrMissingBlob).

// pending marker value: put time (Unix ns) and blob size, big-endian.
func encodePending(at time.Time, size uint64) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(at.UnixNano()))
	return binary.BigEndian.AppendUint64(b, size)
}

func decodePending(v []byte) (time.Time, uint64, error) {
	if len(v) != 16 {
		return time.Time{}, 0, fmt.Errorf("%w: pending marker is %d bytes, not 16", ErrCorrupt, len(v))
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v))), binary.BigEndian.Uint64(v[8:]), nil
}

// GCStats says what a GC did.
type GCStats struct {
	// Blobs and Bytes: unreferenced blobs deleted, and their size.
	Blobs int
	Bytes int64
	// Markers: pending markers dropped because their blob got referenced
	// or is gone.
	Markers int
	// Adopted: unreferenced blobs found without a marker and given one.
	Adopted int
	// ValueLogRewrites: value log files Badger rewrote to give space back.
	ValueLogRewrites int
}

// gcPage bounds the keys one GC transaction decides on.
const gcPage = 1000

// GC deletes blobs no vPLM references whose pending marker is older than
// grace (see above), then runs Badger's value log GC until it has nothing
// to rewrite, so the space comes back once Badger's compactions have
// noticed the deletions (a later GC gets what this one could not). It
// stops early, returning what it did, when ctx is done.
func (s *Store) GC(ctx context.Context, grace time.Duration) (GCStats, error) {
	var st GCStats
	if err := s.gcAdopt(ctx, &st); err != nil {
		return st, fmt.Errorf("storage: gc: %w", err)
	}
	if err := s.gcSweep(ctx, grace, &st); err != nil {
		return st, fmt.Errorf("storage: gc: %w", err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		err := s.valueLogGC()
		switch {
		case err == nil:
			st.ValueLogRewrites++
			continue
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected), errors.Is(err, badger.ErrGCInMemoryMode):
			return st, nil
		}
		return st, fmt.Errorf("storage: gc: value log: %w", err)
	}
}

func (s *Store) valueLogGC() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.RunValueLogGC(0.5)
}

// pages calls fn with successive pages of keys under prefix.
func (s *Store) pages(ctx context.Context, prefix []byte, fn func(keys [][]byte) error) error {
	var after []byte
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var keys [][]byte
		err := s.view(func(txn *badger.Txn) error {
			var err error
			keys, err = pageKeys(s.db, prefix, after, gcPage)
			return err
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		if err := fn(keys); err != nil {
			return err
		}
		after = keys[len(keys)-1]
	}
}

// gcAdopt gives unreferenced blobs without a marker one dated now.
func (s *Store) gcAdopt(ctx context.Context, st *GCStats) error {
	return s.pages(ctx, prefixBlob, func(keys [][]byte) error {
		adopted := 0
		err := s.update(func(txn *badger.Txn) error {
			adopted = 0
			now := s.now()
			for _, k := range keys {
				d := Digest("sha256:" + string(k[len(prefixBlob):]))
				if n, err := getCount(txn, refKey(d)); err != nil || n > 0 {
					if err != nil {
						return err
					}
					continue
				}
				if ok, err := has(txn, pendingKey(d)); err != nil || ok {
					if err != nil {
						return err
					}
					continue
				}
				item, err := txn.Get(k)
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				var size int
				if err := item.Value(func(v []byte) error { size = len(v); return nil }); err != nil {
					return err
				}
				if err := txn.Set(pendingKey(d), encodePending(now, uint64(size))); err != nil {
					return err
				}
				adopted++
			}
			return nil
		})
		st.Adopted += adopted
		return err
	})
}

// gcSweep decides on every pending marker.
func (s *Store) gcSweep(ctx context.Context, grace time.Duration, st *GCStats) error {
	return s.pages(ctx, prefixPending, func(keys [][]byte) error {
		var page GCStats
		err := s.update(func(txn *badger.Txn) error {
			page = GCStats{}
			now := s.now()
			for _, k := range keys {
				d := Digest("sha256:" + string(k[len(prefixPending):]))
				item, err := txn.Get(k)
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				var at time.Time
				var size uint64
				if err := item.Value(func(v []byte) (err error) {
					at, size, err = decodePending(v)
					return err
				}); err != nil {
					// A marker that does not decode is dropped; the blob,
					// if unreferenced, is adopted again by the next GC.
					page.Markers++
					if err := txn.Delete(k); err != nil {
						return err
					}
					continue
				}
				n, err := getCount(txn, refKey(d))
				if err != nil {
					return err
				}
				stored, err := has(txn, blobKey(d))
				if err != nil {
					return err
				}
				switch {
				case n > 0 || !stored:
					page.Markers++
					if err := txn.Delete(k); err != nil {
						return err
					}
				case now.Sub(at) >= grace:
					page.Blobs++
					page.Bytes += int64(size)
					if err := txn.Delete(k); err != nil {
						return err
					}
					if err := txn.Delete(blobKey(d)); err != nil {
						return err
					}
				}
			}
			return nil
		})
		st.Blobs += page.Blobs
		st.Bytes += page.Bytes
		st.Markers += page.Markers
		return err
	})
}
