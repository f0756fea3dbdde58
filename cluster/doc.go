// Package cluster holds what makes SMILE nodes one cluster: membership (a
// protoactor-go ClusterProvider on hashicorp/memberlist, gossip.go), SMILE's
// own identity lookup for vPLM actors (rendezvous hashing with bounded load
// and affinity, placement.go), the Raft replica of the catalog
// (hashicorp/raft over Badger: raft.go, propose.go, peer.go), the node
// (node.go: actor system, device actors, the vPLM kind, joins, graceful
// leave) and client members (client.go).
package cluster
