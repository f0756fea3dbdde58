package actors

import (
	"testing"

	"go.uber.org/goleak"
)

// protoactor-go's dead-letter throttle starts a goroutine that nothing
// stops (actor.NewThrottle); everything of ours must stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}
