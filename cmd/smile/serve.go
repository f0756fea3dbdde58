package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
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
		rcfg      = cluster.DefaultRaftConfig()
		advertise string
		gcEvery   time.Duration
		gcGrace   time.Duration
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
			// A blob is swept only after the grace: it must outlast the
			// time from a create's put to its commit, or an answered create
			// could name a swept blob.
			if gcEvery < 0 || gcEvery > 0 && gcGrace < time.Minute {
				return usagef("--gc-every %v, --gc-grace %v: want --gc-every >= 0 (0: never) and --gc-grace >= 1m", gcEvery, gcGrace)
			}
			if rcfg.Secret == "" {
				rcfg.Secret = os.Getenv("SMILE_CLUSTER_KEY")
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
			// The HTTP listener comes first: peers reach this node's
			// internal routes (joins, blob pushes) while it starts; the
			// public API answers unavailable until the node is up.
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen %s: %w", addr, err)
			}
			front := &frontHandler{}
			srv := &http.Server{
				Handler:           front,
				ReadHeaderTimeout: 10 * time.Second,
				ReadTimeout:       time.Minute, // a body trickled in forever holds a slot
				IdleTimeout:       2 * time.Minute,
			}
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			defer srv.Close()
			rcfg.APIAddr = ln.Addr().String()
			if advertise != "" {
				rcfg.APIAddr = advertise
			}
			if rcfg.Bind == "" {
				// Beside the API, on the host peers know it by: the
				// listener's port+1, or a free one when the API's is.
				_, port, _ := splitHostPort(ln.Addr().String())
				if _, p, _ := splitHostPort(addr); p == 0 {
					port = -1
				}
				host, _, err := net.SplitHostPort(rcfg.APIAddr)
				if err != nil {
					return usagef("--advertise-addr %q: %v", advertise, err)
				}
				rcfg.Bind = net.JoinHostPort(host, fmt.Sprint(port+1))
			}
			rcfg.Dir = filepath.Join(g.dataDir, "raft")
			cat := storage.NewCatalog(store)
			rp, err := cluster.StartReplica(ctx, rcfg, store, cat)
			if err != nil {
				return err
			}
			defer rp.Close()
			front.replica.Store(rp)
			node.Replica = rp
			n, err := cluster.Start(ctx, node, store, cat, bb)
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
			handler := api.NewHandler(n.Service(), httpCfg, slog.Default())
			srv.RegisterOnShutdown(handler.StopStreams)
			front.api.Store(handler)
			if gcEvery > 0 {
				go collectGarbage(ctx, store, gcEvery, gcGrace)
			}
			if h, _, _ := net.SplitHostPort(rcfg.APIAddr); rcfg.Secret == "" && !isLoopback(h) {
				slog.Warn("no --cluster-key: anyone who reaches the API address can write to the catalog through the internal routes and read backups; keep the Raft port on a private network too",
					"api", rcfg.APIAddr, "raft", rp.RaftAddr())
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "smile: serving http://%s (backbone %s, data %s, actors %s, node %s, raft %s)\n",
				ln.Addr(), backbone, g.dataDir, n.Address(), rp.ID(), rp.RaftAddr())
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
	f.StringVar(&rcfg.ID, "node-id", "", "this node's id in the cluster (default: the one kept in the data directory, made up on first start)")
	f.StringVar(&rcfg.Bind, "raft-addr", "", "Raft address, host:port (default: the --addr host, port+1; port 0 picks a free one, fine for a node that stays alone: peers remember the address)")
	f.StringVar(&advertise, "advertise-addr", "", "HTTP API address peers use to reach this node (default: the --addr listener's)")
	f.StringVar(&rcfg.Join, "join", "", "HTTP API address of a cluster member to join (a node with no state and no --join starts a new cluster)")
	f.StringVar(&rcfg.Secret, "cluster-key", "", "shared key peers must present on internal routes (env SMILE_CLUSTER_KEY)")
	f.IntVar(&rcfg.MaxVoters, "max-voters", rcfg.MaxVoters, "Raft voters; further nodes join as non-voters")
	f.IntVar(&rcfg.Replicas, "blob-replicas", rcfg.Replicas, "nodes that hold each new params blob before its catalog entry commits")
	f.DurationVar(&gcEvery, "gc-every", 10*time.Minute, "sweep unreferenced blobs this often (0: never)")
	f.DurationVar(&gcGrace, "gc-grace", time.Hour, "age before an unreferenced blob is swept (creates in flight keep theirs)")
	return cmd
}

// frontHandler is the HTTP server's handler from the first moment: the
// cluster's routes once the replica runs, the API once the node is up, and
// unavailable until then.
type frontHandler struct {
	replica atomic.Pointer[cluster.Replica]
	api     atomic.Pointer[api.Handler]
}

func (f *frontHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if cluster.IsInternal(r.URL.Path) {
		if rp := f.replica.Load(); rp != nil {
			rp.Handler().ServeHTTP(w, r)
			return
		}
	} else if h := f.api.Load(); h != nil {
		h.ServeHTTP(w, r)
		return
	}
	api.WriteError(w, api.Errorf(api.CodeUnavailable, "the node is starting"))
}

// isLoopback reports whether host names this machine only.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// collectGarbage sweeps unreferenced blobs every interval until ctx ends.
func collectGarbage(ctx context.Context, store *storage.Store, every, grace time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := store.GC(ctx, grace)
		if err != nil {
			slog.Warn("blob garbage collection", "err", err)
			continue
		}
		slog.Info("blob garbage collection", "stats", fmt.Sprintf("%+v", st))
	}
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
