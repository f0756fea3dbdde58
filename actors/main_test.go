package actors

import (
	"testing"

	"go.uber.org/goleak"
)

// protoactor-go's dead-letter and gossiper throttles start goroutines that
// nothing stops (actor.NewThrottle; the gossiper's comes with the cluster
// the trainer tests start); everything of ours must stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"),
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/cluster.(*Gossiper).StartGossiping.NewThrottle.func3.1"))
}
