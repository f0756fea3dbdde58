// Package storage is SMILE's storage appliance. Today it holds the
// content-addressed blob store on the local file system (backbones are stored
// once, named by the sha256 of their bytes) and the named references to
// them. The storage issue moves both into Badger, beside the catalog,
// adapters, n-gram tables, datasets, representation caches and the Raft log;
// callers only see the Blobs and Refs types, so that move keeps this API.
package storage
