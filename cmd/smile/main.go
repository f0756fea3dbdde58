// Command smile is SMILE's one binary: the server (later issues) and the
// command-line client. Today it pulls backbones, embeds texts and runs the
// benchmarks of the compute path.
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
		fmt.Fprintf(os.Stderr, "smile: %v\n", err)
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
// competing for the 2 cores with the Go kernels that run between GEMMs
// (measured: about 2-3% of use-lite throughput). The library reads the
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
