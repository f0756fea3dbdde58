package storage

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
)

func mustEntries(t testing.TB, c *Catalog, entries ...Entry) [][]*smilepb.VPLM {
	t.Helper()
	out, errs := c.ApplyEntries(entries)
	for e := range errs {
		for k, err := range errs[e] {
			if err != nil {
				t.Fatalf("entry %d command %d: %v", entries[e].Index, k, err)
			}
		}
	}
	return out
}

func fakeDigest(i int) string { return fmt.Sprintf("sha256:%064x", i) }

// ApplyEntries does not need the blob here, keeps zero times zero, and two
// replicas, one with the blobs and one without, end with the same catalog.
func TestApplyEntriesDeterministic(t *testing.T) {
	s1, _ := openTest(t)
	s2, _ := openTest(t)
	c1, c2 := NewCatalog(s1), NewCatalog(s2)
	d := mustPut(t, s1, "params") // only replica 1 has it
	v := testVPLM("m1", "acme", d)
	entries := []Entry{
		{Index: 3, Cmds: []*smilepb.CatalogCommand{createOf(v), createCmd("m2", "acme", fakeDigest(7))}},
		{Index: 4, Cmds: []*smilepb.CatalogCommand{
			{Cmd: &smilepb.CatalogCommand_NewVersion{NewVersion: &smilepb.NewVersion{Id: "m2", Version: 2, ParamsDigest: d, ParamsBytes: 9}}},
			putTenantCmd(&smilepb.Tenant{Name: "acme", Weight: 1}),
		}},
	}
	out1 := mustEntries(t, c1, entries...)
	out2 := mustEntries(t, c2, entries...)
	for e := range out1 {
		for k := range out1[e] {
			if !proto.Equal(out1[e][k], out2[e][k]) {
				t.Fatalf("results differ: %v vs %v", out1[e][k], out2[e][k])
			}
		}
	}
	if got := out1[0][0]; got.CreatedUnixMs != 0 || got.UpdatedUnixMs != 0 || got.Version != 1 {
		t.Fatalf("zero times must stay zero: %v", got)
	}
	if got := out1[1][0]; got.UpdatedUnixMs != 0 || got.Version != 2 {
		t.Fatalf("new version: %v", got)
	}
	h1, err := c1.Hash()
	if err != nil {
		t.Fatal(err)
	}
	if h2, _ := c2.Hash(); h1 != h2 {
		t.Fatalf("hashes differ: %s %s", h1, h2)
	}
	for _, c := range []*Catalog{c1, c2} {
		if idx, err := c.Applied(); err != nil || idx != 4 {
			t.Fatalf("Applied = %d, %v", idx, err)
		}
	}
	if n := refCount(t, s2, d); n != 2 {
		t.Fatalf("refcount %d, want 2", n)
	}
	if m, _ := s2.MissingBlobs(0); len(m) != 1 || m[0] != d {
		t.Fatalf("MissingBlobs = %v, want [%s]", m, d)
	}
	if m, _ := s1.MissingBlobs(0); len(m) != 0 {
		t.Fatalf("MissingBlobs on the replica with the blob = %v", m)
	}
	// Direct Apply still checks the blob.
	if _, err := c2.Apply(createCmd("m3", "acme", fakeDigest(8))); !errors.Is(err, ErrMissingBlob) {
		t.Fatalf("Apply with a missing blob: %v", err)
	}
}

// A replay skips what was applied: whole entries before the position and
// the first commands of the position's entry (a split entry cut by a crash).
func TestApplyEntriesReplay(t *testing.T) {
	s, dir := openTest(t)
	c := NewCatalog(s)
	d := mustPut(t, s, "p")
	mustEntries(t, c, Entry{Index: 1, Cmds: []*smilepb.CatalogCommand{createCmd("a", "t", d)}},
		Entry{Index: 2, Cmds: []*smilepb.CatalogCommand{createCmd("b", "t", d)}})
	// Entry 3's first command committed, then the node "crashed".
	mustEntries(t, c, Entry{Index: 3, Cmds: []*smilepb.CatalogCommand{createCmd("c", "t", d)}})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c = NewCatalog(s)
	out, errs := c.ApplyEntries([]Entry{
		{Index: 2, Cmds: []*smilepb.CatalogCommand{createCmd("b", "t", d)}},
		{Index: 3, Cmds: []*smilepb.CatalogCommand{createCmd("c", "t", d), createCmd("c2", "t", d), deleteCmd("nope")}},
		{Index: 4},
		{Index: 5, Cmds: []*smilepb.CatalogCommand{deleteCmd("a")}},
	})
	want := [][]error{{ErrAlreadyApplied}, {ErrAlreadyApplied, nil, ErrNotFound}, {}, {nil}}
	for e := range want {
		for k, w := range want[e] {
			if !errors.Is(errs[e][k], w) || (w == nil) != (errs[e][k] == nil) {
				t.Errorf("entry %d command %d: %v, want %v", e, k, errs[e][k], w)
			}
		}
	}
	if out[1][1].GetId() != "c2" || out[3][0].GetId() != "a" {
		t.Fatalf("results: %v", out)
	}
	if idx, _ := c.Applied(); idx != 5 {
		t.Fatalf("Applied = %d, want 5", idx)
	}
	if n := refCount(t, s, d); n != 3 {
		t.Fatalf("refcount %d, want 3 (b, c, c2)", n)
	}
	// An empty entry moves the position; entries out of order are invalid.
	mustEntries(t, c, Entry{Index: 9})
	if idx, _ := c.Applied(); idx != 9 {
		t.Fatalf("Applied after an empty entry = %d", idx)
	}
	_, errs = c.ApplyEntries([]Entry{{Index: 11, Cmds: []*smilepb.CatalogCommand{createCmd("x", "t", d)}}, {Index: 10, Cmds: []*smilepb.CatalogCommand{createCmd("y", "t", d)}}, {Index: 0, Cmds: []*smilepb.CatalogCommand{createCmd("z", "t", d)}}})
	if errs[0][0] != nil || !errors.Is(errs[1][0], ErrInvalid) || !errors.Is(errs[2][0], ErrInvalid) {
		t.Fatalf("out of order: %v", errs)
	}
	if idx, _ := c.Applied(); idx != 11 {
		t.Fatalf("Applied = %d, want 11", idx)
	}
}

