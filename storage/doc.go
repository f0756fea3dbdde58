// Package storage is SMILE's storage appliance.
//
// Store is a Badger database holding the catalog (vPLMs, tenants with their
// usage and quotas, API keys, cluster nodes; changed only through catalog
// commands: Catalog.ApplyEntries, the state machine the Raft log
// replicates, or Apply for a single node) and
// content-addressed blobs (adapter and head params), each named by the
// sha256 of its bytes and checked against it on every read. Blobs and Refs
// are the older file-system store that still holds backbones (hundreds of
// megabytes each, too big for one Badger value) and their names.
//
// # Key layout
//
// One keyspace, split by prefix (docs/storage.md has the full account):
//
//	c/v/<id>             VPLM, protobuf (deterministic encoding)
//	c/i/<tenant>/<id>    empty; the per-tenant index behind List(tenant, ...)
//	c/t/<name>           Tenant, protobuf
//	c/u/<tenant>         TenantUsage, protobuf: the tenant's vPLMs and params
//	                     bytes; absent when it holds nothing
//	c/k/<key id>         APIKey, protobuf (only the sha256 of the secret)
//	c/n/<node id>        NodeInfo, protobuf: a cluster member's addresses
//	r/<hex>              uint64 big-endian: how many vPLMs have params_digest
//	                     sha256:<hex>; absent means none
//	b/<hex>              blob bytes; <hex> is the sha256 of the value
//	g/<hex>              pending-blob marker: put time (Unix ns) and size,
//	                     two uint64 big-endian; GC sweeps unreferenced blobs
//	                     whose marker is older than its grace period
//	m/applied            the Raft position ApplyEntries reached: entry index
//	                     and commands of it done, two uint64 big-endian
//	m/restore            one byte, the phase of a Restore's swap in progress
//	z/<catalog key>      a Restore's staged record
//	j/<job id>           TrainJob, protobuf: a training job's record
//	k/<job id>           the job's last checkpoint (resume after a crash)
//	x/<cache key>/...    the trainer's representation cache: a header,
//	                     fp16 chunks, and a completion marker (see Records
//	                     in kv.go)
//	t/<table id>/...     a PLOT table's manifest and n-gram list (records)
//	p/<backbone>\x00<cut><n-gram key>
//	                     one PLOT table entry, shared by every table of the
//	                     backbone and cut (see plot.go)
//	l/<index>            a Raft log entry (RaftStore); <index> is 8 bytes
//	                     big-endian, so key order is log order; the value
//	                     is the versioned encoding in raftstore.go
//	s/<key>              a Raft stable value (current term, last vote)
//
// Ids and tenant names never contain '/' (see ValidID), so the prefixes
// cannot collide. The replicated catalog is c/ and r/: what Hash covers
// and what a Snapshot carries, with m/applied besides. Everything else is
// the node's own: blobs (replicated by the cluster's own fetching, not by
// the catalog), GC markers, the Raft log and stable store, training and
// PLOT records. A reference count is changed in the same transaction as
// the catalog command that changes it; when it reaches zero (Delete, or a
// NewVersion that moves off the blob) the blob gets a GC pending marker.
// Those blobs, and blobs put but never committed to the catalog, are swept
// by GC after a grace period.
//
// # Locks
//
// Store.mu (shared by every operation, exclusive in Close) is taken before
// Store.applyMu (held by Catalog.Apply, ApplyBatch, ApplyEntries, Restore
// and RestoreBackup for the whole call), which is taken before
// Store.swapMu (exclusive while Restore swaps the staged catalog in,
// shared by catalog readers, Snapshot and Backup while they open their
// transaction); never the other way round. Code holding Store.mu uses the
// Badger handle directly, never a method that takes Store.mu again (a
// pending Close would deadlock it).
package storage
