package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// protoactor-go starts throttle goroutines that nothing stops (its
// gossiper's, its gossip actor's and its dead letters', actor.NewThrottle);
// everything of ours must stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/cluster.(*Gossiper).StartGossiping.NewThrottle.func3.1"),
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"),
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/cluster.NewGossipActor.NewThrottleWithLogger.func2.1"),
		// protoactor's remote leaves its gRPC connections to peers that
		// went away redialling (2s sleeps) after its shutdown.
		goleak.IgnoreAnyFunction("github.com/asynkron/protoactor-go/remote.(*endpointWriter).initialize"),
		goleak.IgnoreTopFunction("google.golang.org/grpc.(*addrConn).resetTransport"),
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		// Replica.wait's goroutines left on futures Raft abandoned at shutdown.
		goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*deferError).Error"))
}
