// Command smile is SMILE's one binary: the server (`smile serve`), the
// command-line client of its HTTP API (create, ls, show, rm, classify, embed
// --model, tenant), and local tools: pull and import backbones, embed texts
// in-process, and the benchmarks of the compute path.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	reexecWithBLASTimeout()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := newRootCmd()
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "smile: %s\n", formatError(err))
		var ue *usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// reexecWithBLASTimeout restarts the process once with
// OPENBLAS_THREAD_TIMEOUT=4 unless the caller set it. OpenBLAS worker threads
// otherwise spin in sched_yield for about 2^28 cycles after every call,
// competing for the 2 cores with the Go kernels that run between GEMMs.
// Measured by alternating `smile bench forward --backbone use-lite --quick`
// with and without OPENBLAS_THREAD_TIMEOUT=28 (OpenBLAS's default): the
// same sequences/s within noise, about 15% less CPU per text
// (seq_per_cpu_s 331-334 -> 385-391). The library reads the
// variable when it is loaded, before main runs, so setting it here needs a
// fresh exec. If exec fails, run on as we are.
func reexecWithBLASTimeout() {
	if _, set := os.LookupEnv("OPENBLAS_THREAD_TIMEOUT"); set {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, os.Args, append(os.Environ(), "OPENBLAS_THREAD_TIMEOUT=4"))
}
