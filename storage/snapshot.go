package storage

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// The catalog snapshot stream (version 1):
//
//	"SMILECAT"   8 bytes, magic
//	uvarint      version (1)
//	records      in key order, each:
//	               byte 1, uvarint len(key), key, uvarint len(value), value
//	byte 0       end of records
//	uvarint      number of records
//	[32]byte     sha256 of every byte above, from the magic on
//
// and nothing after it. The records are the replicated catalog keyspace
// (every c/ key and every r/ reference count) and the applied position
// (m/applied) where there is one. Keys must be in that keyspace and
// strictly increasing; a decoder rejects anything else, a version it does
// not know, a wrong count or checksum, a truncated stream or trailing
// bytes, with ErrCorrupt.
const (
	snapMagic   = "SMILECAT"
	snapVersion = 1

	tagEnd    = 0
	tagRecord = 1
	tagBlob   = 2

	maxKeyLen    = 1 << 10
	maxRecordLen = 16 << 20
	maxBlobLen   = 1 << 30
)

// inCatalog reports whether k belongs to the snapshot's keyspace.
func inCatalog(k []byte) bool {
	return bytes.HasPrefix(k, prefixCatalog) || bytes.HasPrefix(k, prefixRef) || bytes.Equal(k, keyApplied)
}

// frameWriter writes a framed stream and hashes what it writes.
type frameWriter struct {
	w   *bufio.Writer
	h   hash.Hash
	n   int64
	err error
	buf [binary.MaxVarintLen64]byte
}

func newFrameWriter(w *bufio.Writer) *frameWriter { return &frameWriter{w: w, h: sha256.New()} }

func (f *frameWriter) write(p []byte) {
	if f.err != nil {
		return
	}
	f.h.Write(p)
	var n int
	n, f.err = f.w.Write(p)
	f.n += int64(n)
}

func (f *frameWriter) uvarint(v uint64) { f.write(binary.AppendUvarint(f.buf[:0], v)) }
func (f *frameWriter) byte(b byte)      { f.buf[0] = b; f.write(f.buf[:1]) }

// end writes the end tag, the count and the checksum of the stream so far.
func (f *frameWriter) end(count uint64) {
	f.byte(tagEnd)
	f.uvarint(count)
	if f.err == nil {
		var n int
		n, f.err = f.w.Write(f.h.Sum(nil))
		f.n += int64(n)
	}
}

// frameReader reads a framed stream and hashes what it reads.
type frameReader struct {
	r *bufio.Reader
	h hash.Hash
}

func newFrameReader(r *bufio.Reader) *frameReader { return &frameReader{r: r, h: sha256.New()} }

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: stream truncated", ErrCorrupt)
	}
	return err
}

func (f *frameReader) ReadByte() (byte, error) {
	b, err := f.r.ReadByte()
	if err != nil {
		return 0, truncated(err)
	}
	f.h.Write([]byte{b})
	return b, nil
}

func (f *frameReader) uvarint() (uint64, error) {
	v, err := binary.ReadUvarint(f)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return v, err
}

// bytes reads a length-prefixed byte string of at most limit bytes. The
// buffer grows as bytes arrive, so a corrupt length cannot make it
// allocate more than the stream holds.
func (f *frameReader) bytes(limit uint64, what string) ([]byte, error) {
	n, err := f.uvarint()
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrCorrupt, what, n, limit)
	}
	return f.full(int(n))
}

func (f *frameReader) full(n int) ([]byte, error) {
	const step = 1 << 20
	b := make([]byte, 0, min(n, step))
	for len(b) < n {
		m := min(n-len(b), step)
		b = append(b, make([]byte, m)...)
		if _, err := io.ReadFull(f.r, b[len(b)-m:]); err != nil {
			return nil, truncated(err)
		}
	}
	f.h.Write(b)
	return b, nil
}

// header reads and checks the magic and version.
func (f *frameReader) header(magic string, version uint64) error {
	m, err := f.full(len(magic))
	if err != nil {
		return err
	}
	if string(m) != magic {
		return fmt.Errorf("%w: not a %s stream", ErrCorrupt, magic)
	}
	v, err := f.uvarint()
	if err != nil {
		return err
	}
	if v != version {
		return fmt.Errorf("%w: %s version %d, want %d", ErrCorrupt, magic, v, version)
	}
	return nil
}

