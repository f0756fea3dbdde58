//go:build race

package sched

// raceEnabled: the race detector allocates, so allocation checks skip.
const raceEnabled = true
