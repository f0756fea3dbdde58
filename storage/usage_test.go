package storage

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
)

func usageOf(t testing.TB, c *Catalog, tenant string) (uint64, uint64) {
	t.Helper()
	u, err := c.Usage(tenant)
	if err != nil {
		t.Fatal(err)
	}
	return u.Vplms, u.Bytes
}

func TestCatalogUsageAndQuotas(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	d1, d2 := mustPut(t, s, "one"), mustPut(t, s, "two")

	// No tenant record: unlimited; usage is counted anyway.
	mustApply(t, c, createCmd("a", "acme", d1))
	mustApply(t, c, createCmd("b", "acme", d2))
	if n, b := usageOf(t, c, "acme"); n != 2 || b != 260_000 {
		t.Fatalf("usage %d %d", n, b)
	}
	if n, b := usageOf(t, c, "nobody"); n != 0 || b != 0 {
		t.Fatalf("unknown tenant usage %d %d", n, b)
	}
	mustApply(t, c, putTenantCmd(&smilepb.Tenant{Name: "acme", MaxVplms: 3, MaxBytes: 350_000}))

	_, err := c.Apply(createCmd("c", "acme", d1))
	if !errors.Is(err, ErrQuotaExceeded) || !strings.Contains(err.Error(), "max_bytes is 350000") || !strings.Contains(err.Error(), "holds 260000 bytes") {
		t.Fatalf("create over max_bytes: %v", err)
	}
	small := testVPLM("c", "acme", d1)
	small.ParamsBytes = 1000
	mustApply(t, c, createOf(small))
	_, err = c.Apply(createOf(func() *smilepb.VPLM { v := proto.CloneOf(small); v.Id = "d"; return v }()))
	if !errors.Is(err, ErrQuotaExceeded) || !strings.Contains(err.Error(), "max_vplms is 3") || !strings.Contains(err.Error(), "holds 3 vPLMs") {
		t.Fatalf("create over max_vplms: %v", err)
	}
	// A new version that grows beyond max_bytes fails; one that shrinks passes.
	grow := newVersionCmd("c", 2, d2)
	grow.GetNewVersion().ParamsBytes = 200_000
	if _, err := c.Apply(grow); !errors.Is(err, ErrQuotaExceeded) || !strings.Contains(err.Error(), "max_bytes") {
		t.Fatalf("new version over max_bytes: %v", err)
	}
	mustApply(t, c, newVersionCmd("a", 2, d2)) // 130,000 -> 42 bytes
	if n, b := usageOf(t, c, "acme"); n != 3 || b != 130_000+1000+42 {
		t.Fatalf("usage after new version %d %d", n, b)
	}
	// Lowering the quota below usage removes nothing, and shrinking still works.
	mustApply(t, c, putTenantCmd(&smilepb.Tenant{Name: "acme", MaxVplms: 1, MaxBytes: 10}))
	mustApply(t, c, newVersionCmd("b", 2, d2))
	mustApply(t, c, deleteCmd("a"))
	mustApply(t, c, deleteCmd("b"))
	if n, b := usageOf(t, c, "acme"); n != 1 || b != 1000 {
		t.Fatalf("usage after deletes %d %d", n, b)
	}
	mustApply(t, c, deleteCmd("c"))
	if n, b := usageOf(t, c, "acme"); n != 0 || b != 0 {
		t.Fatalf("usage when empty %d %d", n, b)
	}
	// Quotas hold in a batch, each command seeing the ones before it, and
	// under ApplyEntries.
	mustApply(t, c, putTenantCmd(&smilepb.Tenant{Name: "acme", MaxVplms: 2}))
	_, errs := c.ApplyEntries([]Entry{{Index: 1, Cmds: []*smilepb.CatalogCommand{
		createCmd("x", "acme", d1), createCmd("y", "acme", d1), createCmd("z", "acme", d1), deleteCmd("x"), createCmd("z", "acme", d1)}}})
	want := []error{nil, nil, ErrQuotaExceeded, nil, nil}
	for i, w := range want {
		if !errors.Is(errs[0][i], w) || (w == nil) != (errs[0][i] == nil) {
			t.Errorf("command %d: %v, want %v", i, errs[0][i], w)
		}
	}
	if n, _ := usageOf(t, c, "acme"); n != 2 {
		t.Fatalf("usage %d, want 2", n)
	}
	if _, err := c.Usage("Bad"); !errors.Is(err, ErrBadID) {
		t.Fatalf("Usage(bad): %v", err)
	}
}

func TestCatalogPrecision(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	d := mustPut(t, s, "p")
	for i, p := range []string{"", PrecisionFP16, PrecisionInt8} {
		v := testVPLM(string(rune('a'+i)), "t", d)
		v.Precision = p
		if got := mustApply(t, c, createOf(v)); got.Precision != p {
			t.Fatalf("precision %q stored as %q", p, got.Precision)
		}
	}
	v := testVPLM("bad", "t", d)
	v.Precision = "fp8"
	if _, err := c.Apply(createOf(v)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("precision fp8: %v", err)
	}
}

func putKeyCmd(k *smilepb.APIKey) *smilepb.CatalogCommand {
	return &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_PutApiKey{PutApiKey: &smilepb.PutAPIKey{Key: k}}}
}

func deleteKeyCmd(id string) *smilepb.CatalogCommand {
	return &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_DeleteApiKey{DeleteApiKey: &smilepb.DeleteAPIKey{Id: id}}}
}

