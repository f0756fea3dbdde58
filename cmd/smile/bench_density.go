package main

// `smile bench density`: how many vPLMs one node holds and how fast it
// takes them. It creates N use-lite vPLMs (a rank-64 bottleneck adapter on
// the top layer and a 2-label head, fp16) through the node's real create
// path (Service.Create: params blob, then a catalog command through the
// one-voter Raft on Badger, synced writes), from many goroutines at once as
// clients would; then it closes the node and times a restart until the
// node answers a classify again. One JSON line:
//
//	{"bench":"density","models":N,"create_per_s":..,"disk_bytes_per_vplm":..,"rss_bytes":..,"restart_s":..}
//
// disk_bytes_per_vplm is the data directory's allocated size (Badger and
// Raft, after the node is closed) over N; rss_bytes the process's resident
// set after the creates (backbone included), once the value log's pages
// written through Badger's memory map are released as the node does.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/storage"
)

type densityLine struct {
	Bench        string  `json:"bench"`
	Backbone     string  `json:"backbone"`
	Precision    string  `json:"precision"`
	Models       int     `json:"models"`
	CreatePerS   float64 `json:"create_per_s"`
	DiskPerVPLM  int64   `json:"disk_bytes_per_vplm"`
	RSSBytes     int64   `json:"rss_bytes"`
	RSSAnon      int64   `json:"rss_anon_bytes"`
	RSSFile      int64   `json:"rss_file_bytes"`
	RestartS     float64 `json:"restart_s"`
	ParamsBytes  uint64  `json:"params_blob_bytes"`
	DiskBytes    int64   `json:"disk_bytes"`
	Concurrency  int     `json:"concurrency"`
	Tenants      int     `json:"tenants"`
	CreateS      float64 `json:"create_s"`
	RestartOpenS float64 `json:"restart_open_s"`
	Synced       bool    `json:"synced_writes"`
	Date         string  `json:"date"`
}

// densityNode is one run of the node on a data directory.
type densityNode struct {
	store *storage.Store
	rp    *cluster.Replica
	node  *cluster.Node
	bb    model.Backbone
	srv   *http.Server
}

func startDensityNode(ctx context.Context, g *globals, dir string, log *slog.Logger) (*densityNode, error) {
	d := &densityNode{}
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()
	var err error
	if d.store, err = storage.Open(storage.DefaultOptions(filepath.Join(dir, "db"))); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rc := cluster.DefaultRaftConfig()
	rc.Bind, rc.APIAddr, rc.Dir, rc.Log = "127.0.0.1:0", ln.Addr().String(), filepath.Join(dir, "raft"), log
	cat := storage.NewCatalog(d.store)
	if d.rp, err = cluster.StartReplica(ctx, rc, d.store, cat); err != nil {
		ln.Close()
		return nil, err
	}
	d.srv = &http.Server{Handler: d.rp.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go d.srv.Serve(ln)
	if d.bb, err = g.backbone(ctx, "use-lite"); err != nil {
		return nil, err
	}
	nc := cluster.DefaultNodeConfig()
	nc.Replica, nc.Log, nc.Trainer.DataDir = d.rp, log, g.dataDir
	if d.node, err = cluster.Start(ctx, nc, d.store, cat, d.bb); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

func (d *densityNode) close() error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if d.node != nil {
		errs = append(errs, d.node.Close(ctx))
	}
	if d.srv != nil {
		d.srv.Close()
	}
	if d.rp != nil {
		errs = append(errs, d.rp.Close())
	}
	if d.bb != nil {
		d.bb.Close()
	}
	if d.store != nil {
		errs = append(errs, d.store.Close())
	}
	return errors.Join(errs...)
}

func benchDensity(ctx context.Context, g *globals, o *benchOpts, w io.Writer) error {
	n := o.models
	if n == 0 {
		n = 100_000
		if o.quick {
			n = 2_000
		}
	}
	if n < 1 || o.concurrency < 1 || o.concurrency > 4096 {
		return usagef("--models %d and --concurrency %d: want >= 1 and 1..4096", n, o.concurrency)
	}
	prec, err := model.ParsePrecision(o.precision)
	if err != nil {
		return usagef("--precision %q: want fp16 or int8", o.precision)
	}
	base := o.densityDir
	if base == "" {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "smile-density-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := startDensityNode(ctx, g, dir, log)
	if err != nil {
		return err
	}
	defer func() {
		if d != nil {
			d.close()
		}
	}()
	top := d.bb.Info().Layers
	const tenants = 100
	var next, failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var paramsBytes atomic.Uint64
	start := time.Now()
	lastReport := atomic.Int64{}
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				v, err := d.node.Service().Create(ctx, actors.CreateSpec{
					ID: fmt.Sprintf("m%07d", i), Tenant: fmt.Sprintf("t%03d", i%tenants), Task: smilepb.Task_TASK_CLASSIFY,
					Labels: []string{"neg", "pos"}, Adapter: model.AdapterBottleneck, Rank: 64, Layers: []int{top}, Precision: prec,
				})
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				paramsBytes.Store(v.GetParamsBytes())
				if el := time.Since(start); int64(el/(10*time.Second)) > lastReport.Load() {
					lastReport.Store(int64(el / (10 * time.Second)))
					fmt.Fprintf(os.Stderr, "density: %d of %d created, %.0f/s\n", i+1, n, float64(i+1)/el.Seconds())
				}
			}
		}()
	}
	wg.Wait()
	createS := time.Since(start).Seconds()
	if err := ctx.Err(); err != nil {
		return err
	}
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("bench density: %d of %d creates failed; first: %w", f, n, firstErr)
	}
	// What the node's own release (after blob writes, at most once a
	// second) leaves: the value log pages written through Badger's map
	// are file pages, not the process's memory.
	if _, err := d.store.ReleasePages(); err != nil {
		return err
	}
	rss := rssAfterGC()
	if err := d.close(); err != nil {
		return err
	}
	d = nil
	disk, err := allocatedBytes(dir)
	if err != nil {
		return err
	}
	// Restart: everything a serving node does before it answers.
	rstart := time.Now()
	d, err = startDensityNode(ctx, g, dir, log)
	if err != nil {
		return fmt.Errorf("bench density: restart: %w", err)
	}
	openS := time.Since(rstart).Seconds()
	id := fmt.Sprintf("m%07d", n/2)
	if _, err := d.node.Service().Classify(ctx, id, []string{"the restart took no time at all"}); err != nil {
		return fmt.Errorf("bench density: classify %s after restart: %w", id, err)
	}
	restartS := time.Since(rstart).Seconds()
	if c, err := storage.NewCatalog(d.store).Count(); err != nil || c != n {
		return fmt.Errorf("bench density: %d vPLMs in the catalog after restart, want %d (%v)", c, n, err)
	}
	return emit(w, densityLine{
		Bench: "density", Backbone: "use-lite", Precision: prec.String(), Models: n, CreatePerS: round(float64(n)/createS, 1),
		DiskPerVPLM: disk / int64(n), RSSBytes: rss.total, RSSAnon: rss.anon, RSSFile: rss.file, RestartS: round(restartS, 3), ParamsBytes: paramsBytes.Load(),
		DiskBytes: disk, Concurrency: o.concurrency, Tenants: tenants, CreateS: round(createS, 2),
		RestartOpenS: round(openS, 3), Synced: true, Date: time.Now().UTC().Format(time.RFC3339),
	})
}

// allocatedBytes is the disk space the files under dir take (blocks
// allocated, not apparent sizes: Badger preallocates and truncates).
func allocatedBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += fi.Size()
		}
		return nil
	})
	return total, err
}
