package storage

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/dgraph-io/badger/v4"
)

// The backup stream (version 1):
//
//	"SMILEBAK"   8 bytes, magic
//	uvarint      version (1)
//	blobs        in digest order, each:
//	               byte 2, [32]byte sha256 of the data, uvarint len(data), data
//	byte 0       end of blobs
//	uvarint      number of blobs
//	[32]byte     sha256 of every byte above, from the magic on
//	catalog      a catalog snapshot stream (see snapshot.go), self-checksummed
//
// and nothing after it. The blobs are exactly those with a reference count
// when the backup was taken; blobs come first so that a restore writes
// them before the catalog that names them.
const (
	backupMagic   = "SMILEBAK"
	backupVersion = 1
	// restoreGroup bounds the blob bytes RestoreBackup buffers per write.
	restoreGroup = 32 << 20
)

// BackupStats describes a backup written or restored.
type BackupStats struct {
	Blobs     int   `json:"blobs"`      // params blobs
	BlobBytes int64 `json:"blob_bytes"` // their bytes
	Records   int   `json:"records"`    // catalog records (every replicated key)
	VPLMs     int   `json:"vplms"`      // vPLMs among them
	Bytes     int64 `json:"bytes"`      // the stream's length (Backup only)
}

// Backup writes the whole store's replicated state to w from one
// consistent read transaction: every blob a reference count names (each
// checked against its digest) and the catalog snapshot. It fails with
// ErrMissingBlob (fetch it from a peer first: MissingBlobs) or ErrCorrupt
// when a referenced blob is absent or damaged here; w then holds a
// truncated stream that RestoreBackup rejects.
func (s *Store) Backup(w io.Writer) (BackupStats, error) {
	var st BackupStats
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return st, ErrClosed
	}
	s.swapMu.RLock()
	txn := s.db.NewTransaction(false)
	s.swapMu.RUnlock()
	defer txn.Discard()

	bw := bufio.NewWriterSize(w, 1<<20)
	f := newFrameWriter(bw)
	f.write([]byte(backupMagic))
	f.uvarint(backupVersion)
	err := scanKeys(txn, prefixRef, func(k []byte) error {
		d, err := ParseDigest("sha256:" + string(k[len(prefixRef):]))
		if err != nil {
			return fmt.Errorf("%w: reference count %q", ErrCorrupt, k)
		}
		item, err := txn.Get(blobKey(d))
		if err == badger.ErrKeyNotFound {
			return fmt.Errorf("%w: referenced blob %s is not stored here", ErrMissingBlob, d)
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			sum := sha256.Sum256(v)
			if hex.EncodeToString(sum[:]) != d.Hex() {
				return fmt.Errorf("%w: blob %s hashes to sha256:%x", ErrCorrupt, d, sum)
			}
			f.byte(tagBlob)
			f.write(sum[:])
			f.uvarint(uint64(len(v)))
			f.write(v)
			st.Blobs++
			st.BlobBytes += int64(len(v))
			return f.err
		})
	})
	if err != nil {
		return st, fmt.Errorf("storage: backup: %w", err)
	}
	f.end(uint64(st.Blobs))
	if f.err != nil {
		return st, fmt.Errorf("storage: backup: %w", f.err)
	}
	st.Bytes = f.n
	err = scanKeys(txn, prefixVPLM, func([]byte) error { st.VPLMs++; return nil })
	if err != nil {
		return st, fmt.Errorf("storage: backup: %w", err)
	}
	records, n, err := writeCatalog(txn, bw)
	st.Records, st.Bytes = records, st.Bytes+n
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return st, fmt.Errorf("storage: backup: %w", err)
	}
	return st, nil
}

// RestoreBackup loads a backup stream into this store, whose catalog must
// be empty (ErrNotEmpty otherwise). Blobs are checked against their
// digests and written first (with pending markers, so that GC sweeps them
// should the restore fail); the catalog is then restored as Restore does
// (staged, checked, swapped in), after checking that every blob it
// references is stored. Any damage to the stream (framing, checksums, a
// blob's hash, truncation, trailing bytes) fails with ErrCorrupt before
// any catalog record is visible. The backup's applied Raft position is
// dropped: a restored store starts a new Raft log.
func (s *Store) RestoreBackup(r io.Reader) (BackupStats, error) {
	var st BackupStats
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return st, ErrClosed
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	var empty bool
	if err := s.db.View(func(txn *badger.Txn) error {
		empty = !hasPrefix(txn, prefixCatalog) && !hasPrefix(txn, prefixRef)
		return nil
	}); err != nil {
		return st, fmt.Errorf("storage: restore backup: %w", err)
	}
	if !empty {
		return st, fmt.Errorf("storage: restore backup: %w", ErrNotEmpty)
	}
	br := bufio.NewReaderSize(r, 1<<20)
	if err := s.restoreBlobs(br, &st); err != nil {
		return st, fmt.Errorf("storage: restore backup: %w", err)
	}
	cs, err := s.restoreCatalog(br, true)
	st.Records, st.VPLMs = cs.records, cs.vplms
	if err != nil {
		return st, fmt.Errorf("storage: restore backup: %w", err)
	}
	return st, nil
}

func (s *Store) restoreBlobs(br *bufio.Reader, st *BackupStats) error {
	var group [][]byte
	var size int
	flush := func() error {
		err := updateChunked(s.db, len(group), func(txn *badger.Txn, i int) error {
			return s.putBlobTxn(txn, digestOf(group[i]), group[i], true)
		})
		group, size = group[:0], 0
		return err
	}
	err := readBlobSection(br, st, func(data []byte) error {
		group = append(group, data)
		size += len(data)
		if size >= restoreGroup {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// readBlobSection reads a backup's header and blob section, checking the
// framing, each blob against its digest and the section's count and
// checksum, and hands each blob to each (RestoreBackup stores them,
// VerifyBackup does not).
func readBlobSection(br *bufio.Reader, st *BackupStats, each func([]byte) error) error {
	f := newFrameReader(br)
	if err := f.header(backupMagic, backupVersion); err != nil {
		return err
	}
	for {
		tag, err := f.ReadByte()
		if err != nil {
			return err
		}
		if tag == tagEnd {
			break
		}
		if tag != tagBlob {
			return fmt.Errorf("%w: blob tag %d", ErrCorrupt, tag)
		}
		sum, err := f.full(sha256.Size)
		if err != nil {
			return err
		}
		data, err := f.bytes(maxBlobLen, "blob")
		if err != nil {
			return err
		}
		if got := sha256.Sum256(data); !bytes.Equal(got[:], sum) {
			return fmt.Errorf("%w: blob sha256:%x holds data that hashes to sha256:%x", ErrCorrupt, sum, got)
		}
		st.Blobs++
		st.BlobBytes += int64(len(data))
		if err := each(data); err != nil {
			return err
		}
	}
	return f.end(uint64(st.Blobs), "backup blob section")
}

// scanKeys calls fn for every key with prefix, in key order, without
// reading values; the key is only valid during the call.
func scanKeys(txn *badger.Txn, prefix []byte, fn func(k []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix, opts.PrefetchValues = prefix, false
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := fn(it.Item().Key()); err != nil {
			return err
		}
	}
	return nil
}
