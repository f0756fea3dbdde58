//go:build unix

package bert

import "syscall"

// cpuSeconds is the CPU time (user + system) this process has used; on a
// shared machine it tells how much of a benchmark's wall time was ours.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