// end reads the count after an end tag and the checksum, and checks both.
func (f *frameReader) end(count uint64, what string) error {
	n, err := f.uvarint()
	if err != nil {
		return err
	}
	if n != count {
		return fmt.Errorf("%w: %s says %d, holds %d", ErrCorrupt, what, n, count)
	}
	want := f.h.Sum(nil)
	var got [sha256.Size]byte
	if _, err := io.ReadFull(f.r, got[:]); err != nil {
		return truncated(err)
	}
	if !bytes.Equal(got[:], want) {
		return fmt.Errorf("%w: %s checksum mismatch", ErrCorrupt, what)
	}
	return nil
}

// eof checks that nothing follows the stream.
func eof(r *bufio.Reader) error {
	if _, err := r.ReadByte(); err == nil {
		return fmt.Errorf("%w: bytes after the end of the stream", ErrCorrupt)
	} else if !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// writeCatalog writes the snapshot stream of the catalog as txn sees it.
func writeCatalog(txn *badger.Txn, w *bufio.Writer) (records int, n int64, err error) {
	f := newFrameWriter(w)
	f.write([]byte(snapMagic))
	f.uvarint(snapVersion)
	rec := func(k, v []byte) error {
		f.byte(tagRecord)
		f.uvarint(uint64(len(k)))
		f.write(k)
		f.uvarint(uint64(len(v)))
		f.write(v)
		records++
		return f.err
	}
	// Key order: c/ < m/applied < r/.
	if err := scanPrefix(txn, prefixCatalog, rec); err != nil {
		return records, f.n, err
	}
	if err := scanPrefix(txn, keyApplied, func(k, v []byte) error {
		if !bytes.Equal(k, keyApplied) {
			return nil
		}
		return rec(k, v)
	}); err != nil {
		return records, f.n, err
	}
	if err := scanPrefix(txn, prefixRef, rec); err != nil {
		return records, f.n, err
	}
	f.end(uint64(records))
	return records, f.n, f.err
}

// CatalogSnapshot is the catalog as of one moment: a Badger read
// transaction, which is all Snapshot takes, so it is cheap to call on the
// Raft FSM goroutine while writes go on. Write it with WriteTo, then
// Release it; Store.Close waits for unreleased snapshots.
type CatalogSnapshot struct {
	s     *Store
	index uint64

	mu  sync.Mutex // WriteTo and Release
	txn *badger.Txn
}

// Snapshot takes a snapshot of the replicated catalog: vPLMs, their index,
// tenants, usage, API keys, nodes, reference counts, and the applied Raft
// position (not blobs, not the Raft log, not node-local records).
func (c *Catalog) Snapshot() (*CatalogSnapshot, error) {
	c.s.mu.RLock()
	defer c.s.mu.RUnlock()
	if c.s.closed {
		return nil, ErrClosed
	}
	c.s.swapMu.RLock()
	txn := c.s.db.NewTransaction(false)
	c.s.swapMu.RUnlock()
	pos, err := getApplied(txn)
	if err != nil {
		txn.Discard()
		return nil, fmt.Errorf("storage: snapshot: %w", err)
	}
	c.s.snaps.Add(1)
	return &CatalogSnapshot{s: c.s, txn: txn, index: pos.index}, nil
}

// Index is the applied Raft position the snapshot holds (0 if none).
func (sn *CatalogSnapshot) Index() uint64 { return sn.index }

// WriteTo writes the snapshot stream (see the format above) to w, in
// constant memory. It may be called more than once, not concurrently.
func (sn *CatalogSnapshot) WriteTo(w io.Writer) (int64, error) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.txn == nil {
		return 0, fmt.Errorf("storage: snapshot: released: %w", ErrClosed)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	_, n, err := writeCatalog(sn.txn, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return n, fmt.Errorf("storage: snapshot: %w", err)
	}
	return n, nil
}

// Release ends the snapshot's read transaction. It is safe to call twice.
func (sn *CatalogSnapshot) Release() {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.txn != nil {
		sn.txn.Discard()
		sn.txn = nil
		sn.s.snaps.Done()
	}
}

// Restore replaces the replicated catalog (and the applied position) with
// the snapshot stream r holds. It is crash-safe by stage-then-swap:
//
//  1. every record is written under z/<key> (staging) and the stream's
//     count and checksum are checked; on any error the staging is dropped,
//     nothing else has changed, and a malformed stream fails with
//     ErrCorrupt;
//  2. a marker m/restore is written (synced): from here the new catalog
//     wins;
//  3. the old catalog keys are deleted and the marker moves to its second
//     phase; then each staged record is moved into place (set and unstage
//     in one transaction); then the marker is deleted.
//
// Open finishes steps 3 when it finds the marker (a crash after step 2),
// and drops a leftover staging without it (a crash in step 1), so a crash
// leaves the old catalog or the new one, never a mix. Catalog readers
// never see the swap half done; writes wait for the whole restore.
// Blobs are left alone: those the new catalog references but this node
// lacks are listed by MissingBlobs, and those it no longer references are
// swept by GC.
func (c *Catalog) Restore(r io.Reader) error {
	c.s.mu.RLock()
	defer c.s.mu.RUnlock()
	if c.s.closed {
		return ErrClosed
	}
	c.s.applyMu.Lock()
	defer c.s.applyMu.Unlock()
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 256<<10)
	}
	if _, err := c.s.restoreCatalog(br, false); err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	return nil
}

