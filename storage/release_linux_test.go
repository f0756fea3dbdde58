package storage

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
)

func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "RssFile:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestReleasePages: reading blobs maps Badger's value log into RSS;
// ReleasePages has those pages reclaimed and every blob still reads back
// intact, also after more writes.
func TestReleasePages(t *testing.T) {
	s, err := Open(DefaultOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var digests []string
	var blobs [][]byte
	for i := range 200 {
		b := bytes.Repeat([]byte{byte(i), byte(i >> 8), 7}, 40000) // 120 KB, like a params blob
		d, err := s.PutBlob(b)
		if err != nil {
			t.Fatal(err)
		}
		digests, blobs = append(digests, d), append(blobs, b)
	}
	for _, d := range digests {
		if _, err := s.GetBlob(d); err != nil {
			t.Fatal(err)
		}
	}
	before := rssFile(t)
	n, err := s.ReleasePages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	t.Logf("released %d bytes of mappings: RssFile %d -> %d", n, before, after)
	if n == 0 || after >= before {
		t.Fatalf("nothing released: advised %d bytes, RssFile %d -> %d", n, before, after)
	}
	for i, d := range digests {
		b, err := s.GetBlob(d)
		if err != nil || !bytes.Equal(b, blobs[i]) {
			t.Fatalf("blob %d after release: %v", i, err)
		}
	}
	// Writes after a release land too.
	d, err := s.PutBlob([]byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := s.GetBlob(d); err != nil || string(b) != "after" {
		t.Fatalf("write after release: %q %v", b, err)
	}
}
