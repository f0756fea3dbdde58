package storage

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// madvPageout is MADV_PAGEOUT (Linux 5.4+), which syscall does not name.
const madvPageout = 21

// ReleasePages asks the kernel to reclaim the pages of the store's value
// log and tables that this process has mapped, and returns how many bytes
// of address space it advised. Badger memory-maps those files (MAP_SHARED),
// so every blob read once — 10,000 params blobs loaded into a device's host
// tier, say — stays mapped and counts in the process's RSS although the
// data now lives in the host tier. MADV_PAGEOUT writes dirty pages back and
// drops clean ones; it never destroys data, which matters because Badger
// may unmap (and the kernel reuse) a range between the read of
// /proc/self/maps and the advice: on anonymous memory that landed there,
// PAGEOUT at worst swaps it out. (MADV_DONTNEED would zero it.) Memtable
// files (.mem) are left alone. Callers rate-limit it (it reads
// /proc/self/maps). On kernels without MADV_PAGEOUT it does nothing.
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
		if len(f) < 6 || !strings.HasPrefix(f[5], prefix) || !strings.Contains(f[1], "s") ||
			!(strings.HasSuffix(f[5], ".vlog") || strings.HasSuffix(f[5], ".sst")) {
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
		_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), madvPageout)
		if errno == syscall.EINVAL {
			return total, nil // an old kernel: nothing to do
		}
		if errno == 0 {
			total += int64(end - start)
		}
	}
	return total, sc.Err()
}
