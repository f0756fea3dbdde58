package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/smile-vplm/smile/actors"
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
		joins     []string
		leaveWait time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a SMILE node: actors, embedded Badger, the default backbone and the HTTP API; alone, or in a cluster with --join",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			if actorAddr != "" {
				host, port, err := splitHostPort(actorAddr)
				if err != nil {
					return usagef("--actor-addr %q: %v", actorAddr, err)
				}
				if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
					return usagef("--actor-addr %q: peers dial this address: give a host they reach, not %q", actorAddr, host)
				}
				node.Host, node.Port = host, port
			}
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
			vc := node // the gossip address defaults once the API listens
			if vc.Gossip.Bind == "" {
				vc.Gossip.Bind = "127.0.0.1:0"
			}
			if err := vc.Validate(); err != nil {
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
			rcfg.Join = strings.Join(joins, ",")
			node.Join = rcfg.Seeds()
			node.ClusterKey, node.Gossip.Key = rcfg.Secret, rcfg.Secret
			for _, j := range node.Join {
				if _, _, err := net.SplitHostPort(j); err != nil {
					return usagef("--join %q: %v", j, err)
				}
			}
			if leaveWait < 0 {
				return usagef("--leave-timeout %v: want >= 0", leaveWait)
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
				if node.Gossip.Bind == "" {
					gp := port + 2
					if port < 0 {
						gp = 0
					}
					node.Gossip.Bind = net.JoinHostPort(host, fmt.Sprint(gp))
				}
			}
			if node.Gossip.Bind == "" {
				host, _, _ := net.SplitHostPort(rcfg.APIAddr)
				node.Gossip.Bind = net.JoinHostPort(host, "0")
			}
			if err := node.Gossip.Validate(); err != nil {
				return &usageError{err}
			}
			node.APIAddr = rcfg.APIAddr
			if actorAddr == "" { // the advertised API host, a free port
				node.Host, _, _ = net.SplitHostPort(rcfg.APIAddr)
				node.Port = 0
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
				// n is the node of the moment (a restart replaces it).
				sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := n.Close(sctx); err != nil {
					busy = true
					slog.Warn("node close", "err", err)
				}
			}()
			up := func(n *cluster.Node) {
				// Training jobs a previous run left unfinished continue
				// from their last checkpoints.
				if err := n.Service().ResumeJobs(ctx); err != nil {
					slog.Warn("resuming training jobs", "err", err)
				}
				handler := api.NewHandler(n.Service(), httpCfg, slog.Default())
				srv.RegisterOnShutdown(handler.StopStreams)
				front.node.Store(n)
				front.api.Store(handler)
			}
			up(n)
			if gcEvery > 0 {
				go collectGarbage(ctx, store, gcEvery, gcGrace)
			}
			if h, _, _ := net.SplitHostPort(rcfg.APIAddr); rcfg.Secret == "" && !isLoopback(h) {
				slog.Warn("no --cluster-key: anyone who reaches the API address can write to the catalog through the internal routes and read backups, and anyone who reaches the gossip port can join the membership; keep the Raft, gossip and actor ports on a private network too",
					"api", rcfg.APIAddr, "raft", rp.RaftAddr(), "gossip", n.GossipAddr())
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "smile: serving http://%s (backbone %s, data %s, actors %s, node %s, raft %s)\n",
				ln.Addr(), backbone, g.dataDir, n.Address(), rp.ID(), rp.RaftAddr())
			for stop := false; !stop; {
				select {
				case err := <-errc:
					return err
				case <-ctx.Done():
					stop = true
				case <-n.Removed():
					// Peers declared this node dead (a pause, a partition)
					// and blocked its member id: start again under a new one.
					slog.Warn("removed from the cluster: restarting the node with a new identity")
					front.api.Store(nil)
					front.node.Store(nil)
					sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					err := n.Close(sctx)
					cancel()
					if err != nil {
						busy = true
						return fmt.Errorf("restarting the node: %w", err)
					}
					nn, err := cluster.Start(ctx, node, store, cat, bb)
					if err != nil {
						return fmt.Errorf("restarting the node: %w", err)
					}
					n = nn
					up(n)
				}
			}
			// SIGTERM: hand Raft leadership and the vPLMs over, then stop
			// taking requests (those in flight finish, sent on to the
			// vPLMs' new nodes); the node leaves the gossip as it closes.
			lctx, lcancel := context.WithTimeout(context.Background(), leaveWait)
			if err := rp.StepDown(lctx); err != nil {
				slog.Warn("handing Raft leadership over", "err", err)
			}
			handed, err := n.Leave(lctx)
			lcancel()
			slog.Info("leaving the cluster", "vplms_handed_over", handed, "err", err)
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
	f.StringVar(&actorAddr, "actor-addr", "", "actor system (protoactor remote, gRPC) address peers dial, host:port (default: the advertised API host, a free port; port 0 picks one)")
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
	f.StringSliceVar(&joins, "join", nil, "HTTP API addresses of cluster members to join, comma-separated or repeated, tried in turn (a node with no state and no --join starts a new cluster)")
	f.StringVar(&node.Gossip.Bind, "gossip-addr", "", "gossip (memberlist, TCP and UDP) address (default: the Raft host, API port+2; port 0 picks a free one)")
	f.StringVar(&node.Gossip.Advertise, "gossip-advertise-addr", "", "gossip address peers use to reach this node (default: --gossip-addr)")
	f.DurationVar(&leaveWait, "leave-timeout", 10*time.Second, "on SIGTERM, how long handing vPLMs and Raft leadership over may take")
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
	node    atomic.Pointer[cluster.Node]
}

