package cluster

import (
	"sync"
	"time"
)

// groupPut turns concurrent PutBlob calls into few synced transactions:
// Badger syncs its write-ahead log once per transaction, so a thousand
// creates a second, each putting its own params blob, would otherwise wait
// on a thousand syncs. The first caller to find no batch in flight commits
// everything queued meanwhile (and what queues during that commit, in
// turn); the others wait for their result. Nobody waits on a timer.
type groupPut struct {
	put func([][]byte) ([]string, error)

	mu      sync.Mutex
	pending []*putReq
	running bool
}

type putReq struct {
	data   []byte
	digest string
	err    error
	done   chan struct{}
}

// maxGroup bounds one transaction's blobs.
const maxGroup = 256

func (g *groupPut) Put(data []byte) (string, error) {
	req := &putReq{data: data, done: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, req)
	lead := !g.running
	g.running = true
	g.mu.Unlock()
	if lead {
		g.commitAll()
	}
	<-req.done
	return req.digest, req.err
}

// commitAll commits queued puts until the queue is empty.
func (g *groupPut) commitAll() {
	for {
		g.mu.Lock()
		n := min(len(g.pending), maxGroup)
		batch := g.pending[:n:n]
		g.pending = g.pending[n:]
		if n == 0 {
			g.running = false
			g.pending = nil
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		datas := make([][]byte, n)
		for i, r := range batch {
			datas[i] = r.data
		}
		ds, err := g.put(datas)
		for i, r := range batch {
			if err != nil {
				r.err = err
			} else {
				r.digest = ds[i]
			}
			close(r.done)
		}
	}
}

// putBlobs stores a group of blobs, then lets go of the value log's pages
// they dirtied: Badger writes through a shared memory map, so every blob
// written would otherwise stay in the process's resident set (file pages
// the kernel may reclaim, but that read as RSS). At most once a second.
func (r *Replica) putBlobs(datas [][]byte) ([]string, error) {
	ds, err := r.store.PutBlobs(datas)
	if now := time.Now().UnixNano(); err == nil && now-r.released.Load() > int64(time.Second) {
		r.released.Store(now)
		r.store.ReleasePages() // a few ms: reads /proc/self/maps, advises
	}
	return ds, err
}
