package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Options configures a Store.
type Options struct {
	// Dir holds the Badger files. Required unless InMemory.
	Dir string
	// InMemory keeps everything in memory (tests); Dir must then be empty.
	InMemory bool
	// SyncWrites fsyncs every commit. Without it an acknowledged write can be
	// lost in a crash, so only tests and throwaway stores turn it off.
	SyncWrites bool
	// Logger receives Badger's warnings and errors; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultOptions is a durable on-disk store in dir.
func DefaultOptions(dir string) Options {
	return Options{Dir: dir, SyncWrites: true}
}

// InMemoryOptions is a store that lives only as long as the process.
func InMemoryOptions() Options {
	return Options{InMemory: true}
}

// Validate checks that the options describe one store.
func (o Options) Validate() error {
	switch {
	case o.InMemory && o.Dir != "":
		return fmt.Errorf("storage: options: InMemory with Dir %q", o.Dir)
	case !o.InMemory && o.Dir == "":
		return errors.New("storage: options: Dir is required unless InMemory")
	}
	return nil
}

// Badger tuning. Badger's defaults (64 MiB memtables x5, 256 MiB block
// cache) are sized for a database server; the catalog and adapter blobs are
// small, and these settings cut resident memory about 3x. Params blobs
// (~130 KB) are above valueThreshold, so they go to the value log and keep
// the LSM tree (and compactions) small. Value log files of 1 GiB (sparse
// until written) rotate a quarter as often as 256 MiB ones, each rotation a
// new file created, truncated and mapped: synced writes of 134 KB blobs in
// batches of 128 ran at 3,172-4,152 blobs/s against 1,655-3,424 (three runs
// of `go test -run '^$' -bench BlobWrites -benchtime 40x ./storage/`).
const (
	memTableSize     = 16 << 20
	numMemtables     = 2
	blockCacheSize   = 16 << 20
	indexCacheSize   = 8 << 20
	valueThreshold   = 4 << 10
	valueLogFileSize = 1 << 30
	numCompactors    = 2
	// conflictRetries bounds retries of a transaction that lost a race with
	// another writer of the same keys; each retry rereads, so one always wins.
	conflictRetries = 100
)

func (o Options) badger() badger.Options {
	dir := o.Dir
	if o.InMemory {
		dir = ""
	}
	return badger.DefaultOptions(dir).
		WithInMemory(o.InMemory).
		WithSyncWrites(o.SyncWrites).
		WithLogger(newBadgerLogger(o.Logger)).
		WithMetricsEnabled(false).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithBlockCacheSize(blockCacheSize).
		WithIndexCacheSize(indexCacheSize).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(valueLogFileSize).
		WithNumCompactors(numCompactors)
}

// Store is SMILE's Badger database: the catalog (see Catalog) and
// content-addressed blobs. It is safe for concurrent use.
type Store struct {
	db  *badger.DB
	dir string // absolute; "" in memory

	// mu guards closed: every operation holds it shared, Close exclusively,
	// so no operation runs on a closed Badger.
	mu     sync.RWMutex
	closed bool
	// applyMu serialises catalog writes, as a Raft FSM will; see Catalog.
	applyMu sync.Mutex
	// swapMu is held exclusively while Restore swaps the staged catalog
	// in, and shared by catalog readers, so no reader sees half a swap.
	swapMu sync.RWMutex
	// snaps counts unreleased CatalogSnapshots; Close waits for them,
	// because a snapshot reads Badger after Snapshot has returned.
	snaps sync.WaitGroup
	// puts groups concurrent PutBlob calls into shared transactions.
	puts blobGroup
	// now is the clock of node-local bookkeeping (pending-blob markers,
	// GC, Apply's default times); tests replace it.
	now func() time.Time
}

// Open opens (creating if needed) the store.
func Open(opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	db, err := badger.Open(opts.badger())
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", opts.Dir, err)
	}
	st := &Store{db: db, now: time.Now}
	if !opts.InMemory {
		if st.dir, err = filepath.Abs(opts.Dir); err != nil {
			st.dir = opts.Dir
		}
	}
	// A Restore cut short by a crash is finished (or its staging dropped)
	// before anything reads the catalog.
	if err := st.recoverRestore(); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: open %s: finishing an interrupted restore: %w", opts.Dir, err)
	}
	return st, nil
}

// Close flushes and closes the store; later calls return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	s.snaps.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}

// Sync writes what Badger buffers (its value log, its memtable's file)
// to disk.
func (s *Store) Sync() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.Sync()
}

// view runs fn in a read-only transaction.
func (s *Store) view(fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.View(fn)
}

// catView runs fn in a read-only transaction that never sees a Restore's
// swap half done.
func (s *Store) catView(fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.swapMu.RLock()
	defer s.swapMu.RUnlock()
	return s.db.View(fn)
}

// update runs fn in a read-write transaction, rerunning it from the start
// when its commit loses a race with another transaction on the same keys.
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	var err error
	for range conflictRetries {
		if err = s.db.Update(fn); !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("storage: %d conflicting retries: %w", conflictRetries, err)
}

