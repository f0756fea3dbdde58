package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/storage"
)

func newBackupCmd() *cobra.Command {
	var sf serverFlags
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent snapshot of the server's catalog and params blobs to FILE",
		Long: `Backup asks a running server for a snapshot of the whole catalog (vPLMs,
tenants, quotas and usage, API-key hashes, nodes) and every params blob it
references, taken in one read transaction after every write committed so far,
and writes it to FILE (through a temporary file, synced, then renamed: FILE
is never half written). PLOT tables, training caches and jobs are not in it:
they are rebuilt. Restore it with ` + "`smile restore FILE`" + `.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			ctx := cmd.Context()
			// A backup is one long read from one node: the first of a list.
			server, _, _ := strings.Cut(sf.server, ",")
			sf.server = strings.TrimSpace(server)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+sf.server+"/v1/admin/backup", nil)
			if err != nil {
				return usagef("--server %q: %v", sf.server, err)
			}
			if k := os.Getenv("SMILE_CLUSTER_KEY"); k != "" {
				req.Header.Set(cluster.SecretHeader, k)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("%w at %s (%v): start one with `smile serve`, or point --server (or SMILE_SERVER) at one", errNoServer, sf.server, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				return fmt.Errorf("backup: server %s: %s: %s", sf.server, resp.Status, b)
			}
			tmp, err := os.CreateTemp(filepath.Dir(path), ".smile-backup-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			n, err := io.Copy(tmp, resp.Body)
			if err == nil {
				err = tmp.Sync()
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			// Check the whole file before calling it a backup: a stream cut
			// short by a server failure fails here.
			st, err := verifyBackup(tmp.Name())
			if err != nil {
				return fmt.Errorf("backup: the server's stream is not a whole backup: %w", err)
			}
			if err := os.Rename(tmp.Name(), path); err != nil {
				return err
			}
			return printBackup(cmd, sf.asJSON, path, n, st)
		},
	}
	addServerFlags(cmd, &sf, "print the backup's summary as JSON")
	return cmd
}

// verifyBackup checks a backup file whole (storage.VerifyBackup).
func verifyBackup(path string) (storage.BackupStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return storage.BackupStats{}, err
	}
	defer f.Close()
	return storage.VerifyBackup(f)
}

type backupSummary struct {
	File        string              `json:"file"`
	Bytes       int64               `json:"bytes"`
	Stats       storage.BackupStats `json:"stats"`
	CatalogHash string              `json:"catalog_hash,omitempty"`
}

func printBackup(cmd *cobra.Command, asJSON bool, path string, n int64, st storage.BackupStats) error {
	s := backupSummary{File: path, Bytes: n, Stats: st}
	if asJSON {
		return json.NewEncoder(cmd.OutOrStdout()).Encode(s)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: %s: %s\n", path, byteSize(uint64(n)), backupText(st))
	return nil
}

// backupText is a backup's content for people.
func backupText(st storage.BackupStats) string {
	return fmt.Sprintf("%d vPLMs, %d params blobs (%s), %d catalog records", st.VPLMs, st.Blobs, byteSize(uint64(st.BlobBytes)), st.Records)
}

func newRestoreCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Rebuild a node's catalog and params blobs from a backup (into a data directory with an empty catalog)",
		Long: `Restore loads a backup written by ` + "`smile backup`" + ` into the data directory
(--data-dir), which must not be in use and must hold no catalog or Raft state
yet. Every blob is checked against its sha256 and the file's framing and
checksums are verified; a corrupt or truncated file is rejected before the
catalog is written. The next ` + "`smile serve`" + ` on that directory starts a new
one-voter cluster with the restored catalog; other nodes join it with
--join to rebuild a cluster.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := os.Stat(filepath.Join(g.dataDir, "raft")); err == nil {
				return fmt.Errorf("restore: %s already holds a node's Raft state: restore into a fresh data directory", g.dataDir)
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			store, err := storage.Open(storage.DefaultOptions(filepath.Join(g.dataDir, "db")))
			if err != nil {
				return err
			}
			defer store.Close()
			start := time.Now()
			st, err := store.RestoreBackup(f)
			if err != nil {
				return fmt.Errorf("restore %s: %w", args[0], err)
			}
			h, err := storage.NewCatalog(store).Hash()
			if err != nil {
				return err
			}
			fi, _ := f.Stat()
			s := backupSummary{File: args[0], Stats: st, CatalogHash: h}
			if fi != nil {
				s.Bytes = fi.Size()
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s in %v: %s; catalog hash %s\n", args[0], g.dataDir,
				time.Since(start).Round(time.Millisecond), backupText(st), h)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}
