//go:build !cgo || purego

package cpu

const haveOpenBLAS = false

func blasSetThreads(int) {}

func blasSgemm(*gemmArgs) { panic("cpu: OpenBLAS is not compiled in") }

func blasInfo() string { return "" }
