package storage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
)

func testVPLM(id, tenant, digest string) *smilepb.VPLM {
	return &smilepb.VPLM{
		Id: id, Tenant: tenant, Backbone: "use-lite",
		Task:         smilepb.Task_TASK_CLASSIFY,
		Labels:       []string{"ham", "spam"},
		Adapter:      &smilepb.AdapterConfig{Kind: smilepb.AdapterKind_ADAPTER_LORA, Rank: 8, Layers: []uint32{0, 1}, Alpha: 16},
		ParamsDigest: digest, ParamsBytes: 130_000,
	}
}

func createCmd(id, tenant, digest string) *smilepb.CatalogCommand {
	return createOf(testVPLM(id, tenant, digest))
}

func createOf(v *smilepb.VPLM) *smilepb.CatalogCommand {
	return &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_Create{Create: &smilepb.CreateVPLM{Vplm: v}}}
}

func deleteCmd(id string) *smilepb.CatalogCommand {
	return &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_Delete{Delete: &smilepb.DeleteVPLM{Id: id}}}
}

func newVersionCmd(id string, version uint64, digest string) *smilepb.CatalogCommand {
	return &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_NewVersion{NewVersion: &smilepb.NewVersion{
		Id: id, Version: version, ParamsDigest: digest, ParamsBytes: 42, UpdatedUnixMs: 2000}}}
}

func putTenantCmd(t *smilepb.Tenant) *smilepb.CatalogCommand {
	return &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_PutTenant{PutTenant: &smilepb.PutTenant{Tenant: t}}}
}

