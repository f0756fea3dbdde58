package actors

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/train"
	"github.com/smile-vplm/smile/storage"
)

// The representation cache: what a training engine reads as its input
// (hidden states at the cut layer, or the pooled output) for every example
// of a dataset, computed once on the shared backbone and kept in Badger as
// fp16. Every epoch of a job, and every vPLM trained on the same texts
// with the same cut, reads it instead of running the frozen layers again.
//
// A cache is named by a RepKey (backbone fingerprint, the texts' digest,
// input kind, layer, window, and for a plot-mode vPLM the PLOT table its
// lower layers come from) and stored as (see storage/kv.go)
//
//	x/<key>/h            header: the key's fields and the chunk plan
//	x/<key>/c/<%08d>     chunk i: examples [start_i, start_{i+1})
//	x/<key>/done         written after every chunk is
//
// Chunks hold at most ChunkExamples examples and ChunkBytes of values, so a
// Badger value stays small (a few MiB at most) and a resumed build loses at
// most a chunk. What an example stores is one or two planes of rows (its
// tokens, or one row when pooled): Inputs.H, and Inputs.Z for
// train.InputAttended. A chunk is
//
//	"SMRK" | enc u8 (1 fp16, 2 fp32) | count u32 | planes u8 | width u32 x planes |
//	rows u32 x count | plane 0 values | plane 1 values
//
// little-endian, each plane row-major over the rows of all its examples, in
// order. A chunk whose values overflow fp16 (beyond ±65504) is kept as fp32.
// Without the done marker a cache is never read: a build resumes by
// computing only the chunks that are missing.

// RepKey names a representation cache.
type RepKey struct {
	Backbone     string // the backbone's fingerprint (Info and weights)
	Dataset      string // digest of the prepared token ids, in order
	Kind         train.InputKind
	Layer        int // as the engine's Input() gives it
	MaxPositions int
	// Table is the PLOT table whose states at its cut replace the
	// backbone's lower layers ("": full mode, the backbone's own layers).
	Table string
}

// RepWidths is the width of each plane of an engine input (kind at layer)
// on bb: InputStates [states after layer], InputPooled [pooled],
// InputAttended [states entering layer, its attention output].
func RepWidths(bb model.Backbone, kind train.InputKind, layer int) ([]int, error) {
	switch kind {
	case train.InputStates:
		return []int{bb.StateWidth(layer)}, nil
	case train.InputPooled:
		return []int{bb.Info().OutputDim}, nil
	case train.InputAttended:
		return []int{bb.StateWidth(layer - 1), bb.LayerDims(layer).Out}, nil
	}
	return nil, fmt.Errorf("%w: no cached representation for input kind %d", ErrInternal, kind)
}

// perToken reports whether kind has a row per token (else one per text).
func perToken(kind train.InputKind) bool { return kind != train.InputPooled }

// ID is the key's name in storage. A full-mode key's is what it was
// before plot mode existed, so stored caches stay valid.
func (k RepKey) ID() string {
	h := sha256.New()
	fmt.Fprintf(h, "smile-repcache-v1\x00%s\x00%s\x00%d\x00%d\x00%d", k.Backbone, k.Dataset, k.Kind, k.Layer, k.MaxPositions)
	if k.Table != "" {
		fmt.Fprintf(h, "\x00plot\x00%s", k.Table)
	}
	return hex.EncodeToString(h.Sum(nil))[:40]
}