// An entry too big for one transaction is split, and the position records
// how far into it each transaction got.
func TestApplyEntriesSplit(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	s, _ := openTest(t)
	c := NewCatalog(s)
	const n = 10_000
	cmds := make([]*smilepb.CatalogCommand, n)
	for i := range cmds {
		cmds[i] = createCmd(fmt.Sprintf("m%05d", i), "t", fakeDigest(i%3))
	}
	mustEntries(t, c, Entry{Index: 7, Cmds: cmds})
	_, errs := c.ApplyEntries([]Entry{{Index: 7, Cmds: cmds}})
	for i, err := range errs[0] {
		if !errors.Is(err, ErrAlreadyApplied) {
			t.Fatalf("replayed command %d: %v", i, err)
		}
	}
	if got, _ := c.Count(); got != n {
		t.Fatalf("Count = %d", got)
	}
	if u, _ := c.Usage("t"); u.Vplms != n || u.Bytes != n*130_000 {
		t.Fatalf("usage %v", u)
	}
}

func TestApplyEntriesClosed(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	s.Close()
	_, errs := c.ApplyEntries([]Entry{{Index: 1, Cmds: []*smilepb.CatalogCommand{deleteCmd("a")}}})
	if !errors.Is(errs[0][0], ErrClosed) {
		t.Fatal(errs[0][0])
	}
	if _, err := c.Applied(); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
}

// BenchmarkApplyEntries: the Raft create path, synced, 64 creates per
// entry, one entry per call (the FSM's batch).
func BenchmarkApplyEntries(b *testing.B) {
	s, err := Open(DefaultOptions(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c := NewCatalog(s)
	if _, err := c.Apply(putTenantCmd(&smilepb.Tenant{Name: "t", MaxVplms: 1 << 40, MaxBytes: 1 << 60})); err != nil {
		b.Fatal(err)
	}
	const per = 64
	idx, n := uint64(0), 0
	for b.Loop() {
		idx++
		cmds := make([]*smilepb.CatalogCommand, per)
		for k := range cmds {
			v := testVPLM(fmt.Sprintf("v%08d", n), "t", fakeDigest(n))
			v.CreatedUnixMs, v.UpdatedUnixMs = 1, 1
			cmds[k] = createOf(v)
			n++
		}
		_, errs := c.ApplyEntries([]Entry{{Index: idx, Cmds: cmds}})
		if errs[0][0] != nil {
			b.Fatal(errs[0][0])
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "creates/s")
}

// TestDeleteRecreateKeepsBlob: a create of id x racing a delete of x. The
// create's blob (the same bytes: Service.Create seeds a new vPLM's params
// from its id) is already stored and referenced when the create puts and
// replicates it; the delete then drops the count to zero and the create
// commits after it. The blob must still be there: a count that reaches
// zero hands the blob to GC instead of deleting it in the state machine.
func TestDeleteRecreateKeepsBlob(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	d := mustPut(t, s, "params-of-x")
	mustEntries(t, c, Entry{Index: 1, Cmds: []*smilepb.CatalogCommand{createCmd("x", "acme", d)}})
	if _, err := s.PutBlob([]byte("params-of-x")); err != nil {
		t.Fatal(err)
	}
	mustEntries(t, c, Entry{Index: 2, Cmds: []*smilepb.CatalogCommand{deleteCmd("x")}})
	mustEntries(t, c, Entry{Index: 3, Cmds: []*smilepb.CatalogCommand{createCmd("x", "acme", d)}})
	if _, err := s.GetBlob(d); err != nil {
		t.Fatalf("committed vPLM x references blob %s: %v", d, err)
	}
	// Referenced again: GC keeps it whatever the grace.
	if _, err := s.GC(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBlob(d); err != nil {
		t.Fatalf("GC swept a referenced blob: %v", err)
	}
}
