package sched

import (
	"fmt"
	"math"
)

// Config bounds the queue as a whole. Zero fields take the defaults of
// DefaultConfig, so Config{} is valid.
type Config struct {
	// MaxQueued bounds the requests waiting, all tenants together; a Push
	// beyond it fails with ErrQueueFull. Memory stays bounded under any
	// overload: the excess is shed, never queued. Default 4096.
	MaxQueued int
	// MaxQueuedPerTenant bounds one tenant's waiting requests, so a single
	// flooding tenant cannot fill MaxQueued and shed everyone else's load.
	// Default 1024.
	MaxQueuedPerTenant int
	// DefaultTenant applies to every tenant that SetTenant never named.
	DefaultTenant TenantConfig
}

// TenantConfig is one tenant's virtual processor: its share of the device
// and its admission limits. Zero fields take defaults (Weight 1, no
// inflight bound, no rate bound, Burst derived from RatePerSec).
type TenantConfig struct {
	// Weight is the tenant's share of the device relative to the other
	// backlogged tenants: weights 1 and 3 get a quarter and three quarters
	// of the served cost while both have work waiting. Must be > 0 and
	// finite; 0 means 1.
	Weight float64
	// MaxInflight bounds the tenant's requests queued plus running; a Push
	// beyond it fails with ErrTenantLimit until Done or Remove frees a slot.
	// 0 means unlimited.
	MaxInflight int
	// RatePerSec is the token-bucket admission rate in requests per second;
	// a Push with the bucket empty fails with ErrRateLimited. 0 means
	// unlimited.
	RatePerSec float64
	// Burst is the bucket size: how many requests may be admitted at once
	// after a quiet period. 0 means max(1, ceil(RatePerSec)).
	Burst int
}

const (
	defaultMaxQueued          = 4096
	defaultMaxQueuedPerTenant = 1024
)

// DefaultConfig returns a Config with the documented defaults: 4096 waiting
// requests in all, 1024 per tenant, and tenants of weight 1 with no inflight
// or rate bound.
func DefaultConfig() Config {
	return Config{
		MaxQueued:          defaultMaxQueued,
		MaxQueuedPerTenant: defaultMaxQueuedPerTenant,
		DefaultTenant:      TenantConfig{Weight: 1},
	}
}

// Validate reports a negative bound or an invalid DefaultTenant, wrapping
// ErrBadConfig.
func (c Config) Validate() error {
	if c.MaxQueued < 0 {
		return fmt.Errorf("%w: MaxQueued %d is negative", ErrBadConfig, c.MaxQueued)
	}
	if c.MaxQueuedPerTenant < 0 {
		return fmt.Errorf("%w: MaxQueuedPerTenant %d is negative", ErrBadConfig, c.MaxQueuedPerTenant)
	}
	if err := c.DefaultTenant.Validate(); err != nil {
		return fmt.Errorf("DefaultTenant: %w", err)
	}
	return nil
}

// Validate reports a negative, NaN or infinite field, wrapping ErrBadConfig.
func (tc TenantConfig) Validate() error {
	switch {
	case math.IsNaN(tc.Weight) || math.IsInf(tc.Weight, 0) || tc.Weight < 0:
		return fmt.Errorf("%w: Weight %v must be a finite number > 0", ErrBadConfig, tc.Weight)
	case tc.MaxInflight < 0:
		return fmt.Errorf("%w: MaxInflight %d is negative", ErrBadConfig, tc.MaxInflight)
	case math.IsNaN(tc.RatePerSec) || math.IsInf(tc.RatePerSec, 0) || tc.RatePerSec < 0:
		return fmt.Errorf("%w: RatePerSec %v must be a finite number >= 0", ErrBadConfig, tc.RatePerSec)
	case tc.Burst < 0:
		return fmt.Errorf("%w: Burst %d is negative", ErrBadConfig, tc.Burst)
	}
	return nil
}

// withDefaults fills zero fields; c must be valid.
func (c Config) withDefaults() Config {
	if c.MaxQueued == 0 {
		c.MaxQueued = defaultMaxQueued
	}
	if c.MaxQueuedPerTenant == 0 {
		c.MaxQueuedPerTenant = defaultMaxQueuedPerTenant
	}
	c.DefaultTenant = c.DefaultTenant.withDefaults()
	return c
}

// withDefaults fills zero fields; tc must be valid.
func (tc TenantConfig) withDefaults() TenantConfig {
	if tc.Weight == 0 {
		tc.Weight = 1
	}
	if tc.Burst == 0 {
		// Capped so an absurd rate cannot overflow int; a bucket of 2^30
		// requests is unlimited in practice.
		tc.Burst = int(max(1, min(math.Ceil(tc.RatePerSec), 1<<30)))
	}
	return tc
}
