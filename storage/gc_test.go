package storage

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/smile-vplm/smile/api/smilepb"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func mustGC(t testing.TB, s *Store, grace time.Duration) GCStats {
	t.Helper()
	st, err := s.GC(context.Background(), grace)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestGC(t *testing.T) {
	s, _ := openTest(t)
	clk := &fakeClock{time.Unix(1_000_000, 0)}
	s.now = clk.now
	c := NewCatalog(s)
	orphan := mustPut(t, s, "never committed")
	used := mustPut(t, s, "committed")
	mustApply(t, c, createCmd("m", "t", used))

	// Within the grace period nothing goes; the used blob's marker does.
	clk.t = clk.t.Add(30 * time.Minute)
	if st := mustGC(t, s, time.Hour); st.Blobs != 0 || st.Markers != 1 {
		t.Fatalf("GC within grace: %+v", st)
	}
	// A second put of the same bytes restarts the grace period.
	clk.t = clk.t.Add(20 * time.Minute)
	mustPut(t, s, "never committed")
	clk.t = clk.t.Add(50 * time.Minute)
	if st := mustGC(t, s, time.Hour); st.Blobs != 0 {
		t.Fatalf("GC after a fresh put: %+v", st)
	}
	clk.t = clk.t.Add(11 * time.Minute)
	st := mustGC(t, s, time.Hour)
	if st.Blobs != 1 || st.Bytes != int64(len("never committed")) {
		t.Fatalf("GC after grace: %+v", st)
	}
	if ok, _ := s.HasBlob(orphan); ok {
		t.Fatal("orphan blob survived GC")
	}
	if ok, _ := s.HasBlob(used); !ok {
		t.Fatal("GC deleted a referenced blob")
	}

	// A blob left unreferenced without a marker (a restore dropped its
	// vPLMs) is adopted, then swept after the grace period.
	rawSet(t, s, blobKey(digestOf([]byte("stray"))), []byte("stray"))
	if st := mustGC(t, s, time.Hour); st.Adopted != 1 || st.Blobs != 0 {
		t.Fatalf("adoption: %+v", st)
	}
	clk.t = clk.t.Add(2 * time.Hour)
	if st := mustGC(t, s, time.Hour); st.Blobs != 1 || st.Bytes != 5 {
		t.Fatalf("sweeping an adopted blob: %+v", st)
	}
	// A blob put for a create, swept or not, is never deleted under a
	// committed vPLM: the create commits first, and GC sees the count.
	d := mustPut(t, s, "late create")
	clk.t = clk.t.Add(2 * time.Hour)
	mustApply(t, c, createCmd("late", "t", d))
	if st := mustGC(t, s, time.Hour); st.Blobs != 0 {
		t.Fatalf("GC swept a referenced blob: %+v", st)
	}
	if n := countPrefix(t, s, prefixPending); n != 0 {
		t.Fatalf("%d markers left", n)
	}
	// A delete that drops the count to zero hands the blob to GC.
	mustApply(t, c, deleteCmd("late"))
	if ok, _ := s.HasBlob(d); !ok {
		t.Fatal("blob went before GC")
	}
	if n := countPrefix(t, s, prefixPending); n != 1 {
		t.Fatalf("%d markers after the last delete, want 1", n)
	}
	if _, err := s.GC(context.Background(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.HasBlob(d); !ok {
		t.Fatal("blob swept within its grace period")
	}
	if _, err := s.GC(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.HasBlob(d); ok {
		t.Fatal("blob survived its last vPLM and a GC")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.GC(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("GC with a cancelled context: %v", err)
	}
}

// Many blobs across pages, in memory (no value log GC) and on disk.
func TestGCMany(t *testing.T) {
	s, err := Open(InMemoryOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := NewCatalog(s)
	datas := make([][]byte, 2500)
	for i := range datas {
		datas[i] = []byte{byte(i), byte(i >> 8), 1}
	}
	ds, err := s.PutBlobs(datas)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []*smilepb.CatalogCommand
	for i := 0; i < len(ds); i += 2 {
		cmds = append(cmds, createCmd("m"+ds[i][7:20], "t", ds[i]))
	}
	if _, errs := c.ApplyBatch(cmds); errs[0] != nil {
		t.Fatal(errs[0])
	}
	st := mustGC(t, s, 0)
	if st.Blobs != 1250 || st.Markers != 1250 || st.Bytes != 3*1250 {
		t.Fatalf("GC: %+v", st)
	}
	if m, _ := s.MissingBlobs(0); len(m) != 0 {
		t.Fatalf("GC deleted referenced blobs: %d", len(m))
	}
}
