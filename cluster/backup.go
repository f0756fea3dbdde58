package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/smile-vplm/smile/storage"
)

// Backup writes a consistent snapshot of the catalog and of every params
// blob it references to w (storage.Store.Backup's format). It first waits
// for every write committed before the call (Sync) and fetches from peers
// the referenced blobs this node does not hold.
func (r *Replica) Backup(ctx context.Context, w io.Writer) (storage.BackupStats, error) {
	if err := r.Sync(ctx); err != nil {
		return storage.BackupStats{}, err
	}
	// Until none is missing: a create committed meanwhile may name a blob
	// this node does not hold. One committed between the last check and
	// the backup's read transaction fails the backup (ErrMissingBlob, a
	// truncated stream that restore refuses): run it again.
	for round := 0; ; round++ {
		missing, err := r.store.MissingBlobs(0)
		if err != nil {
			return storage.BackupStats{}, err
		}
		if len(missing) == 0 || round == 5 {
			break
		}
		for _, d := range missing {
			if _, err := r.GetBlob(d); err != nil {
				return storage.BackupStats{}, fmt.Errorf("backup: blob %s: %w", d, err)
			}
		}
	}
	return r.store.Backup(w)
}

func (r *Replica) serveBackup(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), time.Hour)
	defer cancel()
	if err := r.Sync(ctx); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	// Once the first byte is out the status is sent: a failure later
	// shows as a truncated stream, which restore rejects (framing and
	// checksums).
	st, err := r.Backup(ctx, w)
	if err != nil {
		r.log.Error("backup failed", "err", err)
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, herr := hj.Hijack(); herr == nil {
				c.Close()
			}
		}
		return
	}
	r.log.Info("backup written", "stats", fmt.Sprintf("%+v", st))
}
