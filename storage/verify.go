package storage

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
)

// VerifyBackup reads a whole backup stream and checks it as RestoreBackup
// would (framing, checksums, every blob against its digest, the catalog
// snapshot, nothing trailing), storing nothing but the catalog records in
// a throwaway in-memory store: what `smile backup` runs on the file it
// wrote before calling it a backup.
func VerifyBackup(r io.Reader) (BackupStats, error) {
	var st BackupStats
	br := bufio.NewReaderSize(r, 1<<20)
	f := newFrameReader(br)
	if err := f.header(backupMagic, backupVersion); err != nil {
		return st, fmt.Errorf("storage: verify backup: %w", err)
	}
	for {
		tag, err := f.ReadByte()
		if err != nil {
			return st, fmt.Errorf("storage: verify backup: %w", err)
		}
		if tag == tagEnd {
			break
		}
		if tag != tagBlob {
			return st, fmt.Errorf("storage: verify backup: %w: blob tag %d", ErrCorrupt, tag)
		}
		sum, err := f.full(sha256.Size)
		if err != nil {
			return st, fmt.Errorf("storage: verify backup: %w", err)
		}
		data, err := f.bytes(maxBlobLen, "blob")
		if err != nil {
			return st, fmt.Errorf("storage: verify backup: %w", err)
		}
		if got := sha256.Sum256(data); !bytes.Equal(got[:], sum) {
			return st, fmt.Errorf("storage: verify backup: %w: blob sha256:%x holds data that hashes to sha256:%x", ErrCorrupt, sum, got)
		}
		st.Blobs++
		st.BlobBytes += int64(len(data))
	}
	if err := f.end(uint64(st.Blobs), "backup blob section"); err != nil {
		return st, fmt.Errorf("storage: verify backup: %w", err)
	}
	mem, err := Open(InMemoryOptions())
	if err != nil {
		return st, err
	}
	defer mem.Close()
	cs, err := mem.restoreCatalog(br, false)
	st.Records, st.VPLMs = cs.records, cs.vplms
	if err != nil {
		return st, fmt.Errorf("storage: verify backup: %w", err)
	}
	return st, nil
}
