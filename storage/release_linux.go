package storage

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ReleasePages drops this process's mappings of the pages of the store's
// files that it has touched, and returns how many bytes of address space
// it advised. Badger memory-maps its value log and tables (MAP_SHARED), so
// every blob read once — 10,000 params blobs loaded into a device's host
// tier, say — stays mapped and counts in the process's RSS although the
// data now lives in the host tier and the OS page cache. MADV_DONTNEED on a
// shared file mapping only unmaps: the data stays in the page cache (dirty
// pages are written back as usual) and a later read faults it back in, so
// this is safe while Badger runs. Callers rate-limit it (it reads
// /proc/self/maps).
func (s *Store) ReleasePages() (int64, error) {
	if s.dir == "" {
		return 0, nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	prefix := s.dir + string(os.PathSeparator)
	var total int64
	sc := bufio.NewScanner(bytes.NewReader(maps))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 || !strings.HasPrefix(f[5], prefix) || !strings.Contains(f[1], "s") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), syscall.MADV_DONTNEED); errno == 0 {
			total += int64(end - start)
		}
	}
	return total, sc.Err()
}
