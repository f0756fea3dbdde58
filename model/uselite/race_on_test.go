//go:build race

package uselite_test

// raceEnabled: the race detector slows the pure-Go GEMM about tenfold.
const raceEnabled = true
