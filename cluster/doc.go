// Package cluster will hold membership and placement: a hashicorp/memberlist
// ClusterProvider for protoactor-go, SMILE's own identity lookup (rendezvous
// hashing with bounded load), the Raft node (hashicorp/raft) that replicates
// the catalog, and joins and leaves. Nothing lives here yet: the storage and
// cluster issues build it.
package cluster