func putNodeCmd(n *smilepb.NodeInfo) *smilepb.CatalogCommand {
	return &smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_PutNode{PutNode: &smilepb.PutNode{Node: n}}}
}

func TestCatalogAPIKeysAndNodes(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	hash := strings.Repeat("ab", 32)
	k1 := &smilepb.APIKey{Id: "k1", Tenant: "acme", Hash: hash, CreatedUnixMs: 5}
	k2 := &smilepb.APIKey{Id: "k2", Tenant: "beta", Hash: hash}
	k3 := &smilepb.APIKey{Id: "k3", Tenant: "acme", Hash: hash, CreatedUnixMs: 6}
	for _, k := range []*smilepb.APIKey{k1, k2, k3} {
		if v := mustApply(t, c, putKeyCmd(k)); v != nil {
			t.Fatalf("PutAPIKey returned %v", v)
		}
	}
	if got, err := c.APIKey("k1"); err != nil || !proto.Equal(got, k1) {
		t.Fatalf("APIKey = %v %v", got, err)
	}
	if got, _ := c.APIKey("k2"); got.CreatedUnixMs == 0 {
		t.Fatal("Apply fills a zero created time")
	}
	if ks, err := c.APIKeys("acme"); err != nil || len(ks) != 2 || ks[0].Id != "k1" || ks[1].Id != "k3" {
		t.Fatalf("APIKeys(acme) = %v %v", ks, err)
	}
	if ks, _ := c.APIKeys(""); len(ks) != 3 {
		t.Fatalf("APIKeys() = %v", ks)
	}
	mustApply(t, c, deleteKeyCmd("k1"))
	if _, err := c.APIKey("k1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("APIKey after delete: %v", err)
	}
	if _, err := c.Apply(deleteKeyCmd("k1")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	for _, tc := range []struct {
		name string
		cmd  *smilepb.CatalogCommand
		want error
	}{
		{"no key", putKeyCmd(nil), ErrInvalid},
		{"bad id", putKeyCmd(&smilepb.APIKey{Id: "K!", Tenant: "acme", Hash: hash}), ErrBadID},
		{"bad tenant", putKeyCmd(&smilepb.APIKey{Id: "k", Tenant: "", Hash: hash}), ErrBadID},
		{"short hash", putKeyCmd(&smilepb.APIKey{Id: "k", Tenant: "acme", Hash: "abc"}), ErrInvalid},
		{"upper hash", putKeyCmd(&smilepb.APIKey{Id: "k", Tenant: "acme", Hash: strings.ToUpper(hash)}), ErrInvalid},
		{"delete bad id", deleteKeyCmd("a/b"), ErrBadID},
		{"no node", putNodeCmd(nil), ErrInvalid},
		{"node bad id", putNodeCmd(&smilepb.NodeInfo{Id: "a/b", RaftAddr: "x:1", ApiAddr: "x:2"}), ErrBadID},
		{"node empty id", putNodeCmd(&smilepb.NodeInfo{RaftAddr: "x:1", ApiAddr: "x:2"}), ErrBadID},
		{"node no raft addr", putNodeCmd(&smilepb.NodeInfo{Id: "n1", ApiAddr: "x:2"}), ErrInvalid},
		{"node no api addr", putNodeCmd(&smilepb.NodeInfo{Id: "n1", RaftAddr: "x:1"}), ErrInvalid},
	} {
		if _, err := c.Apply(tc.cmd); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := c.APIKey("Bad"); !errors.Is(err, ErrBadID) {
		t.Errorf("APIKey(bad): %v", err)
	}

	n1 := &smilepb.NodeInfo{Id: "10.0.0.1:7000", RaftAddr: "10.0.0.1:7000", ApiAddr: "10.0.0.1:8080"}
	n2 := &smilepb.NodeInfo{Id: "node-2", RaftAddr: "h2:7000", ApiAddr: "h2:8080"}
	mustApply(t, c, putNodeCmd(n2))
	mustApply(t, c, putNodeCmd(n1))
	n2.ApiAddr = "h2:9090"
	mustApply(t, c, putNodeCmd(n2)) // replaces
	ns, err := c.Nodes()
	if err != nil || len(ns) != 2 || !proto.Equal(ns[0], n1) || !proto.Equal(ns[1], n2) {
		t.Fatalf("Nodes = %v %v", ns, err)
	}
}

// TestCheckQuota: the advisory check a create runs before storing its blob
// answers as the command would: no tenant record is unlimited, and each
// quota refuses growth beyond it with ErrQuotaExceeded.
func TestCheckQuota(t *testing.T) {
	s, _ := openTest(t)
	c := NewCatalog(s)
	if err := c.CheckQuota("acme", 1, 1<<40); err != nil {
		t.Fatalf("no tenant record: %v", err)
	}
	mustApply(t, c, putTenantCmd(&smilepb.Tenant{Name: "acme", Weight: 1, MaxVplms: 1, MaxBytes: 200_000}))
	if err := c.CheckQuota("acme", 1, 130_000); err != nil {
		t.Fatalf("room for one: %v", err)
	}
	if err := c.CheckQuota("acme", 1, 300_000); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("over max_bytes: %v", err)
	}
	mustApply(t, c, createCmd("a", "acme", mustPut(t, s, "one")))
	if err := c.CheckQuota("acme", 1, 1); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("over max_vplms: %v", err)
	}
	if err := c.CheckQuota("Bad/Name", 1, 1); !errors.Is(err, ErrBadID) {
		t.Fatalf("bad tenant name: %v", err)
	}
}
