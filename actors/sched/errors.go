package sched

import "errors"

// Errors of the scheduler. Push and SetTenant wrap them with detail naming
// the tenant and the limit at fault; test with errors.Is. The device actor
// maps each to a wire code: ErrQueueFull, ErrTenantLimit and ErrRateLimited
// are "try again later" (load shed, nothing was queued), ErrBadRequest and
// ErrBadConfig are the caller's mistake.
var (
	// ErrQueueFull: the queue as a whole (Config.MaxQueued) or the tenant's
	// share of it (Config.MaxQueuedPerTenant) is full.
	ErrQueueFull = errors.New("sched: queue full")
	// ErrTenantLimit: the tenant already has TenantConfig.MaxInflight
	// requests queued or running.
	ErrTenantLimit = errors.New("sched: tenant limit reached")
	// ErrRateLimited: the tenant's token bucket (TenantConfig.RatePerSec,
	// Burst) is empty.
	ErrRateLimited = errors.New("sched: rate limited")
	// ErrBadRequest: a nil request, an empty tenant name, Cost or Rows below
	// 1, or a request that is already queued or running.
	ErrBadRequest = errors.New("sched: bad request")
	// ErrBadConfig: a Config or TenantConfig that Validate rejects.
	ErrBadConfig = errors.New("sched: bad configuration")
)
