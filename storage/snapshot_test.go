package storage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/smile-vplm/smile/api/smilepb"
)

// fillCatalog gives c every kind of replicated record, through Raft
// entries starting at index first, with n vPLMs whose blobs are stored.
func fillCatalog(t testing.TB, s *Store, first uint64, n int) {
	t.Helper()
	c := NewCatalog(s)
	datas := make([][]byte, n)
	for i := range datas {
		datas[i] = fmt.Appendf(nil, "params %d", i)
	}
	ds, err := s.PutBlobs(datas)
	if err != nil {
		t.Fatal(err)
	}
	cmds := []*smilepb.CatalogCommand{
		putTenantCmd(&smilepb.Tenant{Name: "acme", Weight: 2, MaxVplms: 1 << 20}),
		putKeyCmd(&smilepb.APIKey{Id: "key1", Tenant: "acme", Hash: strings.Repeat("0f", 32), CreatedUnixMs: 1}),
		putNodeCmd(&smilepb.NodeInfo{Id: "n1", RaftAddr: "n1:7000", ApiAddr: "n1:8080"}),
	}
	for i, d := range ds {
		v := testVPLM(fmt.Sprintf("m%06d", i), []string{"acme", "beta"}[i%2], d)
		v.CreatedUnixMs, v.UpdatedUnixMs = 1, 1
		cmds = append(cmds, createOf(v))
	}
	var entries []Entry
	for i := 0; i < len(cmds); i += 64 {
		entries = append(entries, Entry{Index: first + uint64(len(entries)), Cmds: cmds[i:min(i+64, len(cmds))]})
	}
	mustEntries(t, c, entries...)
}

func mustHash(t testing.TB, c *Catalog) string {
	t.Helper()
	h, err := c.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func snapshotBytes(t testing.TB, c *Catalog) []byte {
	t.Helper()
	sn, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Release()
	var buf bytes.Buffer
	n, err := sn.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo = %d, %v (wrote %d)", n, err, buf.Len())
	}
	return buf.Bytes()
}

func TestSnapshotRestore(t *testing.T) {
	src, _ := openTest(t)
	fillCatalog(t, src, 10, 200)
	c := NewCatalog(src)
	want := mustHash(t, c)
	wantApplied, _ := c.Applied()

	sn, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if sn.Index() != wantApplied {
		t.Fatalf("snapshot index %d, want %d", sn.Index(), wantApplied)
	}
	// Writes after the snapshot do not show in it.
	mustEntries(t, c, Entry{Index: wantApplied + 1, Cmds: []*smilepb.CatalogCommand{deleteCmd("m000001"), putTenantCmd(&smilepb.Tenant{Name: "late"})}})
	var buf bytes.Buffer
	if _, err := sn.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	sn.Release()
	sn.Release()
	if _, err := sn.WriteTo(&buf); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteTo after Release: %v", err)
	}

	// Restore into a store with a different catalog: it is replaced.
	dst, dir := openTest(t)
	fillCatalog(t, dst, 1, 30)
	dc := NewCatalog(dst)
	mustApply(t, dc, createCmd("zz-only-here", "other", mustPut(t, dst, "mine")))
	if err := dc.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := mustHash(t, dc); got != want {
		t.Fatalf("hash after restore %s, want %s", got, want)
	}
	if idx, _ := dc.Applied(); idx != wantApplied {
		t.Fatalf("applied after restore %d, want %d", idx, wantApplied)
	}
	if _, err := dc.Get("zz-only-here"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an old vPLM survived the restore: %v", err)
	}
	if n, _ := dc.Count(); n != 200 {
		t.Fatalf("Count %d", n)
	}
	if u, _ := dc.Usage("acme"); u.Vplms != 100 {
		t.Fatalf("usage %v", u)
	}
	if ks, _ := dc.APIKeys("acme"); len(ks) != 1 {
		t.Fatalf("API keys %v", ks)
	}
	if ns, _ := dc.Nodes(); len(ns) != 1 {
		t.Fatalf("nodes %v", ns)
	}
	// The snapshot's blobs are not in it: this node must fetch them.
	if m, _ := dst.MissingBlobs(0); len(m) != 200-30 {
		t.Fatalf("MissingBlobs: %d", len(m))
	}
	// Survives reopening, with no staging left behind.
	dst.Close()
	dst, err = Open(DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if got := mustHash(t, NewCatalog(dst)); got != want {
		t.Fatal("hash changed on reopen")
	}
	if n := countPrefix(t, dst, prefixStage) + countPrefix(t, dst, keyRestore); n != 0 {
		t.Fatalf("%d staging keys left", n)
	}
	// The restored node goes on applying after the snapshot's entries.
	_, errs := NewCatalog(dst).ApplyEntries([]Entry{{Index: wantApplied, Cmds: []*smilepb.CatalogCommand{deleteCmd("m000000")}}})
	if !errors.Is(errs[0][0], ErrAlreadyApplied) {
		t.Fatalf("replay after restore: %v", errs[0][0])
	}
}