func (f *frontHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/nodes" && r.Method == http.MethodGet {
		if n := f.node.Load(); n != nil {
			cluster.NodesHandler(n).ServeHTTP(w, r)
			return
		}
	}
	if strings.HasPrefix(r.URL.Path, "/v1/jobs/") && f.forwardJob(w, r) {
		return
	}
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

// forwardedHeader marks a request one node forwarded to another (it is not
// forwarded again).
const forwardedHeader = "X-Smile-Forwarded"

// forwardJob sends a request about a training or table job that this node
// does not run to the node that does (jobs run, and are kept, where they
// were started), so that any node answers for any job. It reports whether
// it answered.
func (f *frontHandler) forwardJob(w http.ResponseWriter, r *http.Request) bool {
	n := f.node.Load()
	if n == nil || r.Header.Get(forwardedHeader) != "" {
		return false
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/jobs/"), "/")
	if _, err := n.Service().Job(r.Context(), id); !errors.Is(err, actors.ErrJobNotFound) {
		return false // here, or an error this node answers itself
	}
	// Only to the API addresses the catalog's Raft log names (a node's own
	// PutNode): gossip is open to whoever reaches its port without a key.
	known := map[string]bool{}
	if rp := f.replica.Load(); rp != nil {
		if nodes, err := rp.Catalog().Nodes(); err == nil {
			for _, ni := range nodes {
				known[ni.GetApiAddr()] = true
			}
		}
	}
	self := n.Address()
	for _, m := range n.Members() {
		if m.Actor == self || m.API == "" || !known[m.API] {
			continue
		}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+m.API+"/v1/jobs/"+url.PathEscape(id), nil)
		if err != nil {
			return false
		}
		req.Header.Set(forwardedHeader, "1")
		resp, err := jobProbe.Do(req)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			continue
		}
		p := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: m.API})
		p.FlushInterval = -1 // job events stream
		r.Header.Set(forwardedHeader, "1")
		p.ServeHTTP(w, r)
		return true
	}
	return false
}

// jobProbe asks peers whether they run a job.
var jobProbe = &http.Client{Timeout: time.Second}

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
