// Package chaos will hold the fault-injection harness: nemeses (kill, pause,
// partition, slow disk), the invariants checked after each run (no
// acknowledged write lost, a vPLM's answer unchanged by batching) and the
// scenarios run behind the `chaos` build tag. Nothing lives here yet: it
// arrives with the cluster.
package chaos
