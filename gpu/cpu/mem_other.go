//go:build !linux

package cpu

func physicalMemory() int64 { return 0 }
