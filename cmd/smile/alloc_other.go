//go:build !unix

package main

import "io/fs"

// allocated is the disk space a file takes (its size, where the block
// count is not known).
func allocated(fi fs.FileInfo) int64 { return fi.Size() }
