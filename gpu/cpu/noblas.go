//go:build !cgo || purego

package cpu

const haveOpenBLAS = false

func blasSetNumThreads(int) {}

func blasNumThreads() int { return 0 }

func blasSgemm(*gemmArgs) { panic("cpu: OpenBLAS is not compiled in") }

func blasInfo() string { return "" }
