package storage

import (
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// BenchmarkBlobWrites measures synced writes of params-sized blobs (134,326
// bytes, a use-lite rank-64 adapter in fp16) in batches of 128, side by
// side: Badger with this store's options and value-log files of 256 MiB
// and of 1 GiB (the setting), and plain appends to one file with one
// fsync per batch (what a dedicated blob log would do). The figures
// behind valueLogFileSize and docs/BENCHMARKS.md:
//
//	go test -run '^$' -bench BlobWrites -benchtime 40x ./storage/
func BenchmarkBlobWrites(b *testing.B) {
	const size, batch = 134_326, 128
	blob := make([]byte, size)
	rand.Read(blob)
	for _, vlog := range []struct {
		name string
		size int64
	}{{"badger-vlog-256MiB", 256 << 20}, {"badger-vlog-1GiB", valueLogFileSize}} {
		b.Run(vlog.name, func(b *testing.B) {
			db, err := badger.Open(DefaultOptions(b.TempDir()).badger().WithValueLogFileSize(vlog.size))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			n := uint64(0)
			for b.Loop() {
				txn := db.NewTransaction(true)
				for range batch {
					n++
					if err := txn.Set(binary.BigEndian.AppendUint64([]byte("b/"), n), blob); err != nil {
						b.Fatal(err)
					}
				}
				if err := txn.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "blobs/s")
		})
	}
	b.Run("file-append-fsync", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "blobs.log"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 0, batch*size)
		for b.Loop() {
			buf = buf[:0]
			for range batch {
				buf = append(buf, blob...)
			}
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "blobs/s")
	})
}