// Keys. The layout is documented in doc.go and docs/storage.md.
var (
	prefixCatalog = []byte("c/") // everything under it is replicated
	prefixVPLM    = []byte("c/v/")
	prefixTenant  = []byte("c/t/")
	prefixIndex   = []byte("c/i/") // c/i/<tenant>/<id> -> empty
	prefixUsage   = []byte("c/u/") // c/u/<tenant> -> TenantUsage
	prefixAPIKey  = []byte("c/k/") // c/k/<key id> -> APIKey
	prefixNode    = []byte("c/n/") // c/n/<node id> -> NodeInfo
	prefixBlob    = []byte("b/")
	prefixRef     = []byte("r/") // replicated, beside the catalog
	prefixPending = []byte("g/") // g/<hex> -> pending-blob marker (node-local)
	prefixStage   = []byte("z/") // z/<catalog key> -> a Restore's staged record (node-local)
	// keyApplied is the Raft position the catalog reflects (ApplyEntries);
	// node-local, but carried by snapshots so a restored node resumes
	// after the snapshot's entries.
	keyApplied = []byte("m/applied")
	// keyRestore marks a Restore's swap in progress (its phase).
	keyRestore = []byte("m/restore")
)

func key(prefix []byte, parts ...string) []byte {
	k := bytes.Clone(prefix)
	for i, p := range parts {
		if i > 0 {
			k = append(k, '/')
		}
		k = append(k, p...)
	}
	return k
}

func blobKey(d Digest) []byte    { return key(prefixBlob, d.Hex()) }
func refKey(d Digest) []byte     { return key(prefixRef, d.Hex()) }
func pendingKey(d Digest) []byte { return key(prefixPending, d.Hex()) }

// PutBlob stores data under its digest ("sha256:<hex>") and returns the
// digest. Storing the same bytes again is a no-op, except that a blob no
// vPLM references gets its pending marker (re)set to now, so that GC
// leaves it alone for a grace period: long enough for the create or new
// version it was put for to commit.
//
// Concurrent calls share synced transactions (see blobGroup): a thousand
// creates at once cost a few syncs, not a thousand.
func (s *Store) PutBlob(data []byte) (string, error) {
	d := digestOf(data)
	if err := s.putGrouped(d, data); err != nil {
		return "", fmt.Errorf("storage: put blob %s: %w", d.Short(), err)
	}
	return string(d), nil
}

func digestOf(data []byte) Digest {
	sum := sha256.Sum256(data)
	return Digest("sha256:" + hex.EncodeToString(sum[:]))
}

// putBlobTxn stores data (whose digest the caller has checked) unless it is
// stored already; with repair, a stored copy that no longer hashes to d is
// replaced. A blob without references gets a pending marker (put time and
// size) for GC.
func (s *Store) putBlobTxn(txn *badger.Txn, d Digest, data []byte, repair bool) error {
	item, err := txn.Get(blobKey(d))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		if err := txn.Set(blobKey(d), data); err != nil {
			return err
		}
	case err != nil:
		return err
	case repair:
		good := false
		if err := item.Value(func(v []byte) error { good = digestOf(v) == d; return nil }); err != nil {
			return err
		}
		if !good {
			if err := txn.Set(blobKey(d), data); err != nil {
				return err
			}
		}
	}
	n, err := getCount(txn, refKey(d))
	if err != nil || n > 0 {
		return err
	}
	return txn.Set(pendingKey(d), encodePending(s.now(), uint64(len(data))))
}

// GetBlob returns the blob's bytes after checking them against the digest
// (ErrNotFound, ErrCorrupt, ErrBadDigest).
func (s *Store) GetBlob(digest string) ([]byte, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return nil, err
	}
	var data []byte
	err = s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(blobKey(d))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: blob %s", ErrNotFound, d)
		}
		if err != nil {
			return fmt.Errorf("storage: get blob %s: %w", d.Short(), err)
		}
		data, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != d.Hex() {
		return nil, fmt.Errorf("%w: blob %s hashes to sha256:%x", ErrCorrupt, d, sum)
	}
	return data, nil
}

// HasBlob reports whether the blob is stored (ErrBadDigest for a malformed digest).
func (s *Store) HasBlob(digest string) (bool, error) {
	d, err := ParseDigest(digest)
	if err != nil {
		return false, err
	}
	var ok bool
	err = s.view(func(txn *badger.Txn) error {
		ok, err = has(txn, blobKey(d))
		return err
	})
	return ok, err
}

// DeleteBlob removes a blob that no vPLM references (ErrConflict if one
// does), with its pending marker. Deleting a blob that is not stored is a
// no-op. Blobs put but never committed to the catalog are also swept by GC.
func (s *Store) DeleteBlob(digest string) error {
	d, err := ParseDigest(digest)
	if err != nil {
		return err
	}
	return s.update(func(txn *badger.Txn) error {
		n, err := getCount(txn, refKey(d))
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: blob %s is the params of %d vPLMs", ErrConflict, d, n)
		}
		if err := txn.Delete(pendingKey(d)); err != nil {
			return err
		}
		return txn.Delete(blobKey(d))
	})
}

func has(txn *badger.Txn, k []byte) (bool, error) {
	_, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}
