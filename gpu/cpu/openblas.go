//go:build cgo && !purego

package cpu

/*
#cgo LDFLAGS: -lopenblas
#include <cblas.h>
*/
import "C"

import "unsafe"

const haveOpenBLAS = true

// blasSetNumThreads sets OpenBLAS's process-wide thread count; only
// blasThreads calls it.
func blasSetNumThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

// blasNumThreads is OpenBLAS's thread count now (for tests).
func blasNumThreads() int { return int(C.openblas_get_num_threads()) }

// blasSgemm runs g through cblas_sgemm. g has been validated: m, n, k >= 1
// and every leading dimension is at least the stored row length, so
// OpenBLAS never reaches its error handler (which prints and returns).
// A call over blasSerialMNK multiply-adds must hold blasThreads.
func blasSgemm(g *gemmArgs) {
	ta, tb := uint32(C.CblasNoTrans), uint32(C.CblasNoTrans)
	if g.tA {
		ta = C.CblasTrans
	}
	if g.tB {
		tb = C.CblasTrans
	}
	C.cblas_sgemm(C.CblasRowMajor, C.enum_CBLAS_TRANSPOSE(ta), C.enum_CBLAS_TRANSPOSE(tb),
		C.blasint(g.m), C.blasint(g.n), C.blasint(g.k),
		C.float(g.alpha), (*C.float)(unsafe.Pointer(unsafe.SliceData(g.a))), C.blasint(g.lda),
		(*C.float)(unsafe.Pointer(unsafe.SliceData(g.b))), C.blasint(g.ldb),
		C.float(g.beta), (*C.float)(unsafe.Pointer(unsafe.SliceData(g.c))), C.blasint(g.ldc))
}

// blasInfo describes the linked library, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ... (core: Zen)".
func blasInfo() string {
	return C.GoString(C.openblas_get_config()) + " (core: " + C.GoString(C.openblas_get_corename()) + ")"
}
