package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/storage"
)

// Internal routes, served by every node on its HTTP API address.
const (
	routeApply     = "/internal/v1/catalog/apply"
	routeReadIndex = "/internal/v1/catalog/readindex"
	routeJoin      = "/internal/v1/cluster/join"
	routeBlobs     = "/internal/v1/blobs/"
	secretHeader   = "X-Smile-Cluster-Key"
	// maxBlobBytes bounds a pushed blob (params blobs are well below).
	maxBlobBytes = 256 << 20
	// maxBatchBytes bounds a forwarded catalog batch.
	maxBatchBytes = 64 << 20
)

// errorKinds name the catalog's errors on the wire, so a forwarded write
// fails with the same typed error as a local one.
var errorKinds = []struct {
	kind string
	err  error
}{
	{"not_found", storage.ErrNotFound},
	{"exists", storage.ErrExists},
	{"conflict", storage.ErrConflict},
	{"missing_blob", storage.ErrMissingBlob},
	{"corrupt", storage.ErrCorrupt},
	{"bad_id", storage.ErrBadID},
	{"invalid", storage.ErrInvalid},
	{"bad_digest", storage.ErrBadDigest},
	{"quota_exceeded", storage.ErrQuotaExceeded},
	{"closed", storage.ErrClosed},
	{"already_applied", storage.ErrAlreadyApplied},
	{"not_empty", storage.ErrNotEmpty},
}

func errorKind(err error) string {
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			return k.kind
		}
	}
	return "internal"
}

// remoteError is a catalog error that happened on the leader.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

func fromKind(kind, msg string) error {
	for _, k := range errorKinds {
		if k.kind == kind {
			return &remoteError{msg: msg, kind: k.err}
		}
	}
	return &remoteError{msg: msg, kind: actors.ErrUnavailable}
}

func (r *Replica) url(addr, path string) string { return "http://" + addr + path }

func (r *Replica) do(ctx context.Context, method, addr, path string, body []byte, ctype string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, r.url(addr, path), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if r.cfg.Secret != "" {
		req.Header.Set(secretHeader, r.cfg.Secret)
	}
	return r.hc.Do(req)
}

// leaderAPI is the leader's API address, from the catalog.
func (r *Replica) leaderAPI() (string, error) {
	id := r.leaderID()
	if id == "" {
		return "", fmt.Errorf("%w: no leader", errNotLeader)
	}
	if id == r.id {
		return r.cfg.APIAddr, nil
	}
	nodes, err := r.nodes()
	if err != nil {
		return "", err
	}
	n, ok := nodes[id]
	if !ok {
		return "", fmt.Errorf("%w: leader %s has no address in the catalog yet", errNotLeader, id)
	}
	return n.GetApiAddr(), nil
}

// forward sends an encoded CatalogBatch to the leader. sent says the
// leader may have taken it although err is set.
func (r *Replica) forward(ctx context.Context, data []byte) (*applied, bool, error) {
	addr, err := r.leaderAPI()
	if err != nil {
		return nil, false, err
	}
	resp, err := r.do(ctx, http.MethodPost, addr, routeApply, data, "application/x-protobuf")
	if err != nil {
		// The request may have reached the leader before the connection broke.
		return nil, true, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBatchBytes))
	if err != nil {
		return nil, true, err
	}
	if resp.StatusCode == http.StatusMisdirectedRequest {
		return nil, false, fmt.Errorf("%w: %s", errNotLeader, bytes.TrimSpace(body))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, true, fmt.Errorf("cluster: leader %s: %s: %s", addr, resp.Status, bytes.TrimSpace(body))
	}
	var rep smilepb.CatalogReply
	if err := proto.Unmarshal(body, &rep); err != nil {
		return nil, true, fmt.Errorf("cluster: leader %s reply: %w", addr, err)
	}
	res := &applied{vplms: make([]*smilepb.VPLM, len(rep.GetResults())), errs: make([]error, len(rep.GetResults()))}
	for i, x := range rep.GetResults() {
		res.vplms[i] = x.GetVplm()
		if x.GetErrorKind() != "" {
			res.vplms[i], res.errs[i] = nil, fromKind(x.GetErrorKind(), x.GetErrorMessage())
		}
	}
	return res, false, nil
}

