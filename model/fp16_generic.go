//go:build !cgo || !amd64 || purego

package model

// decodeHalves sets dst[i] to the fp16 value in src[2i:2i+2] (little
// endian) and returns the index of the first value that is not finite, or
// -1. len(src) must be 2*len(dst).
func decodeHalves(dst []float32, src []byte) int {
	for i := range dst {
		h := uint16(src[2*i]) | uint16(src[2*i+1])<<8
		if !halfFinite(h) {
			return i
		}
		dst[i] = halfToFloat(h)
	}
	return -1
}

// encodeHalvesFast converts nothing without F16C: EncodeHalves's loop does.
func encodeHalvesFast(dst []byte, src []float32) (int, bool) { return 0, false }
