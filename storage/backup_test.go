package storage

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/smile-vplm/smile/api/smilepb"
)

func backupBytes(t testing.TB, s *Store) ([]byte, BackupStats) {
	t.Helper()
	var buf bytes.Buffer
	st, err := s.Backup(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != int64(buf.Len()) {
		t.Fatalf("stats say %d bytes, wrote %d", st.Bytes, buf.Len())
	}
	return buf.Bytes(), st
}

func TestBackupRestore(t *testing.T) {
	src, _ := openTest(t)
	fillCatalog(t, src, 1, 100)
	mustPut(t, src, "unreferenced: not in the backup")
	big := bytes.Repeat([]byte{7}, 130_000)
	d := mustPut(t, src, string(big))
	c := NewCatalog(src)
	mustApply(t, c, createCmd("big", "acme", d))
	want := mustHash(t, c)
	b, st := backupBytes(t, src)
	if st.Blobs != 101 || st.VPLMs != 101 || st.BlobBytes < 130_000 || st.Records == 0 {
		t.Fatalf("backup stats %+v", st)
	}

	dst, _ := openTest(t)
	got, err := dst.RestoreBackup(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.Blobs != st.Blobs || got.BlobBytes != st.BlobBytes || got.VPLMs != st.VPLMs || got.Records != st.Records {
		t.Fatalf("restore stats %+v, backup %+v", got, st)
	}
	dc := NewCatalog(dst)
	if h := mustHash(t, dc); h != want {
		t.Fatalf("hash %s, want %s", h, want)
	}
	if idx, _ := dc.Applied(); idx != 0 {
		t.Fatalf("a restored backup starts a new log: applied %d", idx)
	}
	if data, err := dst.GetBlob(d); err != nil || !bytes.Equal(data, big) {
		t.Fatalf("GetBlob after restore: %v", err)
	}
	if m, _ := dst.MissingBlobs(0); len(m) != 0 {
		t.Fatalf("missing after restore: %v", m)
	}
	// The restored store works as any other.
	mustApply(t, dc, deleteCmd("big"))
	if _, err := dst.GC(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if ok, _ := dst.HasBlob(d); ok {
		t.Fatal("blob survived its last vPLM and a GC")
	}
	if _, err := dst.RestoreBackup(bytes.NewReader(b)); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("restore into a non-empty store: %v", err)
	}
}

func TestBackupRestoreCorrupt(t *testing.T) {
	src, _ := openTest(t)
	fillCatalog(t, src, 1, 10)
	good, _ := backupBytes(t, src)
	blobEnd := bytes.Index(good, []byte(snapMagic))
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"magic", append([]byte("SMILEBAD"), good[8:]...)},
		{"blob byte flipped", flip(good, 30)},
		{"blob section checksum", flip(good, blobEnd-1)},
		{"catalog byte flipped", flip(good, blobEnd+20)},
		{"last byte", flip(good, len(good)-1)},
		{"truncated in blobs", good[:blobEnd/2]},
		{"truncated at the catalog", good[:blobEnd]},
		{"truncated in the catalog", good[:len(good)-10]},
		{"trailing bytes", append(bytes.Clone(good), 1, 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst, _ := openTest(t)
			if _, err := dst.RestoreBackup(bytes.NewReader(tc.b)); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("RestoreBackup = %v, want ErrCorrupt", err)
			}
			if n := countPrefix(t, dst, prefixCatalog) + countPrefix(t, dst, prefixRef) + countPrefix(t, dst, prefixStage); n != 0 {
				t.Fatalf("%d catalog keys visible after a failed restore", n)
			}
			// What blobs it wrote are unreferenced and marked for GC.
			if b, p := countPrefix(t, dst, prefixBlob), countPrefix(t, dst, prefixPending); b != p {
				t.Fatalf("%d blobs, %d pending markers", b, p)
			}
			if _, err := dst.RestoreBackup(bytes.NewReader(good)); err != nil {
				t.Fatalf("a good backup after a bad one: %v", err)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x01
	return b
}

// A backup needs every referenced blob here, intact.
func TestBackupMissingOrCorruptBlob(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	mustEntries(t, c, Entry{Index: 1, Cmds: []*smilepb.CatalogCommand{createCmd("a", "t", fakeDigest(1))}})
	if _, err := s.Backup(&bytes.Buffer{}); !errors.Is(err, ErrMissingBlob) {
		t.Fatalf("Backup with a missing blob: %v", err)
	}
	rawSet(t, s, blobKey(Digest(fakeDigest(1))), []byte("not it"))
	if _, err := s.Backup(&bytes.Buffer{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Backup with a corrupt blob: %v", err)
	}
}

// FuzzRestoreBackup: whatever the stream, RestoreBackup either succeeds or
// fails with ErrCorrupt with no catalog record visible; it never panics.
func FuzzRestoreBackup(f *testing.F) {
	src, err := Open(InMemoryOptions())
	if err != nil {
		f.Fatal(err)
	}
	defer src.Close()
	fillCatalog(f, src, 1, 3)
	good, _ := backupBytes(f, src)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(backupMagic + "\x01\x00\x00"))
	s, err := Open(InMemoryOptions())
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := s.RestoreBackup(bytes.NewReader(b))
		if err == nil {
			for _, p := range [][]byte{prefixCatalog, prefixRef} {
				if err := deletePrefix(s.db, p); err != nil {
					t.Fatal(err)
				}
			}
			return
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("RestoreBackup = %v, want ErrCorrupt", err)
		}
		if n := countPrefix(t, s, prefixCatalog) + countPrefix(t, s, prefixRef); n != 0 {
			t.Fatalf("%d catalog keys after a failed restore", n)
		}
	})
}

// TestVerifyBackup: VerifyBackup accepts a whole backup with the stats
// RestoreBackup reports, and rejects every damaged or truncated copy with
// ErrCorrupt.
func TestVerifyBackup(t *testing.T) {
	src, err := Open(InMemoryOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fillCatalog(t, src, 2, 3)
	good, want := backupBytes(t, src)
	got, err := VerifyBackup(bytes.NewReader(good))
	if err != nil || got.Blobs != want.Blobs || got.VPLMs != want.VPLMs || got.BlobBytes != want.BlobBytes {
		t.Fatalf("VerifyBackup = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range [][]byte{good[:len(good)-1], good[:len(good)/2], append(bytes.Clone(good), 0)} {
		if _, err := VerifyBackup(bytes.NewReader(bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("VerifyBackup of %d of %d bytes = %v, want ErrCorrupt", len(bad), len(good), err)
		}
	}
	for i := 0; i < len(good); i += max(1, len(good)/97) {
		b := bytes.Clone(good)
		b[i] ^= 0x10
		if _, err := VerifyBackup(bytes.NewReader(b)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("byte %d flipped: VerifyBackup = %v, want ErrCorrupt", i, err)
		}
	}
}
