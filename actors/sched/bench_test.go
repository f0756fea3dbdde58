package sched

import (
	"fmt"
	"testing"
)

// BenchmarkPushPop: one op is one request's Push, its share of a Pop and
// its Done, with 10,000 tenants each holding requests waiting (a heap of
// 10,000 tenants). Reports requests/s.
func BenchmarkPushPop(b *testing.B) {
	const tenants = 10_000
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprintf("tenants=%d/batch=%d", tenants, batch), func(b *testing.B) {
			q := mustNew(b, Config{MaxQueued: 4 * tenants, MaxQueuedPerTenant: 8}, nil)
			for i := range tenants {
				if i%10 == 0 { // a tenth of the tenants pay for more
					if err := q.SetTenant(fmt.Sprint("t", i), TenantConfig{Weight: 4}); err != nil {
						b.Fatal(err)
					}
				}
				for j := range 2 {
					if err := q.Push(req(fmt.Sprint("t", i), 1+(i+j)%200, nil)); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; {
				popped := q.Pop(batch, 0)
				for _, r := range popped {
					q.Done(r)
					// Back to the tail of its tenant's queue: the queue stays
					// full and every tenant stays backlogged.
					if err := q.Push(r); err != nil {
						b.Fatal(err)
					}
				}
				n += len(popped)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "requests/s")
		})
	}
}
