package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// protoactor-go's gossiper starts a throttle goroutine that nothing stops
// (cluster.NewThrottle in StartGossiping); everything of ours must stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/cluster.(*Gossiper).StartGossiping.NewThrottle.func3.1"))
}
