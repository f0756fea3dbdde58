//go:build race

package model_test

// raceEnabled: the race detector changes allocation counts (sync.Pool
// drops items at random), so allocation checks skip under it.
const raceEnabled = true