// IDsDigest is the content digest of prepared id sequences (RepKey.Dataset).
func IDsDigest(ids [][]int32) string {
	h := sha256.New()
	var b [4]byte
	for _, s := range ids {
		binary.LittleEndian.PutUint32(b[:], uint32(len(s)))
		h.Write(b[:])
		for _, id := range s {
			binary.LittleEndian.PutUint32(b[:], uint32(id))
			h.Write(b[:])
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// RepStore is where caches live (storage.Store implements it).
type RepStore interface {
	GetRecord(ns storage.Namespace, key string) ([]byte, error)
	PutRecords(recs ...storage.Record) error
	ScanRecords(ns storage.Namespace, prefix string, fn func(key string, value []byte) error) error
	DeleteRecords(ns storage.Namespace, prefix string) error
}

// ExecFunc runs one unit of backbone work on the device (a DeviceHandle's
// Work, as some tenant) and returns run's error.
type ExecFunc func(ctx context.Context, tokens int, run func(bb model.Backbone) error) error

// RepCacheConfig sizes caches and their builds.
type RepCacheConfig struct {
	// ChunkExamples and ChunkBytes bound one stored chunk.
	ChunkExamples int
	ChunkBytes    int
	// WorkTexts and WorkTokens bound one device work item of a build.
	WorkTexts  int
	WorkTokens int
	// LRUBytes bounds the decoded chunks (float32) a dataset keeps.
	LRUBytes int64
}

// DefaultRepCacheConfig: chunks of 64 examples and at most 2 MiB, work of
// 64 texts and 4,096 tokens (a full inference batch), 256 MiB of decoded
// chunks per dataset (the imdb training split at use-lite's cut fits;
// bigger sets read chunks again, about a chunk per example of a batch).
func DefaultRepCacheConfig() RepCacheConfig {
	return RepCacheConfig{ChunkExamples: 64, ChunkBytes: 2 << 20, WorkTexts: 64, WorkTokens: 4096, LRUBytes: 256 << 20}
}

// Validate checks the configuration.
func (c RepCacheConfig) Validate() error {
	switch {
	case c.ChunkExamples < 1 || c.ChunkExamples > 1<<16:
		return fmt.Errorf("%w: rep cache chunk examples %d: want 1..65536", ErrBadConfig, c.ChunkExamples)
	case c.ChunkBytes < 1<<10 || c.ChunkBytes > 8<<20:
		return fmt.Errorf("%w: rep cache chunk bytes %d: want 1 KiB..8 MiB", ErrBadConfig, c.ChunkBytes)
	case c.WorkTexts < 1 || c.WorkTokens < 1 || c.WorkTokens > model.MaxBatchTokensLimit:
		return fmt.Errorf("%w: rep cache work of %d texts, %d tokens", ErrBadConfig, c.WorkTexts, c.WorkTokens)
	case c.LRUBytes < 0:
		return fmt.Errorf("%w: rep cache LRU bytes %d", ErrBadConfig, c.LRUBytes)
	}
	return nil
}

// RepBuild reports a build.
type RepBuild struct {
	Examples int // in the set
	Cached   int // whose representations were already stored
	Computed int // computed by this build
	Works    int // device work items run
}

// RepCache builds and opens representation caches. Builds of one key are
// serialised in the process, so two jobs on the same data compute it once.
type RepCache struct {
	store RepStore
	cfg   RepCacheConfig

	mu    sync.Mutex
	locks map[string]chan struct{} // key id -> held while a build of it runs
}

// NewRepCache is the caches kept in store.
func NewRepCache(store RepStore, cfg RepCacheConfig) (*RepCache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &RepCache{store: store, cfg: cfg, locks: map[string]chan struct{}{}}, nil
}

func (c *RepCache) lock(ctx context.Context, id string) (func(), error) {
	for {
		c.mu.Lock()
		held, busy := c.locks[id]
		if !busy {
			ch := make(chan struct{})
			c.locks[id] = ch
			c.mu.Unlock()
			return func() {
				c.mu.Lock()
				delete(c.locks, id)
				c.mu.Unlock()
				close(ch)
			}, nil
		}
		c.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// repPlan is where each example's values go: chunk i holds examples
// [starts[i], starts[i+1]).
type repPlan struct {
	key    RepKey
	widths []int // per plane
	rows   []int // per example: token rows, or 1 (pooled)
	starts []int // len = chunks+1
}

func newRepPlan(key RepKey, ids [][]int32, widths []int, cfg RepCacheConfig) *repPlan {
	p := &repPlan{key: key, widths: widths, rows: make([]int, len(ids)), starts: []int{0}}
	rowBytes := 0
	for _, w := range widths {
		rowBytes += 2 * w
	}
	n, bytes := 0, 0
	for i, s := range ids {
		r := 1
		if perToken(key.Kind) {
			r = len(s)
		}
		p.rows[i] = r
		b := r * rowBytes
		if n > 0 && (n == cfg.ChunkExamples || bytes+b > cfg.ChunkBytes) {
			p.starts = append(p.starts, i)
			n, bytes = 0, 0
		}
		n++
		bytes += b
	}
	if len(ids) > 0 {
		p.starts = append(p.starts, len(ids))
	}
	return p
}

func (p *repPlan) chunks() int { return len(p.starts) - 1 }

// chunkOf is the chunk holding example i.
func (p *repPlan) chunkOf(i int) int {
	lo, hi := 0, p.chunks()-1
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if p.starts[mid] <= i {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

const repHeaderMagic = "SMRH1"

// header encodes the plan (its key fields and chunk starts); a stored
// header that differs means another format or data: the cache is rebuilt.
func (p *repPlan) header() []byte {
	var b []byte
	b = append(b, repHeaderMagic...)
	s := fmt.Sprintf("%s\x00%s\x00%d\x00%d\x00%d\x00%v\x00%d", p.key.Backbone, p.key.Dataset, p.key.Kind, p.key.Layer, p.key.MaxPositions, p.widths, len(p.rows))
	if p.key.Table != "" {
		s += "\x00plot\x00" + p.key.Table
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	b = append(b, s...)
	for _, st := range p.starts {
		b = binary.LittleEndian.AppendUint32(b, uint32(st))
	}
	return b
}

func repChunkKey(id string, i int) string { return id + "/c/" + fmt.Sprintf("%08d", i) }

const (
	repEncHalf  = 1
	repEncFloat = 2
)

// encodeRepChunk stores planes (plane k: rows x widths[k], the examples'
// rows in order).
func encodeRepChunk(rows, widths []int, planes [][]float32) []byte {
	head := 4 + 1 + 4 + 1 + 4*len(widths) + 4*len(rows)
	vals := 0
	for _, p := range planes {
		vals += len(p)
	}
	b := make([]byte, head+2*vals)
	copy(b, "SMRK")
	b[4] = repEncHalf
	le := binary.LittleEndian
	le.PutUint32(b[5:], uint32(len(rows)))
	b[9] = byte(len(widths))
	o := 10
	for _, w := range widths {
		le.PutUint32(b[o:], uint32(w))
		o += 4
	}
	for _, r := range rows {
		le.PutUint32(b[o:], uint32(r))
		o += 4
	}
	fits := true
	for _, p := range planes {
		if model.EncodeHalves(b[o:o+2*len(p)], p) >= 0 {
			fits = false
			break
		}
		o += 2 * len(p)
	}
	if fits {
		return b
	}
	// Out of fp16's range: keep this chunk exact.
	b = append(b[:head], make([]byte, 4*vals)...)
	b[4] = repEncFloat
	o = head
	for _, p := range planes {
		for _, v := range p {
			le.PutUint32(b[o:], math.Float32bits(v))
			o += 4
		}
	}
	return b
}

// repChunk is a decoded chunk.
type repChunk struct {
	offsets []int       // example k's rows are [offsets[k], offsets[k+1])
	planes  [][]float32 // plane k: rows x widths[k]
}

func (c *repChunk) bytes() int64 {
	n := 0
	for _, p := range c.planes {
		n += len(p)
	}
	return int64(4 * n)
}

// decodeRepChunk reads a chunk, checking it holds what the plan says.
func decodeRepChunk(b []byte, rows, widths []int) (*repChunk, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: representation chunk: %s", ErrInternal, fmt.Sprintf(format, a...))
	}
	le := binary.LittleEndian
	if len(b) < 10 || string(b[:4]) != "SMRK" {
		return nil, bad("bad magic")
	}
	enc, n, np := b[4], int(le.Uint32(b[5:])), int(b[9])
	if n != len(rows) || np != len(widths) {
		return nil, bad("%d examples of %d planes, want %d of %d", n, np, len(rows), len(widths))
	}
	head := 10 + 4*np + 4*n
	if len(b) < head {
		return nil, bad("short header")
	}
	o := 10
	for k := range np {
		if w := int(le.Uint32(b[o:])); w != widths[k] {
			return nil, bad("plane %d has width %d, want %d", k, w, widths[k])
		}
		o += 4
	}
	c := &repChunk{offsets: make([]int, n+1)}
	for k := range n {
		r := int(le.Uint32(b[o:]))
		if r != rows[k] {
			return nil, bad("example %d has %d rows, want %d", k, r, rows[k])
		}
		c.offsets[k+1] = c.offsets[k] + r
		o += 4
	}
	size := 2
	switch enc {
	case repEncHalf:
	case repEncFloat:
		size = 4
	default:
		return nil, bad("encoding %d", enc)
	}
	total := 0
	for _, w := range widths {
		total += c.offsets[n] * w
	}
	if len(b) != head+size*total {
		return nil, bad("%d bytes, want %d", len(b), head+size*total)
	}
	for _, w := range widths {
		p := make([]float32, c.offsets[n]*w)
		if enc == repEncHalf {
			if err := model.DecodeHalves(p, b[o:o+2*len(p)]); err != nil {
				return nil, bad("%v", err)
			}
		} else {
			for i := range p {
				p[i] = math.Float32frombits(le.Uint32(b[o+4*i:]))
			}
		}
		o += size * len(p)
		c.planes = append(c.planes, p)
	}
	return c, nil
}

// Build makes sure the cache of key over ids (prepared ids, one sequence
// per example) is complete, computing the chunks it lacks through exec,
// and opens it. lower is the PLOT table key.Table names (nil in full
// mode): the states at its cut come from it. progress, if set, sees
// examples done (cached or computed) out of the total after every chunk.
// A complete cache costs no device work at all.
func (c *RepCache) Build(ctx context.Context, key RepKey, lower model.Lower, ids [][]int32, widths []int, exec ExecFunc, progress func(done, total int)) (*RepSet, RepBuild, error) {
	st := RepBuild{Examples: len(ids)}
	if len(ids) == 0 {
		return nil, st, fmt.Errorf("%w: no examples to cache", ErrBadDataset)
	}
	if (lower != nil) != (key.Table != "") {
		return nil, st, fmt.Errorf("%w: representation cache of table %q with a lower part %v", ErrInternal, key.Table, lower != nil)
	}
	if err := checkPlanes(key.Kind, widths); err != nil {
		return nil, st, err
	}
	id := key.ID()
	unlock, err := c.lock(ctx, id)
	if err != nil {
		return nil, st, err
	}
	defer unlock()
	plan := newRepPlan(key, ids, widths, c.cfg)
	set := &RepSet{store: c.store, id: id, plan: plan, lruBytes: c.cfg.LRUBytes}
	header := plan.header()
	report := func(done int) {
		if progress != nil {
			progress(done, len(ids))
		}
	}
	if ok, err := c.complete(id, header); err != nil {
		return nil, st, err
	} else if ok {
		st.Cached = len(ids)
		report(len(ids))
		return set, st, nil
	}
	present, err := c.resume(id, header)
	if err != nil {
		return nil, st, err
	}
	done := 0
	for i := range plan.chunks() {
		if present[i] {
			st.Cached += plan.starts[i+1] - plan.starts[i]
			done += plan.starts[i+1] - plan.starts[i]
		}
	}
	report(done)
	for i := range plan.chunks() {
		if present[i] {
			continue
		}
		lo, hi := plan.starts[i], plan.starts[i+1]
		planes, works, err := computeReps(ctx, key, lower, ids[lo:hi], widths, c.cfg, exec)
		st.Works += works
		if err != nil {
			return nil, st, err
		}
		chunk := encodeRepChunk(plan.rows[lo:hi], widths, planes)
		if err := c.store.PutRecords(storage.Record{NS: storage.NSRepCache, Key: repChunkKey(id, i), Value: chunk}); err != nil {
			return nil, st, fmt.Errorf("%w: storing representations: %w", ErrUnavailable, err)
		}
		st.Computed += hi - lo
		done += hi - lo
		report(done)
	}
	if err := c.store.PutRecords(storage.Record{NS: storage.NSRepCache, Key: id + "/done", Value: header}); err != nil {
		return nil, st, fmt.Errorf("%w: storing representations: %w", ErrUnavailable, err)
	}
	return set, st, nil
}

// complete reports whether the cache is complete with this plan.
func (c *RepCache) complete(id string, header []byte) (bool, error) {
	b, err := c.store.GetRecord(storage.NSRepCache, id+"/done")
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: reading the representation cache: %w", ErrUnavailable, err)
	}
	return string(b) == string(header), nil
}

// resume finds the chunks a previous build stored, or starts afresh (a
// cache of another plan is deleted).
func (c *RepCache) resume(id string, header []byte) (map[int]bool, error) {
	present := map[int]bool{}
	h, err := c.store.GetRecord(storage.NSRepCache, id+"/h")
	switch {
	case err == nil && string(h) == string(header):
		err := c.store.ScanRecords(storage.NSRepCache, id+"/c/", func(k string, v []byte) error {
			i, err := strconv.Atoi(strings.TrimPrefix(k, id+"/c/"))
			if err == nil && len(v) >= 10 && string(v[:4]) == "SMRK" {
				present[i] = true
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%w: reading the representation cache: %w", ErrUnavailable, err)
		}
		return present, nil
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return nil, fmt.Errorf("%w: reading the representation cache: %w", ErrUnavailable, err)
	}
	if err := c.store.DeleteRecords(storage.NSRepCache, id+"/"); err != nil {
		return nil, fmt.Errorf("%w: clearing the representation cache: %w", ErrUnavailable, err)
	}
	if err := c.store.PutRecords(storage.Record{NS: storage.NSRepCache, Key: id + "/h", Value: header}); err != nil {
		return nil, fmt.Errorf("%w: storing representations: %w", ErrUnavailable, err)
	}
	return present, nil
}

// checkPlanes checks widths against kind.
func checkPlanes(kind train.InputKind, widths []int) error {
	want := 1
	switch kind {
	case train.InputStates, train.InputPooled:
	case train.InputAttended:
		want = 2
	default:
		return fmt.Errorf("%w: no cached representation for input kind %d", ErrInternal, kind)
	}
	if len(widths) != want || slices.ContainsFunc(widths, func(w int) bool { return w <= 0 }) {
		return fmt.Errorf("%w: representation widths %v for input kind %d", ErrInternal, widths, kind)
	}
	return nil
}

// computeReps runs ids through the backbone (above lower's cut, when
// lower is set) in work items of at most WorkTexts texts and WorkTokens
// tokens and returns their planes, rows in example order.
func computeReps(ctx context.Context, key RepKey, lower model.Lower, ids [][]int32, widths []int, cfg RepCacheConfig, exec ExecFunc) ([][]float32, int, error) {
	rows := 0
	for _, s := range ids {
		if perToken(key.Kind) {
			rows += len(s)
		} else {
			rows++
		}
	}
	planes := make([][]float32, len(widths))
	for k, w := range widths {
		planes[k] = make([]float32, 0, rows*w)
	}
	works := 0
	for lo := 0; lo < len(ids); {
		hi, tokens := lo, 0
		for hi < len(ids) && hi-lo < cfg.WorkTexts && (hi == lo || tokens+len(ids[hi]) <= cfg.WorkTokens) {
			tokens += len(ids[hi])
			hi++
		}
		batch := ids[lo:hi]
		n := tokens
		if !perToken(key.Kind) {
			n = hi - lo
		}
		works++
		if err := exec(ctx, tokens, func(bb model.Backbone) error {
			in, err := train.ComputeInputsLower(ctx, bb, lower, key.Kind, key.Layer, batch)
			if err != nil {
				return err
			}
			got := [][]float32{in.H, in.Z}[:len(widths)]
			for k, w := range widths {
				if len(got[k]) != n*w {
					return fmt.Errorf("%w: plane %d of %d values, want %d rows of %d", ErrInternal, k, len(got[k]), n, w)
				}
				planes[k] = append(planes[k], got[k]...)
			}
			return nil
		}); err != nil {
			return nil, works, err
		}
		lo = hi
	}
	return planes, works, nil
}

// RepSet is a complete cache, read chunk by chunk through a small LRU of
// decoded chunks. It is safe for concurrent use.
type RepSet struct {
	store    RepStore
	id       string
	plan     *repPlan
	lruBytes int64

	mu  sync.Mutex
	lru *byteLRU[*repChunk]
}

// Len is the number of examples.
func (s *RepSet) Len() int { return len(s.plan.rows) }

// Widths is the width of each plane's rows.
func (s *RepSet) Widths() []int { return s.plan.widths }

// chunk returns chunk i, decoded, from the LRU or the store.
func (s *RepSet) chunk(i int) (*repChunk, error) {
	s.mu.Lock()
	if s.lru == nil {
		s.lru = newByteLRU[*repChunk](max(s.lruBytes, 1), nil)
	}
	c, ok := s.lru.get(strconv.Itoa(i))
	s.mu.Unlock()
	if ok {
		return c, nil
	}
	b, err := s.store.GetRecord(storage.NSRepCache, repChunkKey(s.id, i))
	if err != nil {
		return nil, fmt.Errorf("%w: representation chunk %d: %w", ErrUnavailable, i, err)
	}
	p := s.plan
	c, err = decodeRepChunk(b, p.rows[p.starts[i]:p.starts[i+1]], p.widths)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	// A chunk bigger than the whole budget is read for every use (it
	// would evict itself at once).
	s.lru.insert(strconv.Itoa(i), c, c.bytes(), 0)
	s.mu.Unlock()
	return c, nil
}

// Load packs examples idx into Inputs: H (and Z for InputAttended) as
// packed rows with Offsets, or for InputPooled one row each.
func (s *RepSet) Load(ctx context.Context, idx []int) (*train.Inputs, error) {
	p := s.plan
	rows := 0
	for _, i := range idx {
		if i < 0 || i >= len(p.rows) {
			return nil, fmt.Errorf("%w: example %d of %d", ErrInternal, i, len(p.rows))
		}
		rows += p.rows[i]
	}
	planes := make([][]float32, len(p.widths))
	for k, w := range p.widths {
		planes[k] = make([]float32, 0, rows*w)
	}
	in := &train.Inputs{}
	if perToken(p.key.Kind) {
		in.Offsets = make([]int, 1, len(idx)+1)
	}
	for _, i := range idx {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ci := p.chunkOf(i)
		c, err := s.chunk(ci)
		if err != nil {
			return nil, err
		}
		k := i - p.starts[ci]
		for pl, w := range p.widths {
			planes[pl] = append(planes[pl], c.planes[pl][c.offsets[k]*w:c.offsets[k+1]*w]...)
		}
		if in.Offsets != nil {
			in.Offsets = append(in.Offsets, in.Offsets[len(in.Offsets)-1]+p.rows[i])
		}
	}
	in.H = planes[0]
	if len(planes) > 1 {
		in.Z = planes[1]
	}
	return in, nil
}
