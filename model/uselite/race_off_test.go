//go:build !race

package uselite_test

const raceEnabled = false
