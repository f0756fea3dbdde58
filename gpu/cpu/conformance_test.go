package cpu

import (
	"testing"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/gpu/gputest"
)

func newTestDevice(t testing.TB, backend string, threads int) *Device {
	t.Helper()
	d, err := New(Config{Threads: threads, Backend: backend})
	if err != nil {
		t.Fatalf("New(%s): %v", backend, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestConformance(t *testing.T) {
	for _, backend := range Available() {
		for _, threads := range []int{1, 2} {
			t.Run(backend+"/threads="+string(rune('0'+threads)), func(t *testing.T) {
				gputest.Run(t, func(t *testing.T) gpu.Device { return newTestDevice(t, backend, threads) })
			})
		}
	}
}
