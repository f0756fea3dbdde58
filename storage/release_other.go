//go:build !linux

package storage

// ReleasePages is a no-op off Linux.
func (s *Store) ReleasePages() (int64, error) { return 0, nil }
