package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/smile-vplm/smile/api"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/storage"
)

// defaultAddr is where `smile serve` listens and the CLI connects.
const defaultAddr = "127.0.0.1:7077"

func newServeCmd(g *globals) *cobra.Command {
	var (
		addr      string
		actorAddr string
		backbone  string
		hostMB    int64
		devMB     int64
		plotMB    int64
		node      = cluster.DefaultNodeConfig()
		httpCfg   = api.DefaultHTTPConfig()
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a single-node SMILE server: actors, embedded Badger, the default backbone and the HTTP API",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			host, port, err := splitHostPort(actorAddr)
			if err != nil {
				return usagef("--actor-addr %q: %v", actorAddr, err)
			}
			node.Host, node.Port = host, port
			node.Device.HostCacheBytes = hostMB << 20
			node.Device.DeviceCacheBytes = devMB << 20
			if plotMB < 0 || plotMB > math.MaxInt64>>20 {
				return usagef("--plot-cache-mb %d: want MiB >= 0", plotMB)
			}
			node.Trainer.Plot.CacheBytes = plotMB << 20
			node.Trainer.DataDir = g.dataDir
			if err := httpCfg.Validate(); err != nil {
				return &usageError{err}
			}
			if err := node.Validate(); err != nil {
				return &usageError{err}
			}
			ctx := cmd.Context()
			bb, err := g.backbone(ctx, backbone)
			if err != nil {
				return err
			}
			// If the node cannot stop its device actors in time, their
			// compute may still use the backbone: leave it to the exit.
			busy := false
			defer func() {
				if !busy {
					bb.Close()
				}
			}()
			store, err := storage.Open(storage.DefaultOptions(filepath.Join(g.dataDir, "db")))
			if err != nil {
				return err
			}
			defer store.Close()
			n, err := cluster.Start(ctx, node, store, storage.NewCatalog(store), bb)
			if err != nil {
				return err
			}
			defer func() {
				sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := n.Close(sctx); err != nil {
					busy = true
					slog.Warn("node close", "err", err)
				}
			}()
			// Training jobs a previous run left unfinished continue from
			// their last checkpoints.
			if err := n.Service().ResumeJobs(ctx); err != nil {
				slog.Warn("resuming training jobs", "err", err)
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen %s: %w", addr, err)
			}
			handler := api.NewHandler(n.Service(), httpCfg, slog.Default())
			srv := &http.Server{
				Handler:           handler,
				ReadHeaderTimeout: 10 * time.Second,
				ReadTimeout:       time.Minute, // a body trickled in forever holds a slot
				IdleTimeout:       2 * time.Minute,
			}
			srv.RegisterOnShutdown(handler.StopStreams)
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			fmt.Fprintf(cmd.ErrOrStderr(), "smile: serving http://%s (backbone %s, data %s, actors %s)\n", ln.Addr(), backbone, g.dataDir, n.Address())
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "smile: shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", defaultAddr, "HTTP API address")
	f.StringVar(&actorAddr, "actor-addr", "127.0.0.1:0", "actor system (protoactor remote) address; port 0 picks one")
	f.StringVar(&backbone, "backbone", "use-lite", "backbone to serve (pulled on first use)")
	f.Int64Var(&hostMB, "host-cache-mb", node.Device.HostCacheBytes>>20, "host memory for resident vPLM params (fp16), MiB")
	f.Int64Var(&devMB, "device-cache-mb", node.Device.DeviceCacheBytes>>20, "device memory for uploaded vPLM params, MiB")
	f.Int64Var(&plotMB, "plot-cache-mb", node.Trainer.Plot.CacheBytes>>20, "host memory for the entries of each PLOT table in use, MiB (the rest is read from storage)")
	f.IntVar(&node.Device.MaxBatchRows, "max-batch-rows", node.Device.MaxBatchRows, "sequences per forward pass")
	f.IntVar(&node.Device.MaxBatchTokens, "max-batch-tokens", node.Device.MaxBatchTokens, "token rows per forward pass")
	f.DurationVar(&node.Device.MaxWait, "max-wait", node.Device.MaxWait, "longest a request holds back a non-full batch on an idle device")
	f.DurationVar(&node.VPLM.PassivateAfter, "passivate-after", node.VPLM.PassivateAfter, "stop a vPLM actor idle this long")
	f.IntVar(&node.VPLM.MaxTexts, "max-texts", node.VPLM.MaxTexts, "texts per request")
	f.IntVar(&node.VPLM.MaxTextBytes, "max-text-bytes", node.VPLM.MaxTextBytes, "bytes per text")
	f.DurationVar(&httpCfg.RequestTimeout, "request-timeout", httpCfg.RequestTimeout, "per-request deadline")
	f.Int64Var(&httpCfg.MaxBodyBytes, "max-body-bytes", httpCfg.MaxBodyBytes, "largest request body")
	f.IntVar(&httpCfg.MaxInflight, "max-http-inflight", httpCfg.MaxInflight, "HTTP requests handled at once; more are answered overloaded")
	return cmd
}

func splitHostPort(s string) (string, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	var port int
	if _, err := fmt.Sscanf(ps, "%d", &port); err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: want 0..65535", ps)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return host, port, nil
}
