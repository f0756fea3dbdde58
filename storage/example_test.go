package storage_test

import (
	"fmt"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/storage"
)

func ExampleCatalog_Apply() {
	s, err := storage.Open(storage.InMemoryOptions())
	if err != nil {
		panic(err)
	}
	defer s.Close()
	// The params blob goes in first; the catalog command then names it.
	digest, _ := s.PutBlob([]byte("adapter and head weights"))
	c := storage.NewCatalog(s)
	v, err := c.Apply(&smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_Create{Create: &smilepb.CreateVPLM{
		Vplm: &smilepb.VPLM{
			Id: "spam-filter", Tenant: "acme", Backbone: "use-lite",
			Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"ham", "spam"},
			ParamsDigest: digest, CreatedUnixMs: 1,
		},
	}}})
	fmt.Println(v.GetId(), v.GetVersion(), err)
	_, err = c.Apply(&smilepb.CatalogCommand{Cmd: &smilepb.CatalogCommand_NewVersion{NewVersion: &smilepb.NewVersion{
		Id: "spam-filter", Version: 3, ParamsDigest: digest,
	}}})
	fmt.Println(err)
	// Output:
	// spam-filter 1 <nil>
	// storage: conflict: vPLM "spam-filter" is at version 1, new version must be 2, not 3
}
