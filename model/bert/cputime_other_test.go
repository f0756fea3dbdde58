//go:build !unix

package bert

func cpuSeconds() float64 { return 0 }