func (r *Replica) remoteReadIndex(ctx context.Context) (uint64, error) {
	addr, err := r.leaderAPI()
	if err != nil {
		return 0, err
	}
	resp, err := r.do(ctx, http.MethodGet, addr, routeReadIndex, nil, "")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("%w: read index from %s: %s: %s", errNotLeader, addr, resp.Status, bytes.TrimSpace(b))
	}
	var v struct {
		Index uint64 `json:"index"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&v); err != nil {
		return 0, err
	}
	return v.Index, nil
}

func (r *Replica) postJoin(ctx context.Context, addr string, me *smilepb.NodeInfo) error {
	b, err := proto.Marshal(me)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := r.do(cctx, http.MethodPost, addr, routeJoin, b, "application/x-protobuf")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// rendezvous orders nodes by highest random weight for a digest, so every
// node picks the same holders for a blob.
func rendezvous(nodes []*smilepb.NodeInfo, digest string) {
	w := func(n *smilepb.NodeInfo) uint64 {
		h := fnv.New64a()
		h.Write([]byte(digest))
		h.Write([]byte{0})
		h.Write([]byte(n.GetId()))
		return h.Sum64()
	}
	slices.SortFunc(nodes, func(a, b *smilepb.NodeInfo) int {
		wa, wb := w(a), w(b)
		switch {
		case wa > wb:
			return -1
		case wa < wb:
			return 1
		}
		return 0
	})
}

// replicate makes sure digest (stored here) is on min(Replicas, members)
// nodes. Peers that cannot be reached are skipped for the next ones; with
// too few reachable, the write goes on when at least two nodes hold the
// blob (one when this node is alone), so that losing one machine never
// loses a committed vPLM's params.
func (r *Replica) replicate(ctx context.Context, digest string) error {
	members := r.members()
	want := min(r.cfg.Replicas, members)
	if want <= 1 {
		if ok, err := r.store.HasBlob(digest); err != nil || !ok {
			return fmt.Errorf("%w: params blob %s is not stored here (%v)", storage.ErrMissingBlob, digest, err)
		}
		return nil
	}
	data, err := r.GetBlob(digest)
	if err != nil {
		return fmt.Errorf("%w: params blob %s: %w", storage.ErrMissingBlob, digest, err)
	}
	peers, err := r.peers()
	if err != nil {
		return err
	}
	if len(peers) < members-1 {
		// A member's address is not applied here yet (it joined a moment
		// ago): catch up with the leader before choosing holders.
		if err := r.Sync(ctx); err != nil {
			return err
		}
		if peers, err = r.peers(); err != nil {
			return err
		}
	}
	rendezvous(peers, digest)
	copies := 1
	var errs []error
	// Push to as many holders as are missing at once; a peer that fails
	// (down, unreachable: dials time out in seconds) is replaced by the
	// next in rendezvous order.
	for next := 0; copies < want && next < len(peers); {
		wave := peers[next:min(next+want-copies, len(peers))]
		next += len(wave)
		werrs := make([]error, len(wave))
		var wg sync.WaitGroup
		for i, p := range wave {
			wg.Go(func() { werrs[i] = r.pushBlob(ctx, p, digest, data) })
		}
		wg.Wait()
		for i, err := range werrs {
			if err != nil {
				errs = append(errs, fmt.Errorf("node %s: %w", wave[i].GetId(), err))
				continue
			}
			copies++
		}
	}
	if copies < want {
		if copies < 2 {
			return fmt.Errorf("%w: params blob %s on %d of %d nodes: %w", actors.ErrUnavailable, digest, copies, want, errors.Join(errs...))
		}
		r.log.Warn("params blob stored on fewer nodes than wanted", "digest", digest, "copies", copies, "want", want, "err", errors.Join(errs...))
	}
	return nil
}

func (r *Replica) pushBlob(ctx context.Context, n *smilepb.NodeInfo, digest string, data []byte) error {
	d, err := storage.ParseDigest(digest)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := r.do(cctx, http.MethodPut, n.GetApiAddr(), routeBlobs+d.Hex(), data, "application/octet-stream")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// GetBlob returns a params blob, checked against its digest: this node's
// copy, or, when it is missing or corrupt, a peer's, which is then stored
// here in place of the bad one.
func (r *Replica) GetBlob(digest string) ([]byte, error) {
	b, err := r.store.GetBlob(digest)
	if err == nil || !(errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrCorrupt)) {
		return b, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fetched, ferr := r.fetchBlob(ctx, digest)
	if ferr != nil {
		return nil, fmt.Errorf("%w (and from peers: %w)", err, ferr)
	}
	if perr := r.store.PutBlobAs(digest, fetched); perr != nil {
		r.log.Warn("storing a blob fetched from a peer", "digest", digest, "err", perr)
	}
	r.repaired.Add(1)
	if errors.Is(err, storage.ErrCorrupt) {
		r.log.Warn("corrupt params blob replaced by a peer's copy", "digest", digest)
	}
	return fetched, nil
}

// PutBlob stores a new params blob here; Apply replicates it before the
// catalog entry naming it is committed.
// Concurrent puts share synced transactions (storage.Store.PutBlob). Then
// it lets go of the value log's pages the blob dirtied: Badger writes
// through a shared memory map, so every blob written would otherwise stay
// in the process's resident set (file pages the kernel may reclaim, but
// that read as RSS). At most once a second.
func (r *Replica) PutBlob(data []byte) (string, error) {
	d, err := r.store.PutBlob(data)
	if now := time.Now().UnixNano(); err == nil && now-r.released.Load() > int64(time.Second) {
		r.released.Store(now)
		r.store.ReleasePages() // a few ms: reads /proc/self/maps, advises
	}
	return d, err
}

// fetchBlob asks peers, the blob's rendezvous holders first, for a copy
// that hashes to digest.
func (r *Replica) fetchBlob(ctx context.Context, digest string) ([]byte, error) {
	d, err := storage.ParseDigest(digest)
	if err != nil {
		return nil, err
	}
	peers, err := r.peers()
	if err != nil {
		return nil, err
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("%w: no peer to fetch blob %s from", storage.ErrNotFound, d.Short())
	}
	rendezvous(peers, digest)
	var errs []error
	for _, p := range peers {
		b, err := r.getPeerBlob(ctx, p, d)
		if err == nil {
			return b, nil
		}
		errs = append(errs, fmt.Errorf("node %s: %w", p.GetId(), err))
	}
	return nil, errors.Join(errs...)
}

func (r *Replica) getPeerBlob(ctx context.Context, n *smilepb.NodeInfo, d storage.Digest) ([]byte, error) {
	resp, err := r.do(ctx, http.MethodGet, n.GetApiAddr(), routeBlobs+d.Hex(), nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBlobBytes+1))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != d.Hex() {
		return nil, fmt.Errorf("%w: peer's copy of %s hashes to %x", storage.ErrCorrupt, d.Short(), sum[:6])
	}
	return b, nil
}

// Handler serves the internal routes (and the cluster's client routes:
// GET /v1/cluster, GET /v1/admin/backup).
func (r *Replica) Handler() http.Handler {
	r.handlerOnce.Do(func() { r.handler = r.newHandler() })
	return r.handler
}

func (r *Replica) newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+routeApply, r.serveApply)
	mux.HandleFunc("GET "+routeReadIndex, r.serveReadIndex)
	mux.HandleFunc("POST "+routeJoin, r.serveJoin)
	mux.HandleFunc("GET "+routeBlobs+"{hex}", r.serveGetBlob)
	mux.HandleFunc("PUT "+routeBlobs+"{hex}", r.servePutBlob)
	mux.HandleFunc("GET "+routeGossip, func(w http.ResponseWriter, req *http.Request) {
		g := r.gossip.Load()
		if g == nil {
			http.Error(w, "the node is starting", http.StatusServiceUnavailable)
			return
		}
		g.serveGossip(w, req)
	})
	mux.HandleFunc("GET /v1/cluster", r.serveStatus)
	mux.HandleFunc("GET /v1/admin/backup", r.serveBackup)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// The internal routes and the backup (every tenant's params) need
		// the cluster key when one is set; the status page does not.
		guarded := strings.HasPrefix(req.URL.Path, "/internal/") || req.URL.Path == "/v1/admin/backup"
		if guarded && r.cfg.Secret != "" &&
			subtle.ConstantTimeCompare([]byte(req.Header.Get(secretHeader)), []byte(r.cfg.Secret)) != 1 {
			http.Error(w, "cluster key missing or wrong", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, req)
	})
}

// IsInternal reports whether path is served by Replica.Handler.
func IsInternal(path string) bool {
	return strings.HasPrefix(path, "/internal/") || path == "/v1/cluster" || path == "/v1/admin/backup"
}

// SecretHeader is the header that carries the cluster key.
const SecretHeader = secretHeader

func (r *Replica) serveApply(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxBatchBytes))
	if err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	if !r.IsLeader() {
		http.Error(w, "not the leader", http.StatusMisdirectedRequest)
		return
	}
	res, sent, err := r.proposeLocal(body)
	if err != nil {
		status := http.StatusServiceUnavailable
		if !sent {
			status = http.StatusMisdirectedRequest
		}
		http.Error(w, err.Error(), status)
		return
	}
	var rep smilepb.CatalogReply
	for i := range res.errs {
		x := &smilepb.CatalogResult{}
		if i < len(res.vplms) {
			x.Vplm = res.vplms[i]
		}
		if res.errs[i] != nil {
			x.Vplm, x.ErrorKind, x.ErrorMessage = nil, errorKind(res.errs[i]), res.errs[i].Error()
		}
		rep.Results = append(rep.Results, x)
	}
	b, err := proto.Marshal(&rep)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(b)
}

func (r *Replica) serveReadIndex(w http.ResponseWriter, req *http.Request) {
	if !r.IsLeader() {
		http.Error(w, "not the leader", http.StatusMisdirectedRequest)
		return
	}
	idx, err := r.readIndex()
	if err != nil {
		http.Error(w, err.Error(), http.StatusMisdirectedRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]uint64{"index": idx})
}

func (r *Replica) serveJoin(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 64<<10))
	if err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	var n smilepb.NodeInfo
	if err := proto.Unmarshal(body, &n); err != nil {
		http.Error(w, "node info: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !r.IsLeader() {
		// Pass it on: the joining node only knows this member.
		addr, err := r.leaderAPI()
		if err == nil {
			err = r.postJoin(req.Context(), addr, &n)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	if err := r.addServer(req.Context(), &n); err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, storage.ErrInvalid) {
			status = http.StatusBadRequest
		}
		http.Error(w, err.Error(), status)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (r *Replica) serveGetBlob(w http.ResponseWriter, req *http.Request) {
	d := "sha256:" + req.PathValue("hex")
	b, err := r.store.GetBlob(d)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case errors.Is(err, storage.ErrBadDigest):
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case err != nil:
		// A corrupt copy here is not served; the caller asks another peer.
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.Write(b)
}

func (r *Replica) servePutBlob(w http.ResponseWriter, req *http.Request) {
	d := "sha256:" + req.PathValue("hex")
	b, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxBlobBytes))
	if err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	if err := r.store.PutBlobAs(d, b); err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, storage.ErrBadDigest) || errors.Is(err, storage.ErrCorrupt) || errors.Is(err, storage.ErrDigestMismatch) {
			status = http.StatusBadRequest
		}
		http.Error(w, err.Error(), status)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *Replica) serveStatus(w http.ResponseWriter, req *http.Request) {
	st, err := r.Status()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if req.URL.Query().Get("hash") == "1" {
		// The hash of this node's catalog once it holds every committed write.
		ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
		defer cancel()
		if err := r.Sync(ctx); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if st.CatalogHash, err = r.cat.Hash(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(st)
}
