package storage

import (
	"bufio"
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
	if err := readBlobSection(br, &st, func([]byte) error { return nil }); err != nil {
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