func mustPut(t testing.TB, s *Store, data string) string {
	t.Helper()
	d, err := s.PutBlob([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustApply(t testing.TB, c *Catalog, cmd *smilepb.CatalogCommand) *smilepb.VPLM {
	t.Helper()
	v, err := c.Apply(cmd)
	if err != nil {
		t.Fatalf("apply %v: %v", cmd, err)
	}
	return v
}

func refCount(t testing.TB, s *Store, digest string) uint64 {
	t.Helper()
	var n uint64
	err := s.view(func(txn *badger.Txn) (err error) {
		n, err = getCount(txn, refKey(Digest(digest)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"a", "0", "spam-v2", "m.1_x", "a" + string(make([]byte, 0)) + "bcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0"} {
		if err := ValidID(id); err != nil {
			t.Errorf("ValidID(%q) = %v", id, err)
		}
	}
	long := string(slices.Repeat([]byte("a"), 65))
	for _, id := range []string{"", "-a", ".a", "_a", "A", "a/b", "a b", "é", long, "a\x00"} {
		if err := ValidID(id); !errors.Is(err, ErrBadID) {
			t.Errorf("ValidID(%q) = %v, want ErrBadID", id, err)
		}
	}
}

func TestCatalogCreate(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	d := mustPut(t, s, "params")

	want := testVPLM("m1", "acme", d)
	want.CreatedUnixMs, want.UpdatedUnixMs = 1000, 1000
	want.Version = 7 // ignored: a new vPLM starts at version 1
	got := mustApply(t, c, createOf(want))
	want.Version = 1
	if !proto.Equal(got, want) {
		t.Fatalf("created %v, want %v", got, want)
	}
	if stored, err := c.Get("m1"); err != nil || !proto.Equal(stored, want) {
		t.Fatalf("Get: %v %v", stored, err)
	}
	if n := refCount(t, s, d); n != 1 {
		t.Fatalf("refcount %d, want 1", n)
	}
	// Zero times are filled in.
	v := mustApply(t, c, createCmd("m2", "acme", d))
	if v.CreatedUnixMs == 0 || v.UpdatedUnixMs != v.CreatedUnixMs {
		t.Fatalf("times not filled: %v", v)
	}

	missing := "sha256:" + fmt.Sprintf("%064x", 1)
	embed := testVPLM("e1", "acme", d)
	embed.Task, embed.Labels = smilepb.Task_TASK_EMBED, nil
	mustApply(t, c, createOf(embed))

	for _, tc := range []struct {
		name string
		cmd  *smilepb.CatalogCommand
		want error
	}{
		{"exists", createCmd("m1", "acme", d), ErrExists},
		{"missing blob", createCmd("m3", "acme", missing), ErrMissingBlob},
		{"no digest", createCmd("m3", "acme", ""), ErrMissingBlob},
		{"bad digest", createCmd("m3", "acme", "sha256:nope"), ErrBadDigest},
		{"bad id", createCmd("M3", "acme", d), ErrBadID},
		{"bad tenant", createCmd("m3", "", d), ErrBadID},
		{"no vplm", createOf(nil), ErrInvalid},
		{"no command", &smilepb.CatalogCommand{}, ErrInvalid},
		{"nil command", nil, ErrInvalid},
		{"no backbone", func() *smilepb.CatalogCommand {
			v := testVPLM("m3", "acme", d)
			v.Backbone = ""
			return createOf(v)
		}(), ErrInvalid},
		{"no task", func() *smilepb.CatalogCommand {
			v := testVPLM("m3", "acme", d)
			v.Task = smilepb.Task_TASK_UNSPECIFIED
			return createOf(v)
		}(), ErrInvalid},
		{"one label", func() *smilepb.CatalogCommand {
			v := testVPLM("m3", "acme", d)
			v.Labels = []string{"only"}
			return createOf(v)
		}(), ErrInvalid},
		{"repeated label", func() *smilepb.CatalogCommand {
			v := testVPLM("m3", "acme", d)
			v.Labels = []string{"a", "b", "a"}
			return createOf(v)
		}(), ErrInvalid},
		{"embed with labels", func() *smilepb.CatalogCommand {
			v := proto.CloneOf(embed)
			v.Id, v.Labels = "e2", []string{"a", "b"}
			return createOf(v)
		}(), ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v, err := c.Apply(tc.cmd); !errors.Is(err, tc.want) || v != nil {
				t.Fatalf("Apply = %v, %v; want %v", v, err, tc.want)
			}
		})
	}
	if n, err := c.Count(); err != nil || n != 3 {
		t.Fatalf("Count = %d, %v; failed creates must leave nothing", n, err)
	}
	if n := refCount(t, s, d); n != 3 {
		t.Fatalf("refcount %d, want 3", n)
	}
}

// TestCatalogModes: a vPLM runs in full mode (mode "" or "full", no
// table) or in plot mode (mode "plot" with its table); a new version keeps
// both; anything else is ErrInvalid and leaves nothing.
func TestCatalogModes(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	d := mustPut(t, s, "params")
	d2 := mustPut(t, s, "params v2")
	with := func(id, mode, table string) *smilepb.VPLM {
		v := testVPLM(id, "acme", d)
		v.Mode, v.Table = mode, table
		return v
	}
	for _, v := range []*smilepb.VPLM{with("m-none", "", ""), with("m-full", ModeFull, ""), with("m-plot", ModePlot, "plot-0123abcd")} {
		got := mustApply(t, c, createOf(v))
		if got.Mode != v.Mode || got.Table != v.Table {
			t.Fatalf("created %q: mode %q table %q, want %q %q", v.Id, got.Mode, got.Table, v.Mode, v.Table)
		}
	}
	nv := mustApply(t, c, newVersionCmd("m-plot", 2, d2))
	if nv.Mode != ModePlot || nv.Table != "plot-0123abcd" {
		t.Fatalf("a new version lost the mode: %v", nv)
	}
	for _, tc := range []struct {
		name string
		v    *smilepb.VPLM
	}{
		{"plot without table", with("b1", ModePlot, "")},
		{"full with table", with("b2", ModeFull, "plot-0123abcd")},
		{"unset mode with table", with("b3", "", "plot-0123abcd")},
		{"unknown mode", with("b4", "half", "")},
		{"mode case", with("b5", "PLOT", "plot-0123abcd")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v, err := c.Apply(createOf(tc.v)); !errors.Is(err, ErrInvalid) || v != nil {
				t.Fatalf("Apply = %v, %v; want ErrInvalid", v, err)
			}
		})
	}
	if n, err := c.Count(); err != nil || n != 3 {
		t.Fatalf("Count = %d, %v; failed creates must leave nothing", n, err)
	}
}

func TestCatalogDelete(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	shared, own := mustPut(t, s, "shared"), mustPut(t, s, "own")
	mustApply(t, c, createCmd("a", "t", shared))
	mustApply(t, c, createCmd("b", "t", shared))
	mustApply(t, c, createCmd("c", "t", own))

	if _, err := c.Apply(deleteCmd("nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	if _, err := c.Apply(deleteCmd("Bad")); !errors.Is(err, ErrBadID) {
		t.Fatalf("delete bad id: %v", err)
	}
	if v := mustApply(t, c, deleteCmd("c")); v.GetId() != "c" {
		t.Fatalf("delete returned %v", v)
	}
	if _, err := c.Get("c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after delete: %v", err)
	}
	// The blob stays until GC (a create of the same bytes may be on its
	// way), then goes.
	if ok, _ := s.HasBlob(own); !ok {
		t.Fatal("a deleted vPLM's blob went before GC")
	}
	if _, err := s.GC(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.HasBlob(own); ok {
		t.Fatal("a deleted vPLM's own blob must go with GC")
	}
	mustApply(t, c, deleteCmd("a"))
	if ok, _ := s.HasBlob(shared); !ok {
		t.Fatal("a blob another vPLM uses must stay")
	}
	if err := s.DeleteBlob(shared); !errors.Is(err, ErrConflict) {
		t.Fatalf("DeleteBlob of a referenced blob: %v", err)
	}
	mustApply(t, c, deleteCmd("b"))
	if !hasPending(t, s, shared) {
		t.Fatal("blob must be handed to GC with its last vPLM")
	}
	if vs, err := c.List("t", "", 0); err != nil || len(vs) != 0 {
		t.Fatalf("List after deletes: %v %v", vs, err)
	}
	// The id can be used again.
	d := mustPut(t, s, "again")
	if v := mustApply(t, c, createCmd("a", "t", d)); v.Version != 1 {
		t.Fatalf("recreated at version %d", v.Version)
	}
}

func TestCatalogNewVersion(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	d1, d2, d3 := mustPut(t, s, "v1"), mustPut(t, s, "v2"), mustPut(t, s, "v3")
	mustApply(t, c, createCmd("m", "t", d1))
	mustApply(t, c, createCmd("other", "t", d2))
	missing := "sha256:" + fmt.Sprintf("%064x", 9)

	for _, tc := range []struct {
		name string
		cmd  *smilepb.CatalogCommand
		want error
	}{
		{"not found", newVersionCmd("x", 2, d2), ErrNotFound},
		{"same version", newVersionCmd("m", 1, d2), ErrConflict},
		{"skips a version", newVersionCmd("m", 3, d2), ErrConflict},
		{"missing blob", newVersionCmd("m", 2, missing), ErrMissingBlob},
		{"bad digest", newVersionCmd("m", 2, "sha256:0"), ErrBadDigest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Apply(tc.cmd); !errors.Is(err, tc.want) {
				t.Fatalf("Apply = %v, want %v", err, tc.want)
			}
		})
	}
	v := mustApply(t, c, newVersionCmd("m", 2, d2))
	if v.Version != 2 || v.ParamsDigest != d2 || v.ParamsBytes != 42 || v.UpdatedUnixMs != 2000 || v.Labels[1] != "spam" {
		t.Fatalf("after NewVersion: %v", v)
	}
	if !hasPending(t, s, d1) {
		t.Fatal("the old version's blob, used by no vPLM, must be handed to GC")
	}
	if n := refCount(t, s, d2); n != 2 {
		t.Fatalf("refcount of shared blob %d, want 2", n)
	}
	// Same params again still bumps the version and keeps the count.
	mustApply(t, c, newVersionCmd("m", 3, d2))
	if n := refCount(t, s, d2); n != 2 {
		t.Fatalf("refcount %d, want 2", n)
	}
	v = mustApply(t, c, newVersionCmd("m", 4, d3))
	if got, _ := c.Get("m"); !proto.Equal(got, v) || got.Version != 4 {
		t.Fatalf("Get = %v, want %v", got, v)
	}
	if n := refCount(t, s, d2); n != 1 {
		t.Fatalf("refcount %d, want 1", n)
	}
}

func TestCatalogTenants(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	if _, ok, err := c.Tenant("acme"); ok || err != nil {
		t.Fatalf("Tenant before put: %v %v", ok, err)
	}
	acme := &smilepb.Tenant{Name: "acme", Weight: 2, MaxInflight: 64, RatePerS: 100, Burst: 20}
	if v := mustApply(t, c, putTenantCmd(acme)); v != nil {
		t.Fatalf("PutTenant returned %v", v)
	}
	mustApply(t, c, putTenantCmd(&smilepb.Tenant{Name: "beta", Weight: 1}))
	acme.Weight = 3
	mustApply(t, c, putTenantCmd(acme)) // replaces
	got, ok, err := c.Tenant("acme")
	if err != nil || !ok || !proto.Equal(got, acme) {
		t.Fatalf("Tenant = %v %v %v", got, ok, err)
	}
	all, err := c.Tenants()
	if err != nil || len(all) != 2 || all[0].Name != "acme" || all[1].Name != "beta" {
		t.Fatalf("Tenants = %v %v", all, err)
	}
	for _, bad := range []*smilepb.Tenant{nil, {Name: ""}, {Name: "a/b"}, {Name: "x", Weight: -1}, {Name: "x", RatePerS: nan()}} {
		if _, err := c.Apply(putTenantCmd(bad)); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrBadID) {
			t.Errorf("PutTenant(%v) = %v", bad, err)
		}
	}
	if _, _, err := c.Tenant("A"); !errors.Is(err, ErrBadID) {
		t.Errorf("Tenant(bad name) = %v", err)
	}
}

func nan() float64 { z := 0.0; return z / z }

func TestCatalogList(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	d := mustPut(t, s, "p")
	var all, acme []string
	for i := range 25 {
		id := fmt.Sprintf("m%02d", i)
		tenant := "beta"
		if i%3 == 0 {
			tenant = "acme"
			acme = append(acme, id)
		}
		all = append(all, id)
		mustApply(t, c, createCmd(id, tenant, d))
	}
	// A tenant whose name is a prefix of another's must not see its vPLMs.
	mustApply(t, c, createCmd("zz", "acme2", d))
	all = append(all, "zz")

	page := func(tenant string, size int) []string {
		var ids []string
		after := ""
		for {
			vs, err := c.List(tenant, after, size)
			if err != nil {
				t.Fatal(err)
			}
			if len(vs) > size {
				t.Fatalf("page of %d, limit %d", len(vs), size)
			}
			for _, v := range vs {
				if tenant != "" && v.Tenant != tenant {
					t.Fatalf("tenant %q listed %v", tenant, v)
				}
				ids = append(ids, v.Id)
			}
			if len(vs) < size {
				return ids
			}
			after = vs[len(vs)-1].Id
		}
	}
	for _, size := range []int{1, 7, 26, 100} {
		if got := page("", size); !slices.Equal(got, all) {
			t.Errorf("all, pages of %d: %v", size, got)
		}
		if got := page("acme", size); !slices.Equal(got, acme) {
			t.Errorf("acme, pages of %d: %v", size, got)
		}
	}
	if vs, _ := c.List("", "", 0); len(vs) != len(all) {
		t.Errorf("limit 0 listed %d, want all %d", len(vs), len(all))
	}
	if vs, _ := c.List("", "m05x", 2); len(vs) != 2 || vs[0].Id != "m06" {
		t.Errorf("after a missing id: %v", vs)
	}
	if vs, _ := c.List("nobody", "", 0); len(vs) != 0 {
		t.Errorf("unknown tenant: %v", vs)
	}
	if _, err := c.List("Bad", "", 0); !errors.Is(err, ErrBadID) {
		t.Errorf("bad tenant: %v", err)
	}
	if n, _ := c.Count(); n != len(all) {
		t.Errorf("Count = %d, want %d", n, len(all))
	}
}

func TestCatalogApplyBatch(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	d1, d2, d3 := mustPut(t, s, "1"), mustPut(t, s, "2"), mustPut(t, s, "3")
	cmds := []*smilepb.CatalogCommand{
		createCmd("a", "t", d1),
		createCmd("a", "t", d1), // sees the first: exists
		newVersionCmd("a", 2, d2),
		createCmd("b", "t", "sha256:"+fmt.Sprintf("%064x", 5)),
		deleteCmd("a"),
		deleteCmd("a"),
		putTenantCmd(&smilepb.Tenant{Name: "t", Weight: 1}),
		createCmd("c", "t", d3),
		createCmd("d", "t", d1), // d1 stays for GC when a moves off it: a create may use it again
	}
	want := []error{nil, ErrExists, nil, ErrMissingBlob, nil, ErrNotFound, nil, nil, nil}
	out, errs := c.ApplyBatch(cmds)
	for i := range cmds {
		if !errors.Is(errs[i], want[i]) || (want[i] == nil) != (errs[i] == nil) {
			t.Errorf("command %d: %v, want %v", i, errs[i], want[i])
		}
		if (errs[i] == nil) != (out[i] != nil) && i != 6 {
			t.Errorf("command %d: result %v with error %v", i, out[i], errs[i])
		}
	}
	if out[2].Version != 2 || out[4].Version != 2 {
		t.Errorf("versions: %v %v", out[2], out[4])
	}
	ids, _ := c.List("", "", 0)
	if len(ids) != 2 || ids[0].Id != "c" || ids[1].Id != "d" {
		t.Fatalf("after batch: %v", ids)
	}
	if n := refCount(t, s, d1); n != 1 {
		t.Errorf("refcount of %s: %d, want 1 (d)", d1, n)
	}
	if !hasPending(t, s, d2) {
		t.Errorf("blob %s, used by no vPLM, not handed to GC", d2)
	}
	if n := refCount(t, s, d3); n != 1 {
		t.Errorf("refcount %d, want 1", n)
	}
}

// A batch bigger than one Badger transaction is committed in several.
func TestCatalogApplyBatchSplits(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	s, _ := openTest(t)
	c := NewCatalog(s)
	d := mustPut(t, s, "p")
	const n = 10_000
	cmds := make([]*smilepb.CatalogCommand, n)
	for i := range cmds {
		cmds[i] = createCmd(fmt.Sprintf("m%05d", i), "t", d)
	}
	cmds[n-1] = createCmd("m00000", "t", d) // sees the first, in an earlier transaction
	_, errs := c.ApplyBatch(cmds)
	for i, err := range errs[:n-1] {
		if err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	if !errors.Is(errs[n-1], ErrExists) {
		t.Fatalf("last command: %v", errs[n-1])
	}
	if got, _ := c.Count(); got != n-1 {
		t.Fatalf("Count = %d, want %d", got, n-1)
	}
	if got := refCount(t, s, d); got != n-1 {
		t.Fatalf("refcount %d, want %d", got, n-1)
	}
}

func TestCatalogReopen(t *testing.T) {
	s, dir := openTest(t)
	c := NewCatalog(s)
	d := mustPut(t, s, string(make([]byte, 130_000)))
	mustApply(t, c, createCmd("a", "t", d))
	mustApply(t, c, createCmd("b", "t", d))
	mustApply(t, c, newVersionCmd("b", 2, d))
	mustApply(t, c, deleteCmd("a"))
	mustApply(t, c, putTenantCmd(&smilepb.Tenant{Name: "t", Weight: 2}))
	before, _ := c.List("", "", 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	c2 := NewCatalog(s2)
	after, err := c2.List("", "", 0)
	if err != nil || len(after) != 1 || !proto.Equal(after[0], before[0]) || after[0].Version != 2 {
		t.Fatalf("after reopen: %v %v, want %v", after, err, before)
	}
	if tn, ok, _ := c2.Tenant("t"); !ok || tn.Weight != 2 {
		t.Fatalf("tenant after reopen: %v", tn)
	}
	if b, err := s2.GetBlob(d); err != nil || len(b) != 130_000 {
		t.Fatalf("blob after reopen: %d bytes, %v", len(b), err)
	}
	if n := refCount(t, s2, d); n != 1 {
		t.Fatalf("refcount after reopen %d", n)
	}
}

func TestCatalogConcurrent(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	shared := mustPut(t, s, "shared")
	const workers, each = 16, 25
	var wg sync.WaitGroup
	errc := make(chan error, workers*each*2)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%02d-%02d", w, i)
				// Half on the shared blob, half on their own, put concurrently.
				d := shared
				if i%2 == 1 {
					var err error
					if d, err = s.PutBlob([]byte(id)); err != nil {
						errc <- err
						return
					}
				}
				if _, err := c.Apply(createCmd(id, fmt.Sprintf("t%d", w%4), d)); err != nil {
					errc <- err
				}
				if _, err := c.Get(id); err != nil {
					errc <- err
				}
				// Racing a delete of a referenced blob must never win.
				if err := s.DeleteBlob(shared); !errors.Is(err, ErrConflict) {
					errc <- fmt.Errorf("DeleteBlob of shared blob: %v", err)
				}
			}
		})
	}
	// Readers alongside.
	for range 4 {
		wg.Go(func() {
			for range 20 {
				if _, err := c.List("", "", 50); err != nil {
					errc <- err
				}
				if _, err := c.Count(); err != nil {
					errc <- err
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if n, _ := c.Count(); n != workers*each {
		t.Fatalf("Count = %d, want %d", n, workers*each)
	}
	wantShared := uint64(workers * ((each + 1) / 2))
	if n := refCount(t, s, shared); n != wantShared {
		t.Fatalf("shared refcount %d, want %d", n, wantShared)
	}

	// Delete everything concurrently: every blob goes with its last vPLM.
	vs, _ := c.List("", "", 0)
	var wg2 sync.WaitGroup
	for _, v := range vs {
		wg2.Go(func() {
			if _, err := c.Apply(deleteCmd(v.Id)); err != nil {
				t.Error(err)
			}
		})
	}
	wg2.Wait()
	if _, err := s.GC(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if ok, _ := s.HasBlob(v.ParamsDigest); ok {
			t.Fatalf("blob %s of deleted %s still stored", v.ParamsDigest, v.Id)
		}
	}
}

// BenchmarkCatalogGet: the per-request catalog read of a vPLM actor, over
// 10,000 vPLMs read in random order (the serving benchmark's uniform mix).
func BenchmarkCatalogGet(b *testing.B) {
	s, err := Open(DefaultOptions(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c := NewCatalog(s)
	dg, err := s.PutBlob([]byte("params"))
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	cmds := make([]*smilepb.CatalogCommand, n)
	ids := make([]string, n)
	for i := range cmds {
		ids[i] = fmt.Sprintf("vplm-%05d", i)
		cmds[i] = &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_Create{Create: &smilepb.CreateVPLM{Vplm: testVPLM(ids[i], "t", dg)}}}
	}
	if _, errs := c.ApplyBatch(cmds); errs != nil {
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Get(ids[rng.IntN(n)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "us/get")
}

// hasPending reports whether blob d carries GC's pending marker.
func hasPending(t *testing.T, s *Store, d string) bool {
	t.Helper()
	pd, err := ParseDigest(d)
	if err != nil {
		t.Fatal(err)
	}
	var ok bool
	if err := s.view(func(txn *badger.Txn) (err error) {
		ok, err = has(txn, pendingKey(pd))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ok
}
