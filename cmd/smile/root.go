package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/model"
)

// usageError marks a bad flag or argument (exit status 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return &usageError{fmt.Errorf(format, a...)} }

// usageArgs makes a cobra argument check report a usage error (exit 2).
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{fmt.Errorf("%s: %w (see smile %s --help)", cmd.Name(), err, cmd.Name())}
		}
		return nil
	}
}

// groupHelp runs a command that only groups others (`smile data`,
// `smile table`): its help. Being runnable, it refuses an unknown
// subcommand as a usage error (its Args) instead of printing help with
// status 0.
func groupHelp(cmd *cobra.Command, args []string) error { return cmd.Help() }

// globals are the persistent flags shared by every command.
type globals struct {
	dataDir  string
	backend  string
	threads  int
	logLevel string
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "smile",
		Short:         "SMILE hosts thousands of customized language models on shared hardware",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
				return usagef("--log-level %q: want debug, info, warn or error", g.logLevel)
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
			if g.threads < 0 || g.threads > cpu.MaxThreads {
				return usagef("--threads %d: want 0 (all cores) to %d", g.threads, cpu.MaxThreads)
			}
			switch g.backend {
			case "auto", "openblas", "purego":
			default:
				return usagef("--backend %q: want auto, openblas or purego", g.backend)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.dataDir, "data-dir", defaultDataDir(), "data directory (env SMILE_DATA_DIR)")
	pf.StringVar(&g.backend, "backend", "auto", "CPU backend: auto, openblas or purego")
	pf.IntVar(&g.threads, "threads", 0, "compute threads (0: all cores)")
	pf.StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.AddCommand(newVersionCmd(), newPullCmd(g), newImportCmd(g), newEmbedCmd(g), newBenchCmd(g), newServeCmd(g),
		newCreateCmd(), newListCmd(), newShowCmd(), newRemoveCmd(), newClassifyCmd(), newTenantCmd(), newDataCmd(g))
	root.AddCommand(newTrainCmd(), newJobsCmd(), newJobCmd(), newCancelCmd(), newEvalCmd(), newTableCmd(), newBackupCmd(), newRestoreCmd(g), newNodesCmd())
	return root
}

// defaultDataDir is $SMILE_DATA_DIR, else ~/.smile.
func defaultDataDir() string {
	if d := os.Getenv("SMILE_DATA_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".smile"
	}
	return filepath.Join(home, ".smile")
}

func (g *globals) device() (gpu.Device, error) {
	return cpu.New(cpu.Config{Threads: g.threads, Backend: g.backend})
}

func (g *globals) zoo() (*zoo.Zoo, error) { return zoo.Open(g.dataDir) }

// backbone loads a backbone by name onto a new device, pulling it first if
// it is not stored yet (the default is fetched on first use).
func (g *globals) backbone(ctx context.Context, name string) (model.Backbone, error) {
	z, err := g.zoo()
	if err != nil {
		return nil, err
	}
	if _, err := z.Ensure(ctx, name, stderrProgress); err != nil {
		return nil, err
	}
	dev, err := g.device()
	if err != nil {
		return nil, err
	}
	return z.Load(dev, name)
}

// stderrProgress prints pull stages for a person watching.
func stderrProgress(stage, detail string) {
	fmt.Fprintf(os.Stderr, "%-8s %s\n", stage, detail)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, Go toolchain and compiled-in backends",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "smile %s (%s, %s/%s) backends: %s\n", version, runtime.Version(),
				runtime.GOOS, runtime.GOARCH, strings.Join(cpu.Available(), ", "))
			return nil
		},
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"
