package storage

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// openTest opens a durable store in a fresh directory, closed at cleanup.
func openTest(t testing.TB) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Error(err)
		}
	})
	return s, dir
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		ok   bool
	}{
		{"default", DefaultOptions("/tmp/x"), true},
		{"in memory", InMemoryOptions(), true},
		{"no dir", Options{}, false},
		{"both", Options{Dir: "/tmp/x", InMemory: true}, false},
	} {
		if err := tc.o.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
	}
	if !DefaultOptions("d").SyncWrites {
		t.Error("DefaultOptions must sync writes")
	}
	if _, err := Open(Options{}); err == nil {
		t.Error("Open with invalid options succeeded")
	}
}

func TestBlobRoundTrip(t *testing.T) {
	s, _ := openTest(t)
	// One small blob (kept in the LSM tree) and one params-sized blob (value log).
	for _, data := range [][]byte{[]byte("hello"), bytes.Repeat([]byte{1, 2, 3, 4}, 130_000/4)} {
		d, err := s.PutBlob(data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseDigest(d); err != nil {
			t.Fatal(err)
		}
		if d2, err := s.PutBlob(data); err != nil || d2 != d {
			t.Fatalf("second put: %s %v", d2, err)
		}
		if ok, err := s.HasBlob(d); err != nil || !ok {
			t.Fatalf("HasBlob: %v %v", ok, err)
		}
		got, err := s.GetBlob(d)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("GetBlob: %d bytes, %v", len(got), err)
		}
		if err := s.DeleteBlob(d); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.HasBlob(d); ok {
			t.Fatal("blob still there after DeleteBlob")
		}
		if _, err := s.GetBlob(d); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetBlob after delete: %v", err)
		}
		if err := s.DeleteBlob(d); err != nil {
			t.Fatalf("deleting a missing blob: %v", err)
		}
	}
	const hello = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	if d, _ := s.PutBlob([]byte("hello")); d != hello {
		t.Fatalf("digest %s, want %s", d, hello)
	}
	for _, bad := range []string{"", "sha256:xyz", "md5:" + strings.Repeat("a", 64)} {
		if _, err := s.GetBlob(bad); !errors.Is(err, ErrBadDigest) {
			t.Errorf("GetBlob(%q) = %v", bad, err)
		}
		if _, err := s.HasBlob(bad); !errors.Is(err, ErrBadDigest) {
			t.Errorf("HasBlob(%q) = %v", bad, err)
		}
		if err := s.DeleteBlob(bad); !errors.Is(err, ErrBadDigest) {
			t.Errorf("DeleteBlob(%q) = %v", bad, err)
		}
	}
}

func TestBlobCorrupt(t *testing.T) {
	s, _ := openTest(t)
	for _, size := range []int{5, 130_000} {
		data := bytes.Repeat([]byte("x"), size)
		d, err := s.PutBlob(data)
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(data)
		bad[size/2] ^= 1
		rawSet(t, s, blobKey(Digest(d)), bad)
		if _, err := s.GetBlob(d); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%d bytes: GetBlob of corrupt blob: %v", size, err)
		}
	}
}

// rawSet writes under a key behind the Store's back, as a disk fault would.
func rawSet(t testing.TB, s *Store, k, v []byte) {
	t.Helper()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(k, v) }); err != nil {
		t.Fatal(err)
	}
}

func TestClosed(t *testing.T) {
	s, _ := openTest(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.PutBlob([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("PutBlob: %v", err)
	}
	d := "sha256:" + strings.Repeat("0", 64)
	if _, err := s.GetBlob(d); !errors.Is(err, ErrClosed) {
		t.Errorf("GetBlob: %v", err)
	}
	c := NewCatalog(s)
	if _, err := c.Get("m"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get: %v", err)
	}
	if _, err := c.Apply(deleteCmd("m")); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply: %v", err)
	}
}

func TestInMemory(t *testing.T) {
	s, err := Open(InMemoryOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.PutBlob([]byte("params"))
	if err != nil {
		t.Fatal(err)
	}
	c := NewCatalog(s)
	if _, err := c.Apply(createCmd("m1", "t1", d)); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Count(); err != nil || n != 1 {
		t.Fatalf("Count = %d, %v", n, err)
	}
}
