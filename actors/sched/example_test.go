package sched_test

import (
	"fmt"
	"strings"

	"github.com/smile-vplm/smile/actors/sched"
)

// Two tenants, "gold" paying for twice the share of "bronze", both with
// four equal requests waiting: gold's requests leave twice as fast.
func Example() {
	q, err := sched.New(sched.DefaultConfig(), nil)
	if err != nil {
		panic(err)
	}
	if err := q.SetTenant("gold", sched.TenantConfig{Weight: 2}); err != nil {
		panic(err)
	}
	for i := range 4 {
		for _, tenant := range []string{"gold", "bronze"} {
			r := &sched.Request{Tenant: tenant, Cost: 10, Rows: 1, Value: fmt.Sprint(tenant, i)}
			if err := q.Push(r); err != nil {
				panic(err)
			}
		}
	}
	for q.Len() > 0 {
		var served []string
		for _, r := range q.Pop(3, 0) { // at most 3 sequences per batch
			served = append(served, r.Value.(string))
			q.Done(r) // the device finished it
		}
		fmt.Println(strings.Join(served, " "))
	}
	gold, _ := q.Tenant("gold")
	fmt.Println("gold served cost:", gold.ServedCost)
	// Output:
	// gold0 bronze0 gold1
	// bronze1 gold2 gold3
	// bronze2 bronze3
	// gold served cost: 40
}
