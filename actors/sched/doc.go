// Package sched is the device scheduler: it turns one device into many
// tenants' "virtual processors". The device actor owns one Queue; requests
// of every tenant wait there, and whenever the device is free the actor
// asks Pop for the next batch. Pure Go, no goroutines, no I/O: the caller
// drives it, and a Queue belongs to one goroutine.
//
// # Fair share: start-time fair queuing
//
// Each tenant has a weight w. Each request has a cost c, its token count
// (rows of compute), so a tenant sending long texts pays for them: fairness
// is equal served cost per unit of weight, not equal request counts. The
// queue keeps a system virtual time V and, per tenant, the finish tag F of
// its last admitted request. On arrival a request takes
//
//	S = max(V, F_tenant)       start tag
//	F_tenant = S + c/w         the tenant's new finish tag
//
// and Pop serves requests in increasing S (ties: arrival order), moving V
// to the S of the request served. This is start-time fair queuing (Goyal,
// Vin and Cheng, SIGCOMM 1996), chosen over WFQ's finish-tag order because
// it needs no simulated fluid server and its delay bound does not depend on
// the device's speed, which for batched GEMMs is far from constant.
//
// Its properties, each checked by a test:
//
//   - Proportional share. While tenants i and j both have work waiting,
//     their served cost divided by weight differs by at most c_max/w_i +
//     c_max/w_j, however long they stay backlogged.
//   - A flood cannot starve a light tenant. The flooder's waiting requests
//     carry tags stretching far past V; a light tenant's new request starts
//     at V, ahead of all of them, so it leaves in the next batch Pop makes,
//     whatever the flooder's backlog (unless more such requests of other
//     tenants arrive together than one batch holds).
//   - No banked credit. A tenant that was idle has F behind V, so its next
//     request starts at V: sitting idle earns nothing, and a returning
//     tenant gets its share from now on, not a catch-up burst.
//   - Busy periods restart level. When the queue drains, V restarts at 0
//     and every tenant's F is forgotten (in O(1), by an epoch counter), as
//     in SFQ where V jumps past every finish tag at the end of a busy period.
//
// Within a tenant requests stay FIFO. A binary heap holds the tenants that
// have work waiting, keyed by their head request's start tag, so Push and
// Pop cost O(log tenants) and idle tenants cost nothing; requests are kept
// in intrusive lists, so steady-state Push, Pop and Done do not allocate.
//
// # Batches
//
// Pop(maxRows, maxCost) takes requests in tag order while the batch fits in
// maxRows sequences and maxCost tokens. It stops at the first request that
// does not fit instead of skipping ahead to a smaller one, so packing never
// reorders service; it always takes at least one request, so an oversized
// request still runs (alone). Oldest tells the actor how long the oldest
// request has waited, for its bound on how long a batch may wait to fill.
//
// # Limits and load shedding
//
// Push admits or refuses at once; nothing waits unbounded:
//
//   - TenantConfig.MaxInflight bounds a tenant's queued plus running
//     requests (ErrTenantLimit); Done and Remove free slots.
//   - TenantConfig.RatePerSec and Burst form a token bucket on admissions
//     (ErrRateLimited), on the injectable clock given to New.
//   - Config.MaxQueuedPerTenant and Config.MaxQueued bound waiting requests
//     per tenant and in all (ErrQueueFull), so memory stays bounded however
//     hard the queue is overloaded, and one tenant cannot fill the queue
//     for everyone.
//
// Remove drops waiting requests, e.g. of callers that gave up, and
// re-tags their tenant as if they had never arrived. Stats and Tenant report
// per-tenant queued, running, served requests and cost, and refusals by
// reason.
package sched
