// Package gpu defines the Device interface every compute backend implements:
// device memory for float32 matrices, GEMM (plain, strided-batched and
// segmented, the last being how rows of different vPLMs meet their own
// adapters), and the kernels a transformer needs.
//
// Backends live in sub-packages: gpu/cpu (the default: OpenBLAS through cgo,
// or pure Go under the `purego` build tag or without cgo) and, later,
// gpu/cuda behind the `cuda` build tag. This package imports nothing of ours.
//
// Shared helpers for backends: CheckMat, GemmDims, CheckBatch, Overlap,
// CheckDisjoint, CheckOffsets and CheckIDs apply the same shape and bounds
// rules everywhere, so every backend rejects the same inputs with the same
// sentinel errors. BenchGemm measures any device's GEMM throughput. The
// conformance suite every backend must pass is gpu/gputest.
package gpu