func countPrefix(t testing.TB, s *Store, p []byte) int {
	t.Helper()
	n := 0
	if err := s.view(func(txn *badger.Txn) error {
		return scanKeys(txn, p, func([]byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// Every truncation and a flipped byte anywhere fail with ErrCorrupt and
// leave the old catalog as it was.
func TestSnapshotRestoreCorrupt(t *testing.T) {
	src, _ := openTest(t)
	fillCatalog(t, src, 1, 20)
	good := snapshotBytes(t, NewCatalog(src))

	dst, _ := openTest(t)
	fillCatalog(t, dst, 1, 3)
	dc := NewCatalog(dst)
	before := mustHash(t, dc)
	check := func(name string, b []byte) {
		t.Helper()
		if err := dc.Restore(bytes.NewReader(b)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: Restore = %v, want ErrCorrupt", name, err)
		}
		if got := mustHash(t, dc); got != before {
			t.Fatalf("%s: the old catalog changed", name)
		}
	}
	for _, n := range []int{0, 1, 7, 8, 9, 10, len(good) / 3, len(good) / 2, len(good) - 33, len(good) - 32, len(good) - 1} {
		check(fmt.Sprintf("truncated to %d", n), good[:n])
	}
	for _, i := range []int{0, 8, 12, len(good) / 2, len(good) - 40, len(good) - 1} {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		check(fmt.Sprintf("byte %d flipped", i), b)
	}
	check("trailing byte", append(bytes.Clone(good), 0))
	check("empty", nil)
	if n := countPrefix(t, dst, prefixStage); n != 0 {
		t.Fatalf("%d staged keys left after failed restores", n)
	}
	if err := dc.Restore(bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
}

// A crash after the restore marker is written is finished at Open; a crash
// while staging leaves the old catalog and the staging is dropped.
func TestRestoreCrash(t *testing.T) {
	src, _ := openTest(t)
	fillCatalog(t, src, 1, 50)
	good := snapshotBytes(t, NewCatalog(src))
	want := mustHash(t, NewCatalog(src))

	for _, phase := range []byte{0, restoreClear, restoreMove} {
		t.Run(fmt.Sprintf("phase %d", phase), func(t *testing.T) {
			s, dir := openTest(t)
			fillCatalog(t, s, 1, 5)
			old := mustHash(t, NewCatalog(s))
			// Stage by hand, then "crash" in the given phase.
			s.applyMu.Lock()
			_, err := s.stage(bufioReader(good), false)
			s.applyMu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			switch phase {
			case restoreClear:
				rawSet(t, s, keyRestore, []byte{restoreClear})
			case restoreMove:
				// The old keys are gone and half the staged records moved.
				for _, p := range [][]byte{prefixCatalog, prefixRef, keyApplied} {
					if err := deletePrefix(s.db, p); err != nil {
						t.Fatal(err)
					}
				}
				rawSet(t, s, keyRestore, []byte{restoreMove})
				keys, err := pageKeys(s.db, prefixStage, nil, 100)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.db.Update(func(txn *badger.Txn) error {
					for _, k := range keys {
						item, err := txn.Get(k)
						if err != nil {
							return err
						}
						v, _ := item.ValueCopy(nil)
						txn.Set(k[len(prefixStage):], v)
						txn.Delete(k)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(DefaultOptions(dir))
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			got := mustHash(t, NewCatalog(s2))
			if phase == 0 && got != old {
				t.Fatal("a crash before the swap must leave the old catalog")
			}
			if phase != 0 && got != want {
				t.Fatal("a crash during the swap must end with the new catalog")
			}
			if n := countPrefix(t, s2, prefixStage) + countPrefix(t, s2, keyRestore); n != 0 {
				t.Fatalf("%d staging keys left", n)
			}
		})
	}
}

// Hash covers the replicated catalog only: not the applied position, not
// node-local records.
func TestHash(t *testing.T) {
	s1, _ := openTest(t)
	s2, _ := openTest(t)
	c1, c2 := NewCatalog(s1), NewCatalog(s2)
	empty := mustHash(t, c1)
	fillCatalog(t, s1, 1, 10)
	fillCatalog(t, s2, 100, 10) // same commands, other log indexes
	if h1, h2 := mustHash(t, c1), mustHash(t, c2); h1 != h2 || h1 == empty {
		t.Fatalf("hashes %s %s (empty %s)", h1, h2, empty)
	}
	h := mustHash(t, c1)
	if err := s1.PutRecords(Record{NS: NSJob, Key: "j1", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s1, "unreferenced")
	if mustHash(t, c1) != h {
		t.Fatal("node-local records changed the hash")
	}
	mustApply(t, c1, putTenantCmd(&smilepb.Tenant{Name: "new"}))
	if mustHash(t, c1) == h {
		t.Fatal("a catalog change did not change the hash")
	}
}

// BenchmarkSnapshot: streaming the snapshot of a 100,000-vPLM catalog.
func BenchmarkSnapshot(b *testing.B) {
	s, err := Open(DefaultOptions(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c := NewCatalog(s)
	const n = 100_000
	var entries []Entry
	for i := 0; i < n; i += 1000 {
		cmds := make([]*smilepb.CatalogCommand, 1000)
		for k := range cmds {
			cmds[k] = createCmd(fmt.Sprintf("v%07d", i+k), fmt.Sprintf("t%03d", (i+k)%100), fakeDigest(i+k))
		}
		entries = append(entries, Entry{Index: uint64(len(entries) + 1), Cmds: cmds})
	}
	mustEntries(b, c, entries...)
	var size int64
	for b.Loop() {
		sn, err := c.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		size, err = sn.WriteTo(discard{})
		sn.Release()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Seconds())/float64(b.N), "s/snapshot")
	b.ReportMetric(float64(size)/(1<<20), "MiB")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// FuzzRestoreSnapshot: whatever the stream, Restore either succeeds or
// fails with ErrCorrupt leaving the catalog as it was; it never panics.
func FuzzRestoreSnapshot(f *testing.F) {
	src, err := Open(InMemoryOptions())
	if err != nil {
		f.Fatal(err)
	}
	defer src.Close()
	fillCatalog(f, src, 1, 3)
	good := snapshotBytes(f, NewCatalog(src))
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(snapMagic + "\x01\x00\x00"))
	s, err := Open(InMemoryOptions())
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	c := NewCatalog(s)
	f.Fuzz(func(t *testing.T, b []byte) {
		before := mustHash(t, c)
		err := c.Restore(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Restore = %v, want ErrCorrupt", err)
			}
			if mustHash(t, c) != before {
				t.Fatal("a failed restore changed the catalog")
			}
		}
	})
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