type stageStats struct{ records, vplms int }

// restoreCatalog stages, checks and swaps in the snapshot stream br holds
// (see Restore); the caller holds Store.mu (shared) and applyMu. For a
// backup (backup true) the applied position is dropped, because the
// restored catalog starts a new Raft log, and every referenced blob must
// be stored.
func (s *Store) restoreCatalog(br *bufio.Reader, backup bool) (stageStats, error) {
	if err := deletePrefix(s.db, prefixStage); err != nil {
		return stageStats{}, err
	}
	st, err := s.stage(br, backup)
	if err == nil && backup {
		err = s.checkStagedBlobs()
	}
	if err != nil {
		if derr := deletePrefix(s.db, prefixStage); derr != nil {
			err = errors.Join(err, derr)
		}
		return st, err
	}
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keyRestore, []byte{restoreClear}) }); err != nil {
		return st, err
	}
	return st, s.finishSwap(restoreClear)
}

// The phases of a swap, the value of keyRestore.
const (
	restoreClear byte = 1 // old catalog keys may remain: delete them, then move
	restoreMove  byte = 2 // only staged records remain to move
)

func (s *Store) stage(br *bufio.Reader, backup bool) (stageStats, error) {
	var st stageStats
	f := newFrameReader(br)
	if err := f.header(snapMagic, snapVersion); err != nil {
		return st, err
	}
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	set := func(k, v []byte) error {
		err := txn.Set(k, v)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err = txn.Commit(); err != nil {
				return err
			}
			txn = s.db.NewTransaction(true)
			err = txn.Set(k, v)
		}
		return err
	}
	var prev []byte
	for {
		tag, err := f.ReadByte()
		if err != nil {
			return st, err
		}
		if tag == tagEnd {
			break
		}
		if tag != tagRecord {
			return st, fmt.Errorf("%w: record tag %d", ErrCorrupt, tag)
		}
		k, err := f.bytes(maxKeyLen, "key")
		if err != nil {
			return st, err
		}
		if !inCatalog(k) || bytes.Compare(k, prev) <= 0 {
			return st, fmt.Errorf("%w: key %q out of place (after %q)", ErrCorrupt, k, prev)
		}
		v, err := f.bytes(maxRecordLen, "record")
		if err != nil {
			return st, err
		}
		if err := checkRecord(k, v); err != nil {
			return st, err
		}
		prev = k
		st.records++
		if bytes.HasPrefix(k, prefixVPLM) {
			st.vplms++
		}
		// A restored store starts a new Raft log and a new membership: the
		// source's applied position and node addresses would mislead it.
		if backup && (bytes.Equal(k, keyApplied) || bytes.HasPrefix(k, prefixNode)) {
			continue
		}
		if err := set(append(bytes.Clone(prefixStage), k...), v); err != nil {
			return st, err
		}
	}
	if err := f.end(uint64(st.records), "catalog snapshot"); err != nil {
		return st, err
	}
	if err := eof(br); err != nil {
		return st, err
	}
	return st, txn.Commit()
}

