//go:build !race

// The examples run a node and a client in one process, which races inside
// protoactor-go under the race detector (testenv.SkipMultiNodeUnderRace):
// `make multinode` runs them without it.

package actorclient_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/actorclient"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/cluster"
	"github.com/smile-vplm/smile/gpu/cpu"
	"github.com/smile-vplm/smile/internal/testenv"
	"github.com/smile-vplm/smile/internal/zoo"
	"github.com/smile-vplm/smile/storage"
)

var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// A client joins a cluster (here one node, started in this process as
// `smile serve` starts it) through a member's HTTP API address, then
// creates a vPLM, classifies with it and deletes it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seed, stop, err := serve(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	cfg := actorclient.DefaultConfig()
	cfg.Seeds = []string{seed}
	cfg.Log = quiet
	c, err := actorclient.New(ctx, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	v, err := c.Create(ctx, &smilepb.CreateRequest{Id: "sentiment", Task: smilepb.Task_TASK_CLASSIFY, Labels: []string{"neg", "pos"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("created", v.GetId(), "version", v.GetVersion())
	rep, err := c.Classify(ctx, "sentiment", []string{"a wonderful film", "a dull, tiresome film"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(rep.GetPredictions()), "predictions over", rep.GetLabels())
	if err := c.Delete(ctx, "sentiment"); err != nil {
		fmt.Println(err)
		return
	}
	_, err = c.Classify(ctx, "sentiment", []string{"a wonderful film"})
	fmt.Println("after delete:", actors.Code(err), errors.Is(err, actors.ErrNotFound))
	// Output:
	// created sentiment version 1
	// 2 predictions over [neg pos]
	// after delete: not_found true
}

// Train runs a job to its end on the member that started it, reporting
// each change of its record.
func ExampleClient_Train() {
	ctx := context.Background()
	cfg := actorclient.DefaultConfig()
	cfg.Seeds = []string{"127.0.0.1:7077"} // smile serve's API
	c, err := actorclient.New(ctx, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	examples := []byte(`{"text": "a wonderful film", "label": "pos"}
{"text": "a dull, tiresome film", "label": "neg"}
`)
	job, err := c.Train(ctx, &smilepb.TrainRequest{Model: "sentiment", ExamplesJsonl: examples, Config: &smilepb.TrainConfig{Epochs: 3}},
		func(j *smilepb.TrainJob) {
			fmt.Printf("%v epoch %d/%d step %d/%d loss %.3f\n", j.GetState(), j.GetEpoch(), j.GetEpochs(), j.GetStep(), j.GetSteps(), j.GetLoss())
		})
	if err != nil {
		fmt.Println("train:", err)
		return
	}
	fmt.Println("version", job.GetVersion(), "validation accuracy", job.GetBestValAccuracy())
}

// List pages through a tenant's vPLMs.
func ExampleClient_List() {
	ctx := context.Background()
	cfg := actorclient.DefaultConfig()
	cfg.Seeds = []string{"127.0.0.1:7077"}
	c, err := actorclient.New(ctx, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	after := ""
	for {
		page, next, err := c.List(ctx, &smilepb.ListRequest{Tenant: "acme", After: after, Limit: 100})
		if err != nil {
			fmt.Println(err)
			return
		}
		for _, v := range page {
			fmt.Println(v.GetId(), v.GetTask(), v.GetVersion())
		}
		if after = next; after == "" {
			return
		}
	}
}

// serve starts a one-node cluster as `smile serve` does: the node's HTTP
// listener (the internal routes a client asks its seeds), its Raft
// replica, and the node on the use-lite backbone. It returns the API
// address and a func that stops it all.
func serve(ctx context.Context) (seed string, stop func(), err error) {
	var undo []func()
	stop = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	z, err := zoo.Open(testenv.DataDir())
	if err != nil {
		return "", nil, err
	}
	if _, err := z.Ensure(ctx, zoo.DefaultModel, nil); err != nil {
		return "", nil, err
	}
	dev, err := cpu.New(cpu.DefaultConfig())
	if err != nil {
		return "", nil, err
	}
	undo = append(undo, func() { dev.Close() })
	bb, err := z.Load(dev, zoo.DefaultModel)
	if err != nil {
		return "", nil, err
	}
	undo = append(undo, func() { bb.Close() })
	dir, err := os.MkdirTemp("", "smile-example-")
	if err != nil {
		return "", nil, err
	}
	undo = append(undo, func() { os.RemoveAll(dir) })
	store, err := storage.Open(storage.DefaultOptions(filepath.Join(dir, "db")))
	if err != nil {
		return "", nil, err
	}
	undo = append(undo, func() { store.Close() })
	cat := storage.NewCatalog(store)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var rp *cluster.Replica
	ready := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-ready
		rp.Handler().ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	undo = append(undo, func() { srv.Close() })
	rcfg := cluster.DefaultRaftConfig()
	rcfg.ID, rcfg.Bind, rcfg.APIAddr, rcfg.Dir, rcfg.Log = "n0", "127.0.0.1:0", ln.Addr().String(), filepath.Join(dir, "raft"), quiet
	if rp, err = cluster.StartReplica(ctx, rcfg, store, cat); err != nil {
		return "", nil, err
	}
	close(ready)
	undo = append(undo, func() { rp.Close() })
	ncfg := cluster.DefaultNodeConfig()
	ncfg.Replica, ncfg.APIAddr, ncfg.Log = rp, rcfg.APIAddr, quiet
	n, err := cluster.Start(ctx, ncfg, store, cat, bb)
	if err != nil {
		return "", nil, err
	}
	undo = append(undo, func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.Close(cctx)
	})
	return rcfg.APIAddr, stop, nil
}
