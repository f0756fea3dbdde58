package testenv

import (
	"net"
	"testing"
)

// SkipMultiNodeUnderRace skips a test that runs several cluster nodes in
// one process when the race detector is on: protoactor-go's Remote.Start
// sets gRPC's global logger without a lock (grpclog.SetLoggerV2, which must
// not be called once gRPC runs), so a second node starting races with the
// first one's gRPC server by construction. A deployment runs one node per
// process, and the multi-process tests run real `smile serve` processes.
// `make test` runs the in-process multi-node tests again without -race
// (its `multinode` step), so they run in CI all the same.
func SkipMultiNodeUnderRace(t testing.TB) {
	t.Helper()
	if Race {
		t.Skip("several nodes in one process race inside protoactor-go's Remote.Start (grpclog.SetLoggerV2); `make multinode` runs this without -race")
	}
}

// FreeAddr is a loopback address nothing listens on: a port just freed
// (a dial to it is refused until someone takes it).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