// checkRecord checks the fixed-size records; the rest are protobufs,
// covered by the checksum.
func checkRecord(k, v []byte) error {
	switch {
	case bytes.Equal(k, keyApplied):
		_, err := decodeApplied(v)
		return err
	case bytes.HasPrefix(k, prefixRef):
		if _, err := ParseDigest("sha256:" + string(k[len(prefixRef):])); err != nil || len(v) != 8 {
			return fmt.Errorf("%w: reference count %q", ErrCorrupt, k)
		}
	}
	return nil
}

// checkStagedBlobs checks that every staged reference count's blob is
// stored (ErrCorrupt otherwise: the backup left a blob out).
func (s *Store) checkStagedBlobs() error {
	p := append(bytes.Clone(prefixStage), prefixRef...)
	return s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix, opts.PrefetchValues = p, false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			d := Digest("sha256:" + string(it.Item().Key()[len(p):]))
			ok, err := has(txn, blobKey(d))
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%w: referenced blob %s is not in the backup", ErrCorrupt, d)
			}
		}
		return nil
	})
}

// finishSwap does step 3 of Restore from the given phase. The caller holds
// swapMu, or is Open.
func (s *Store) finishSwap(phase byte) error {
	if phase == restoreClear {
		for _, p := range [][]byte{prefixCatalog, prefixRef, keyApplied} {
			if err := deletePrefix(s.db, p); err != nil {
				return err
			}
		}
		if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keyRestore, []byte{restoreMove}) }); err != nil {
			return err
		}
	}
	for {
		var recs []kv
		err := s.db.View(func(txn *badger.Txn) error {
			return scanPrefix(txn, prefixStage, func(k, v []byte) error {
				if len(recs) == 5000 {
					return errStop
				}
				recs = append(recs, kv{bytes.Clone(k), bytes.Clone(v)})
				return nil
			})
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
		if len(recs) == 0 {
			break
		}
		if err := updateChunked(s.db, len(recs), func(txn *badger.Txn, i int) error {
			if err := txn.Set(recs[i].k[len(prefixStage):], recs[i].v); err != nil {
				return err
			}
			return txn.Delete(recs[i].k)
		}); err != nil {
			return err
		}
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(keyRestore) })
}

var errStop = errors.New("stop")

// recoverRestore runs at Open: it finishes a swap a crash interrupted, or
// drops the staging of a restore that never reached its swap.
func (s *Store) recoverRestore() error {
	var phase byte
	var staged bool
	err := s.db.View(func(txn *badger.Txn) error {
		staged = hasPrefix(txn, prefixStage)
		item, err := txn.Get(keyRestore)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 1 || (v[0] != restoreClear && v[0] != restoreMove) {
				return fmt.Errorf("%w: restore marker %x", ErrCorrupt, v)
			}
			phase = v[0]
			return nil
		})
	})
	switch {
	case err != nil:
		return err
	case phase != 0:
		return s.finishSwap(phase)
	case staged:
		return deletePrefix(s.db, prefixStage)
	}
	return nil
}

// Hash is the sha256 (hex) of the replicated catalog: every c/ and r/
// record in key order, each as uvarint len(key), key, uvarint len(value),
// value, but the cluster's node addresses (c/n/). Two nodes with the same
// catalog have the same hash whatever they have applied, because the
// applied position (node-local) is left out; and a backup restored into a
// new cluster (which drops the old members) hashes the same as its source.
func (c *Catalog) Hash() (string, error) {
	h := sha256.New()
	var buf []byte
	err := c.s.catView(func(txn *badger.Txn) error {
		for _, p := range [][]byte{prefixCatalog, prefixRef} {
			if err := scanPrefix(txn, p, func(k, v []byte) error {
				if bytes.HasPrefix(k, prefixNode) {
					return nil
				}
				buf = binary.AppendUvarint(buf[:0], uint64(len(k)))
				buf = append(buf, k...)
				buf = binary.AppendUvarint(buf, uint64(len(v)))
				h.Write(buf)
				h.Write(v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
