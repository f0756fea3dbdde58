package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPutBlobConcurrent: many goroutines putting blobs at once (some the
// same bytes) each get their digest back, every blob reads back whole,
// and the grouped commits leave no committer behind (a later lone put
// commits at once).
func TestPutBlobConcurrent(t *testing.T) {
	s, err := Open(DefaultOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 300
	blob := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("blob %d;", i%250)), 2000) }
	digests := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := s.PutBlob(blob(i))
			if err != nil {
				t.Error(err)
			}
			digests[i] = d
		}()
	}
	wg.Wait()
	for i, d := range digests {
		if want := string(digestOf(blob(i))); d != want {
			t.Fatalf("put %d: digest %s, want %s", i, d, want)
		}
		got, err := s.GetBlob(d)
		if err != nil || !bytes.Equal(got, blob(i)) {
			t.Fatalf("blob %d: %d bytes, %v", i, len(got), err)
		}
	}
	// A committer answers its group before it looks for more work: give
	// it a moment to find none and leave.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.puts.mu.Lock()
		c, p := s.puts.committers, len(s.puts.pending)
		s.puts.mu.Unlock()
		if c == 0 && p == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the puts: %d committers, %d pending", c, p)
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := s.PutBlob([]byte("lone")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.PutBlob([]byte("closed")); err == nil {
		t.Fatal("PutBlob on a closed store succeeded")
	}
}

// TestPutBlobCommitterHandsOver: under steady load from many goroutines,
// no PutBlob call is held long committing other callers' groups: a
// committer hands its role over once its own put is done (before it did,
// the first committer stayed for as long as puts kept coming), and each
// waiting put is handed at most one role, so none is lost: the concurrent
// test above checks that the count of committers returns to zero.
func TestPutBlobCommitterHandsOver(t *testing.T) {
	s, _ := openTest(t)
	var (
		stop    atomic.Bool
		seq     atomic.Uint64
		slowest atomic.Int64
		wg      sync.WaitGroup
	)
	for range 64 {
		wg.Go(func() {
			buf := make([]byte, 8<<10)
			for !stop.Load() {
				binary.LittleEndian.PutUint64(buf, seq.Add(1))
				t0 := time.Now()
				if _, err := s.PutBlob(buf); err != nil {
					t.Error(err)
					return
				}
				if d := int64(time.Since(t0)); d > slowest.Load() {
					slowest.Store(d)
				}
			}
		})
	}
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d puts, slowest %v", seq.Load(), time.Duration(slowest.Load()))
	if d := time.Duration(slowest.Load()); d > 400*time.Millisecond {
		t.Errorf("a PutBlob call took %v: held committing others' groups", d)
	}
}
