// Package storage is SMILE's storage appliance.
//
// Store is a Badger database holding the catalog (vPLMs and tenants, changed
// only through Catalog.Apply, the state machine the Raft log replicates) and
// content-addressed blobs (adapter and head params), each named by the
// sha256 of its bytes and checked against it on every read. Blobs and Refs
// are the older file-system store that still holds backbones (hundreds of
// megabytes each, too big for one Badger value) and their names.
//
// # Key layout
//
// One keyspace, split by prefix:
//
//	c/v/<id>             VPLM, protobuf (deterministic encoding)
//	c/i/<tenant>/<id>    empty; the per-tenant index behind List(tenant, ...)
//	c/t/<name>           Tenant, protobuf
//	b/<hex>              blob bytes; <hex> is the sha256 of the value
//	r/<hex>              uint64 big-endian: how many vPLMs have params_digest
//	                     sha256:<hex>; absent means none
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
// cannot collide. l/ and s/ are the node's own Raft state, not part of the
// replicated catalog: a catalog snapshot or backup leaves them out. A
// reference count is changed in the same transaction as the catalog command
// that changes it; when it reaches zero (Delete, or a
// NewVersion that moves off the blob) the blob is deleted with it. Blobs put
// but never committed to the catalog have no count and stay until
// DeleteBlob; a garbage collector (a later issue) will sweep them.
//
// # Locks
//
// Store.mu (shared by every operation, exclusive in Close) is taken before
// Store.applyMu (held by Catalog.Apply and ApplyBatch for the whole batch),
// never the other way round.
package storage
