package sched

// Stats is a snapshot of the queue's counters.
type Stats struct {
	Queued  int // requests waiting
	Running int // requests popped and not yet Done
	// VirtualTime is the system virtual time V (it restarts at 0 whenever
	// the queue drains).
	VirtualTime float64
	// Rejected counts refused Pushes, all tenants together.
	Rejected Rejections
	// Tenants holds every tenant the queue knows, by name.
	Tenants map[string]TenantStats
}

// TenantStats are one tenant's counters since it was first seen.
type TenantStats struct {
	Config     TenantConfig // in force, defaults filled
	Configured bool         // set by SetTenant rather than Config.DefaultTenant
	Queued     int
	Running    int
	// Served and ServedCost count requests popped (dispatched to the
	// device) and their total Cost: the tenant's measured share.
	Served, ServedCost int64
	// Removed counts waiting requests dropped by Remove.
	Removed  int64
	Rejected Rejections
}

// Rejections counts refused Pushes by reason.
type Rejections struct {
	QueueFull, TenantLimit, RateLimited, BadRequest int64
}

// Total is the number of refused Pushes.
func (r Rejections) Total() int64 {
	return r.QueueFull + r.TenantLimit + r.RateLimited + r.BadRequest
}

// Stats returns a snapshot of every counter. It allocates a map of all
// tenants: for a metrics scrape, not the hot path (see Tenant).
func (q *Queue) Stats() Stats {
	s := Stats{
		Queued:      q.waiting,
		Running:     q.running,
		VirtualTime: q.vtime,
		Rejected:    q.rejected,
		Tenants:     make(map[string]TenantStats, len(q.tenants)),
	}
	for name, t := range q.tenants {
		s.Tenants[name] = t.stats()
	}
	return s
}

// Tenant returns one tenant's counters without allocating; false if the
// queue has never seen it.
func (q *Queue) Tenant(name string) (TenantStats, bool) {
	t, ok := q.tenants[name]
	if !ok {
		return TenantStats{}, false
	}
	return t.stats(), true
}

func (t *tenant) stats() TenantStats {
	return TenantStats{
		Config:     t.cfg,
		Configured: t.configured,
		Queued:     t.queued,
		Running:    t.running,
		Served:     t.served,
		ServedCost: t.servedCost,
		Removed:    t.removed,
		Rejected:   t.rejected,
	}
}
