//go:build !unix

package safetensors

import (
	"fmt"
	"os"
)

// Open reads the file at path and parses it (no memory mapping on this
// platform).
func Open(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: open: %w", err)
	}
	return Parse(path, data)
}
