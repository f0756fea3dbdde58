// Package actorclient is a Go client of a SMILE cluster that joins it: it
// runs a protoactor client member (cluster.StartClient: an actor system
// and a gossip member that hosts no vPLM) and talks to the nodes over
// protoactor, not HTTP.
//
// Inference goes straight to the vPLM's actor, found by model id through
// the cluster's identity lookup (actors.Caller: resent to the new
// activation when the one it reached stops, and by the client when the
// member hosting it leaves the cluster, instead of waiting for protoactor
// to give that member up). Everything else goes to the
// service actor (actors.ServiceActorName) of a live serving member, best
// first: when one is unreachable, overloaded or slow, the next is tried,
// with backoff, until the caller's deadline. A create or delete resent
// after a try that may have been applied is resolved: a create answered
// already_exists reads the entry back and succeeds when it is the one
// asked for; a delete answered not_found succeeds. Training jobs are the
// node's own that started them: Train polls the job there until it ends.
//
// Errors carry the stable codes of package actors (actors.Code; test with
// errors.Is against actors.ErrNotFound and the others), whether the node
// answered them or the client concluded them (no member reachable:
// unavailable; the deadline passed: timeout).
package actorclient
