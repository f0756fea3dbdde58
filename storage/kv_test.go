package storage

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestRecords(t *testing.T) {
	s, dir := openTest(t)
	if _, err := s.GetRecord(NSJob, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing record: %v", err)
	}
	// A record and its checkpoint replace the previous pair together.
	if err := s.PutRecords(Record{NS: NSJob, Key: "a", Value: []byte("rec1")}, Record{NS: NSCheckpoint, Key: "a", Value: []byte("ck1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRecords(Record{NS: NSJob, Key: "a", Value: []byte("rec2")}, Record{NS: NSCheckpoint, Key: "a", Delete: true}); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetRecord(NSJob, "a"); err != nil || string(v) != "rec2" {
		t.Fatalf("job a = %q, %v", v, err)
	}
	if _, err := s.GetRecord(NSCheckpoint, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted checkpoint: %v", err)
	}
	// Namespaces are disjoint from each other and from the catalog.
	for i := range 5 {
		if err := s.PutRecords(Record{NS: NSRepCache, Key: fmt.Sprintf("k1/c/%08d", i), Value: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutRecords(Record{NS: NSRepCache, Key: "k2/h", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := s.ScanRecords(NSRepCache, "k1/", func(k string, v []byte) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"k1/c/00000000", "k1/c/00000001", "k1/c/00000002", "k1/c/00000003", "k1/c/00000004"}; !slices.Equal(keys, want) {
		t.Fatalf("scan = %v, want %v", keys, want)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.ScanRecords(NSRepCache, "", func(string, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("scan stopped: %v after %d", err, n)
	}
	if err := s.DeleteRecords(NSRepCache, "k1/"); err != nil {
		t.Fatal(err)
	}
	keys = keys[:0]
	if err := s.ScanRecords(NSRepCache, "", func(k string, v []byte) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"k2/h"}) {
		t.Fatalf("after delete: %v", keys)
	}
	for _, bad := range []Record{{NS: "c/v/", Key: "x"}, {NS: NSJob, Key: ""}, {NS: NSJob, Key: "a\x00b"}} {
		if err := s.PutRecords(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutRecords(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	// Durable across a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if v, err := s2.GetRecord(NSJob, "a"); err != nil || string(v) != "rec2" {
		t.Fatalf("after reopen: %q, %v", v, err)
	}
	if _, err := s.GetRecord(NSJob, "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed store: %v", err)
	}
}
