package actors

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/plot"
	"github.com/smile-vplm/smile/storage"
)

// PLOT tables on a node (lower-layer skipping, model/plot). A table is a
// list of n-grams whose entries, the backbone's states after layer cut for
// each n-gram run alone, are stored in Badger; a plot-mode vPLM looks its
// tokens' windows up in the table instead of running layers 1..cut, in
// serving and in training alike.
//
// Stored (storage/kv.go, storage/plot.go):
//
//	t/<id>/h           the manifest (smilepb.PlotTable)
//	t/<id>/g/<%08d>    the n-gram list in list order, in chunks of at most
//	                   1 MiB (plot.EncodeGrams)
//	p/<fingerprint>\x00<cut><n-gram>
//	                   one entry, shared by every table of the backbone
//	                   (its weights) and cut
//
// A table is named by its content (plot.TableID: the backbone's
// fingerprint, the cut, the n-gram set): building the same request again
// gives the same table, and costs no device work once it is complete. Its
// list is the base table's (or, without a base, every unigram of the
// vocabulary: a token is never without a state) followed by the corpus's
// most frequent bigrams and trigrams within the budget. The list and
// manifest are written before the build's job starts and never change but
// for the manifest's completion. The job (kind "table", in the trainer's
// job system) computes the entries missing from the store, in device work
// items of the requesting tenant, a batch at a time; a resumed, canceled
// and restarted, or repeated build computes only what is still missing.
// Only a complete table serves.
//
// A node opens a table once, on its first use (plotTables): its list, and
// a plot.Table over the stored entries with an in-memory cache of
// PlotConfig.CacheBytes, warmed in the background in list order (the
// unigrams, then the most frequent n-grams) until full. Entries that fail
// their checksum are logged, counted and treated as absent (lookups fall
// back to shorter n-grams).

// PlotConfig configures a node's PLOT tables.
type PlotConfig struct {
	// CacheBytes bounds the entries each opened table keeps in memory.
	CacheBytes int64
	// Warm reads an opened table's entries into memory in the background,
	// in list order, until its cache is full.
	Warm bool
	// BatchGrams is the n-grams one device work item of a build computes
	// (and one write of entries stores).
	BatchGrams int
	// DefaultBudgetBytes is the budget of a request that names none: the
	// bytes of entries added on top of the base. MaxBudgetBytes bounds a
	// request's.
	DefaultBudgetBytes int64
	MaxBudgetBytes     int64
}

// DefaultPlotConfig: 512 MiB of memory per opened table, warmed; builds
// in work items of 256 n-grams; a 512 MiB budget by default, 64 GiB at
// most.
func DefaultPlotConfig() PlotConfig {
	return PlotConfig{CacheBytes: 512 << 20, Warm: true, BatchGrams: plot.DefaultBatch, DefaultBudgetBytes: 512 << 20, MaxBudgetBytes: 64 << 30}
}

// Validate checks the configuration.
func (c PlotConfig) Validate() error {
	switch {
	case c.CacheBytes < 0:
		return fmt.Errorf("%w: plot cache bytes %d: want >= 0", ErrBadConfig, c.CacheBytes)
	case c.BatchGrams < 1 || c.BatchGrams*plot.MaxN > model.MaxBatchTokensLimit:
		return fmt.Errorf("%w: plot batch of %d n-grams: want 1..%d", ErrBadConfig, c.BatchGrams, model.MaxBatchTokensLimit/plot.MaxN)
	case c.MaxBudgetBytes < 1:
		return fmt.Errorf("%w: plot max budget %d bytes: want > 0", ErrBadConfig, c.MaxBudgetBytes)
	case c.DefaultBudgetBytes < 1 || c.DefaultBudgetBytes > c.MaxBudgetBytes:
		return fmt.Errorf("%w: plot default budget %d bytes: want 1..%d (the max budget)", ErrBadConfig, c.DefaultBudgetBytes, c.MaxBudgetBytes)
	}
	return nil
}

// PlotStore is where PLOT table entries live (storage.Store implements it).
type PlotStore interface {
	PlotEntries(backbone string, cut int) (*storage.PlotEntries, error)
}

// tableIDPattern is plot.TableID's form; anything else names no table
// (and never reaches a storage key).
var tableIDPattern = regexp.MustCompile(`^plot-[0-9a-f]{32}$`)

// maxListChunk bounds one stored chunk of a table's n-gram list.
const maxListChunk = 1 << 20

// tableUpload is how errors name uploaded corpus texts.
const tableUpload = "examples_jsonl"

// BuildTable plans a PLOT table from req and starts the job that computes
// its entries; it returns the job's record (kind "table", table: the
// table's id) at once. Watch it with WatchJob; Job, Jobs, CancelJob and
// ResumeJobs treat it as any job.
//
// The table holds the base table's n-grams (req.base; without one every
// unigram of the vocabulary), then the corpus's most frequent bigrams and
// trigrams, as many as fit in budget_bytes of entries (0: the default;
// negative or above PlotConfig.MaxBudgetBytes: ErrBadRequest). The corpus
// is a pulled dataset's train split (never its validation or test
// examples) or uploaded JSONL texts, tokenized exactly as serving
// tokenizes. The cut defaults to the base's, else half the backbone's
// layers, and must lie in 1..layers-1.
//
// A table that is already complete gives a job that has SUCCEEDED at once
// (tables are named by their content and shared). One job at a time
// builds a table (ErrJobConflict). Errors: ErrBadRequest, ErrBadDataset,
// ErrTableNotFound (the base), ErrUnavailable.
func (s *Service) BuildTable(ctx context.Context, req *smilepb.TableRequest) (*smilepb.TrainJob, error) {
	t, err := s.trainer()
	if err != nil {
		return nil, err
	}
	if req == nil {
		return nil, fmt.Errorf("%w: no table request", ErrBadRequest)
	}
	p, err := t.planTable(ctx, req)
	if err != nil {
		return nil, err
	}
	m := p.man
	now := s.now()
	rec := &smilepb.TrainJob{
		Id: newJobID(now), Kind: JobKindTable, Table: m.Id, Tenant: p.tenant, Dataset: m.Corpus,
		State: smilepb.JobState_JOB_QUEUED, Stage: "queued", Steps: m.Entries, ValAccuracy: -1, BestValAccuracy: -1,
		TableRequest: p.req, CreatedUnixMs: now.UnixMilli(), UpdatedUnixMs: now.UnixMilli(),
	}

	t.tableMu.Lock()
	defer t.tableMu.Unlock()
	cur, err := t.manifest(m.Id)
	switch {
	case err == nil && cur.Complete:
		rec.State, rec.Step, rec.CachedExamples = smilepb.JobState_JOB_SUCCEEDED, cur.Entries, cur.Entries
		rec.Stage = fmt.Sprintf("table %s is already complete: %d entries", m.Id, cur.Entries)
		if err := t.put(rec); err != nil {
			return nil, err
		}
		return rec, nil
	case err == nil:
		// Planned before (a build canceled, failed or left by a stop):
		// its list is stored; the new job computes what is missing.
	case errors.Is(err, ErrTableNotFound):
		cur = nil
	default:
		return nil, err
	}
	if err := t.checkTableFree(rec); err != nil {
		return nil, err
	}
	if cur == nil {
		if err := t.writeTable(m, p.grams); err != nil {
			return nil, err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkTableFreeLocked(rec); err != nil {
		return nil, err
	}
	if err := t.put(rec); err != nil {
		return nil, err
	}
	t.log.Info("building PLOT table", "job", rec.Id, "table", m.Id, "entries", m.Entries, "cut", m.Cut, "corpus", m.Corpus)
	t.start(rec, nil, nil)
	return proto.CloneOf(rec), nil
}

// checkTableFree fails when a job already builds rec's table.
func (t *trainer) checkTableFree(rec *smilepb.TrainJob) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.checkTableFreeLocked(rec)
}

func (t *trainer) checkTableFreeLocked(rec *smilepb.TrainJob) error {
	if t.closed {
		return fmt.Errorf("%w: node shutting down", ErrUnavailable)
	}
	key := jobKey(rec)
	if other, busy := t.active[key]; busy {
		return fmt.Errorf("%w: table %s is being built by job %s", ErrJobConflict, rec.Table, other)
	}
	other, err := t.storedActive(key)
	if err != nil {
		return err
	}
	if other != "" {
		return fmt.Errorf("%w: table %s has job %s left unfinished (it resumes when the node restarts, or cancel it)", ErrJobConflict, rec.Table, other)
	}
	return nil
}

// tablePlan is a validated table request: the table's manifest and list.
type tablePlan struct {
	man    *smilepb.PlotTable
	grams  []plot.Gram
	tenant string
	req    *smilepb.TableRequest // as recorded in the job: resolved, without the upload
}

// planTable validates a request, reads and counts its corpus and works out
// the table's list and id (ErrBadRequest, ErrBadDataset, ErrTableNotFound).
func (t *trainer) planTable(ctx context.Context, req *smilepb.TableRequest) (*tablePlan, error) {
	cfg := t.cfg.Plot
	tenant := req.GetTenant()
	if tenant == "" {
		tenant = "default"
	}
	if err := storage.ValidID(tenant); err != nil {
		return nil, fmt.Errorf("%w: tenant: %w", ErrBadRequest, err)
	}
	budget := req.GetBudgetBytes()
	switch {
	case budget < 0:
		return nil, fmt.Errorf("%w: budget of %d bytes: want > 0 (0: the default, %d)", ErrBadRequest, budget, cfg.DefaultBudgetBytes)
	case budget == 0:
		budget = cfg.DefaultBudgetBytes
	case budget > cfg.MaxBudgetBytes:
		return nil, fmt.Errorf("%w: budget of %d bytes: this node builds tables of at most %d", ErrBadRequest, budget, cfg.MaxBudgetBytes)
	}
	var base *smilepb.PlotTable
	if req.GetBase() != "" {
		var err error
		if base, err = t.manifest(req.GetBase()); err != nil {
			return nil, fmt.Errorf("base: %w", err)
		}
	}
	backbone := req.GetBackbone()
	switch {
	case backbone == "" && base != nil:
		backbone = base.Backbone
	case backbone == "":
		backbone = t.s.backbone
	case base != nil && base.Backbone != backbone:
		return nil, fmt.Errorf("%w: base table %s is of backbone %s, not %s", ErrBadRequest, base.Id, base.Backbone, backbone)
	}
	dev, ok := t.s.devices[backbone]
	if !ok {
		return nil, fmt.Errorf("%w: backbone %q is not served on this node", ErrBadRequest, backbone)
	}
	bb := dev.Backbone()
	info := bb.Info()
	if req.GetCut() > 255 {
		return nil, fmt.Errorf("%w: cut %d: a table of %s replaces layers 1..cut, cut in 1..%d (at least one layer must run)",
			ErrBadRequest, req.GetCut(), backbone, min(info.Layers-1, 255))
	}
	cut := int(req.GetCut())
	switch {
	case cut == 0 && base != nil:
		cut = int(base.Cut)
	case cut == 0:
		cut = info.Layers / 2
	case base != nil && cut != int(base.Cut):
		return nil, fmt.Errorf("%w: cut %d: base table %s is cut after layer %d", ErrBadRequest, cut, base.Id, base.Cut)
	}
	if cut < 1 || cut >= info.Layers || cut > 255 {
		return nil, fmt.Errorf("%w: cut %d: a table of %s replaces layers 1..cut, cut in 1..%d (at least one layer must run)",
			ErrBadRequest, cut, backbone, min(info.Layers-1, 255))
	}
	texts, where, corpus, err := t.tableCorpus(ctx, req)
	if err != nil {
		return nil, err
	}
	// A corpus text counts whole: serving cuts a long text to the model's
	// window, but every part of it is text of the domain.
	counter := plot.NewCounter()
	for i, text := range texts {
		if len(text) > model.MaxTextBytesLimit {
			return nil, fmt.Errorf("%w: %s: %w: %d bytes, the limit is %d", ErrBadDataset, where(i), model.ErrTextTooLong, len(text), model.MaxTextBytesLimit)
		}
		raw, err := bb.Tokenizer().Encode(text)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadDataset, where(i), err)
		}
		counter.AddText(bb, raw)
	}
	se, err := t.spec(ctx, backbone, patient(dev.Exec(t.s.cl.ActorSystem, tenant)))
	if err != nil {
		return nil, err
	}
	var list []plot.Gram
	if base != nil {
		if base.BackboneFingerprint != se.fingerprint {
			return nil, fmt.Errorf("%w: base table %s was built for other weights of %s (%s; the node's are %s)",
				ErrBadRequest, base.Id, backbone, base.BackboneFingerprint, se.fingerprint)
		}
		if list, err = t.readList(base); err != nil {
			return nil, err
		}
	} else {
		list = plot.Vocabulary(info.VocabSize)
	}
	w := bb.StateWidth(cut)
	grams, _ := plot.Extend(list, counter.Ranked(), w, budget)
	id, err := plot.TableID(se.fingerprint, cut, grams)
	if err != nil {
		return nil, fmt.Errorf("%w: table id: %w", ErrInternal, err)
	}
	now := t.s.now().UnixMilli()
	m := &smilepb.PlotTable{
		Id: id, Backbone: backbone, BackboneFingerprint: se.fingerprint, Cut: uint32(cut), Width: uint32(w),
		Entries: uint64(len(grams)), EntryBytes: uint64(plot.Bytes(grams, w)), Corpus: corpus, BudgetBytes: uint64(budget),
		CorpusSequences: uint64(counter.Texts()), CorpusPositions: uint64(counter.Positions()),
		CreatedUnixMs: now, UpdatedUnixMs: now,
	}
	if base != nil {
		m.Base = base.Id
	}
	for _, g := range grams {
		switch g.N {
		case 1:
			m.Unigrams++
		case 2:
			m.Bigrams++
		default:
			m.Trigrams++
		}
	}
	rr := proto.CloneOf(req)
	rr.ExamplesJsonl, rr.Backbone, rr.Cut, rr.BudgetBytes, rr.Tenant = nil, backbone, uint32(cut), budget, tenant
	return &tablePlan{man: m, grams: grams, tenant: tenant, req: rr}, nil
}

// tableCorpus reads a request's corpus texts: a pulled dataset's train
// split or the uploaded JSONL. where names text i for errors; corpus is
// what the manifest records.
func (t *trainer) tableCorpus(ctx context.Context, req *smilepb.TableRequest) (texts []string, where func(int) string, corpus string, err error) {
	switch {
	case req.GetDataset() != "" && len(req.GetExamplesJsonl()) > 0:
		return nil, nil, "", fmt.Errorf("%w: both a dataset (%q) and uploaded texts: send one", ErrBadRequest, req.GetDataset())
	case req.GetDataset() != "":
		// The train split only: a table built on a dataset's validation or
		// test texts would leak them into what a vPLM sees in training.
		ex, err := t.s.LoadDataset(ctx, req.GetDataset(), datasets.Train)
		if err != nil {
			return nil, nil, "", err
		}
		if len(ex) == 0 {
			return nil, nil, "", fmt.Errorf("%w: %s has no training texts", ErrBadDataset, req.GetDataset())
		}
		texts = make([]string, len(ex))
		for i, e := range ex {
			texts[i] = e.Text
		}
		src := req.GetDataset() + "/" + datasets.Train + ".jsonl"
		return texts, func(i int) string { return fmt.Sprintf("%s line %d", src, i+1) }, req.GetDataset(), nil
	case len(req.GetExamplesJsonl()) > 0:
		texts, lines, err := readCorpusJSONL(req.GetExamplesJsonl())
		if err != nil {
			return nil, nil, "", fmt.Errorf("%w: %w", ErrBadDataset, err)
		}
		sum := sha256.Sum256(req.GetExamplesJsonl())
		where := func(i int) string {
			if i < len(lines) {
				return fmt.Sprintf("%s line %d", tableUpload, lines[i])
			}
			return fmt.Sprintf("%s text %d", tableUpload, i)
		}
		return texts, where, uploadPrefix + hex.EncodeToString(sum[:]), nil
	}
	return nil, nil, "", fmt.Errorf("%w: no corpus: name a dataset or upload JSONL texts (examples_jsonl)", ErrBadDataset)
}

// readCorpusJSONL reads one JSON object a line with a "text" string
// (other fields, such as a label, are ignored; blank lines are skipped)
// and returns the texts and their lines. Errors are *datasets.LineError.
func readCorpusJSONL(b []byte) ([]string, []int, error) {
	var texts []string
	var lines []int
	for n := 1; len(b) > 0; n++ {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		b = rest
		if n == 1 {
			line = bytes.TrimPrefix(line, []byte("\ufeff"))
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		bad := func(sentinel error, format string, a ...any) error {
			err := sentinel
			if format != "" {
				err = fmt.Errorf("%w: "+format, append([]any{sentinel}, a...)...)
			}
			return &datasets.LineError{Path: tableUpload, Line: n, Err: err}
		}
		if !utf8.Valid(line) {
			return nil, nil, bad(datasets.ErrInvalidUTF8, "")
		}
		if line[0] != '{' {
			return nil, nil, bad(datasets.ErrMalformed, "not a JSON object")
		}
		var rec struct {
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			return nil, nil, bad(datasets.ErrMalformed, "%v", err)
		}
		if rec.Text == nil || strings.TrimSpace(*rec.Text) == "" {
			return nil, nil, bad(datasets.ErrEmptyText, "")
		}
		texts = append(texts, *rec.Text)
		lines = append(lines, n)
	}
	if len(texts) == 0 {
		return nil, nil, fmt.Errorf("%w: %s holds no texts", datasets.ErrEmptyText, tableUpload)
	}
	return texts, lines, nil
}

// Records of tables.

func tableHeadKey(id string) string        { return id + "/h" }
func tableListKey(id string, i int) string { return fmt.Sprintf("%s/g/%08d", id, i) }

// manifest reads a table's manifest (ErrTableNotFound).
func (t *trainer) manifest(id string) (*smilepb.PlotTable, error) {
	if !tableIDPattern.MatchString(id) {
		return nil, fmt.Errorf("%w: %q (a table id is plot-<32 hex digits>)", ErrTableNotFound, id)
	}
	b, err := t.store.GetRecord(storage.NSPlotTable, tableHeadKey(id))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrTableNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading table %s: %w", ErrUnavailable, id, err)
	}
	m := &smilepb.PlotTable{}
	if err := proto.Unmarshal(b, m); err != nil || m.Id != id {
		return nil, fmt.Errorf("%w: table %s: its manifest is corrupt (%v)", ErrInternal, id, err)
	}
	return m, nil
}

func (t *trainer) putManifest(m *smilepb.PlotTable) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("%w: encoding table %s: %w", ErrInternal, m.Id, err)
	}
	if err := t.store.PutRecords(storage.Record{NS: storage.NSPlotTable, Key: tableHeadKey(m.Id), Value: b}); err != nil {
		return fmt.Errorf("%w: storing table %s: %w", ErrUnavailable, m.Id, err)
	}
	return nil
}

// writeTable stores a new table's list, then its manifest (so a manifest
// always has its list). t.tableMu is held.
func (t *trainer) writeTable(m *smilepb.PlotTable, grams []plot.Gram) error {
	chunks := 0
	for lo := 0; lo < len(grams); chunks++ {
		hi, size := lo, 4
		for hi < len(grams) && size+grams[hi].KeyLen() <= maxListChunk {
			size += grams[hi].KeyLen()
			hi++
		}
		if err := t.store.PutRecords(storage.Record{NS: storage.NSPlotTable, Key: tableListKey(m.Id, chunks), Value: plot.EncodeGrams(grams[lo:hi])}); err != nil {
			return fmt.Errorf("%w: storing table %s: %w", ErrUnavailable, m.Id, err)
		}
		lo = hi
	}
	m.ListChunks = uint32(chunks)
	return t.putManifest(m)
}

// readList reads a table's n-gram list and checks it against the manifest
// and the table's id (its content address).
func (t *trainer) readList(m *smilepb.PlotTable) ([]plot.Gram, error) {
	corrupt := func(format string, a ...any) error {
		return fmt.Errorf("%w: table %s: its n-gram list is corrupt: %s", ErrInternal, m.Id, fmt.Sprintf(format, a...))
	}
	grams := make([]plot.Gram, 0, min(m.Entries, 1<<24))
	for i := range int(m.ListChunks) {
		b, err := t.store.GetRecord(storage.NSPlotTable, tableListKey(m.Id, i))
		if errors.Is(err, storage.ErrNotFound) {
			return nil, corrupt("chunk %d of %d is missing", i, m.ListChunks)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: reading table %s: %w", ErrUnavailable, m.Id, err)
		}
		g, err := plot.DecodeGrams(b)
		if err != nil {
			return nil, corrupt("chunk %d: %v", i, err)
		}
		grams = append(grams, g...)
	}
	if uint64(len(grams)) != m.Entries {
		return nil, corrupt("%d n-grams, the manifest says %d", len(grams), m.Entries)
	}
	if id, err := plot.TableID(m.BackboneFingerprint, int(m.Cut), grams); err != nil || id != m.Id {
		return nil, corrupt("it hashes to %s (%v)", id, err)
	}
	return grams, nil
}

// Tables lists the PLOT tables stored on this node, newest first.
func (s *Service) Tables(ctx context.Context) ([]*smilepb.PlotTable, error) {
	t, err := s.trainer()
	if err != nil {
		return nil, err
	}
	var out []*smilepb.PlotTable
	err = t.store.ScanRecords(storage.NSPlotTable, "", func(k string, v []byte) error {
		id, rest, _ := strings.Cut(k, "/")
		if rest != "h" {
			return nil
		}
		m := &smilepb.PlotTable{}
		if err := proto.Unmarshal(v, m); err != nil || m.Id != id {
			return fmt.Errorf("%w: table %s: its manifest is corrupt (%v)", ErrInternal, id, err)
		}
		out = append(out, m)
		return ctx.Err()
	})
	if err != nil {
		if errors.Is(err, ErrInternal) || ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: reading tables: %w", ErrUnavailable, err)
	}
	slices.SortFunc(out, func(a, b *smilepb.PlotTable) int {
		if c := cmp.Compare(b.CreatedUnixMs, a.CreatedUnixMs); c != 0 {
			return c
		}
		return strings.Compare(a.Id, b.Id)
	})
	return out, nil
}

// Table describes one PLOT table: its manifest, the entries stored for its
// backbone and cut (shared by all their tables), and, when it is open on
// this node, its memory and lookup record (ErrTableNotFound).
func (s *Service) Table(ctx context.Context, id string) (*smilepb.PlotTableInfo, error) {
	t, err := s.trainer()
	if err != nil {
		return nil, err
	}
	m, err := t.manifest(id)
	if err != nil {
		return nil, err
	}
	info := &smilepb.PlotTableInfo{Table: m}
	pe, err := t.store.PlotEntries(m.BackboneFingerprint, int(m.Cut))
	if err != nil {
		return nil, fmt.Errorf("%w: table %s: %w", ErrInternal, id, err)
	}
	n, b, err := pe.Usage()
	if err != nil {
		return nil, fmt.Errorf("%w: reading entries of table %s: %w", ErrUnavailable, id, err)
	}
	info.SharedEntries, info.SharedEntryBytes = uint64(n), uint64(b)
	if tab := t.tables.peek(id); tab != nil {
		st := tab.Stats()
		info.Open, info.MemoryBytes, info.MemoryBudgetBytes = true, st.MemoryBytes, t.cfg.Plot.CacheBytes
		info.Sequences, info.Positions = uint64(st.Sequences), uint64(st.Positions())
		info.HitsFull, info.HitsPartial, info.HitsUnigram, info.HitsZero = uint64(st.Full), uint64(st.Partial), uint64(st.Unigram), uint64(st.Zero)
		info.HitRate = st.HitRate()
		info.MemoryHits, info.SourceReads, info.Corrupt, info.ReadErrors = uint64(st.MemoryHits), uint64(st.SourceReads), uint64(st.Corrupt), uint64(st.ReadErrors)
	}
	return info, nil
}

// CanServe reports whether this node can serve a vPLM's lower layers: a
// full-mode vPLM anywhere; a plot-mode one where its table is, complete
// (tables stay on the node that built them). Placement asks it before
// activating a vPLM here.
func (s *Service) CanServe(v *smilepb.VPLM) bool {
	if !plotMode(v) {
		return true
	}
	t, err := s.trainer()
	if err != nil {
		return false
	}
	m, err := t.manifest(v.GetTable())
	return err == nil && m.Complete
}

// OpenTable opens a table on this node for lookups (as a plot-mode vPLM's
// first request does) and returns it: tools and tests compare its states
// with the backbone's. It fails for an unknown (ErrTableNotFound) or
// incomplete table (ErrTableIncomplete), or one built for other weights
// of its backbone (ErrBadRequest). Its device work, if any (the
// backbone's TrainSpec, once per node), is charged to tenant.
func (s *Service) OpenTable(ctx context.Context, id, tenant string) (*plot.Table, error) {
	t, err := s.trainer()
	if err != nil {
		return nil, err
	}
	m, err := t.manifest(id)
	if err != nil {
		return nil, err
	}
	if tenant == "" {
		tenant = "default"
	}
	e, err := t.tables.get(ctx, id, m.Backbone, tenant)
	if err != nil {
		return nil, err
	}
	return e.table, nil
}

// plotTableFor checks the table a plot-mode create names and opens it.
func (s *Service) plotTableFor(ctx context.Context, backbone, id, tenant string) (*smilepb.PlotTable, error) {
	t, err := s.trainer()
	if err != nil {
		return nil, fmt.Errorf("%w: this node serves no PLOT tables", ErrUnavailable)
	}
	m, err := t.manifest(id)
	if err != nil {
		return nil, err
	}
	if m.Backbone != backbone {
		return nil, fmt.Errorf("%w: table %s is of backbone %s, the vPLM's is %s", ErrBadRequest, id, m.Backbone, backbone)
	}
	if !m.Complete {
		t.mu.Lock()
		job := t.active[jobKey(&smilepb.TrainJob{Kind: JobKindTable, Table: id})]
		t.mu.Unlock()
		if job != "" {
			return nil, fmt.Errorf("%w: table %s is being built by job %s: create the vPLM once it succeeds", ErrTableIncomplete, id, job)
		}
		return nil, fmt.Errorf("%w: table %s: its build did not finish (build it again to complete it)", ErrTableIncomplete, id)
	}
	e, err := t.tables.get(ctx, id, backbone, tenant)
	if err != nil {
		return nil, err
	}
	return e.man, nil
}

// lowerFor is Env.Lower: a plot-mode vPLM's table, open on this node. A
// table that cannot serve the vPLM any more (gone, incomplete, built for
// other weights) is the service's fault, not the caller's.
func (t *trainer) lowerFor(ctx context.Context, v *smilepb.VPLM) (model.Lower, error) {
	tab, err := t.openVPLMTable(ctx, v)
	if err != nil {
		return nil, err
	}
	return tab, nil
}

// openVPLMTable opens a plot-mode vPLM's table.
func (t *trainer) openVPLMTable(ctx context.Context, v *smilepb.VPLM) (*plot.Table, error) {
	e, err := t.tables.get(ctx, v.GetTable(), v.GetBackbone(), v.GetTenant())
	switch {
	case err == nil:
		return e.table, nil
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrTimeout), ctx.Err() != nil:
		return nil, fmt.Errorf("vPLM %s: table %s: %w", v.GetId(), v.GetTable(), err)
	case errors.Is(err, ErrTableNotFound):
		// Tables live in the Badger of the node that built them; the
		// catalog (and so the vPLM) may reach nodes that lack it.
		return nil, fmt.Errorf("%w: vPLM %s uses table %s, which is not stored on this node (tables are node-local; build it here with the same request)", ErrUnavailable, v.GetId(), v.GetTable())
	}
	return nil, fmt.Errorf("%w: vPLM %s cannot use its table %s: %w", ErrInternal, v.GetId(), v.GetTable(), err)
}

// plotTables are the tables open on a node: one plot.Table per id,
// opened on first use, shared by every vPLM and job using it, and kept
// until the node stops.
type plotTables struct {
	t      *trainer
	ctx    context.Context // background warming; canceled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	open   map[string]*openTable
	closed bool
}

type openTable struct {
	ready chan struct{}
	table *plot.Table
	man   *smilepb.PlotTable
	err   error
}

func newPlotTables(t *trainer) *plotTables {
	ctx, cancel := context.WithCancel(context.Background())
	return &plotTables{t: t, ctx: ctx, cancel: cancel, open: map[string]*openTable{}}
}

// close stops background warming and waits for it.
func (p *plotTables) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}

// peek is an open table, or nil.
func (p *plotTables) peek(id string) *plot.Table {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.open[id]; ok {
		select {
		case <-e.ready:
			return e.table
		default:
		}
	}
	return nil
}

// get returns table id of backbone, opening it if needed (once: callers
// meanwhile wait for it; a failed open is tried again by the next caller).
// Device work (the backbone's TrainSpec) is charged to tenant.
func (p *plotTables) get(ctx context.Context, id, backbone, tenant string) (*openTable, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, fmt.Errorf("%w: node shutting down", ErrUnavailable)
		}
		e, ok := p.open[id]
		opener := !ok
		if opener {
			// The table loads under the node's context, not the first
			// caller's: a request whose deadline is shorter than the load
			// stops waiting, and the load goes on for the next one.
			e = &openTable{ready: make(chan struct{})}
			p.open[id] = e
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				e.table, e.man, e.err = p.load(p.ctx, id, backbone, tenant)
				if e.err != nil {
					p.mu.Lock()
					delete(p.open, id)
					p.mu.Unlock()
				}
				close(e.ready)
			}()
		}
		p.mu.Unlock()
		select {
		case <-e.ready:
			if e.err != nil {
				if opener {
					return nil, e.err
				}
				continue // another caller's load failed: try once as the opener
			}
			if e.man.Backbone != backbone {
				return nil, fmt.Errorf("%w: table %s is of backbone %s, not %s", ErrBadRequest, id, e.man.Backbone, backbone)
			}
			return e, nil
		case <-ctx.Done():
			return nil, ctxWorkError(ctx)
		}
	}
}

// load opens a complete table for lookups.
func (p *plotTables) load(ctx context.Context, id, backbone, tenant string) (*plot.Table, *smilepb.PlotTable, error) {
	t := p.t
	m, err := t.manifest(id)
	if err != nil {
		return nil, nil, err
	}
	if m.Backbone != backbone {
		return nil, nil, fmt.Errorf("%w: table %s is of backbone %s, not %s", ErrBadRequest, id, m.Backbone, backbone)
	}
	if !m.Complete {
		return nil, nil, fmt.Errorf("%w: table %s", ErrTableIncomplete, id)
	}
	dev, ok := t.s.devices[backbone]
	if !ok {
		return nil, nil, fmt.Errorf("%w: backbone %q is not served on this node", ErrUnavailable, backbone)
	}
	se, err := t.spec(ctx, backbone, patient(dev.Exec(t.s.cl.ActorSystem, tenant)))
	if err != nil {
		return nil, nil, err
	}
	if se.fingerprint != m.BackboneFingerprint {
		return nil, nil, fmt.Errorf("%w: table %s was built for other weights of %s (%s; the node's are %s)",
			ErrBadRequest, id, backbone, m.BackboneFingerprint, se.fingerprint)
	}
	grams, err := t.readList(m)
	if err != nil {
		return nil, nil, err
	}
	merger, err := plot.NewMerger(se.spec, int(m.Cut))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: table %s: %w", ErrInternal, id, err)
	}
	if merger.Width() != int(m.Width) {
		return nil, nil, fmt.Errorf("%w: table %s has width %d, the backbone's states at layer %d are %d wide", ErrInternal, id, m.Width, m.Cut, merger.Width())
	}
	pe, err := t.store.PlotEntries(m.BackboneFingerprint, int(m.Cut))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: table %s: %w", ErrInternal, id, err)
	}
	log := t.log.With("table", id)
	var tab *plot.Table
	tab = plot.NewTable(id, merger, grams, plot.Entries{KV: pe}, t.cfg.Plot.CacheBytes, func(g plot.Gram, err error) {
		log.Warn("PLOT table entry unusable: its positions fall back to shorter n-grams until it is recomputed", "ngram", g.String(), "err", err)
		p.repair(tab, g, m, tenant)
	})
	log.Info("PLOT table opened", "entries", len(grams), "cut", m.Cut, "cache_bytes", t.cfg.Plot.CacheBytes)
	if t.cfg.Plot.Warm {
		p.warm(tab, grams)
	}
	return tab, m, nil
}

// repair recomputes a corrupt entry in the background (device work of
// tenant), stores it over the bad one and lets the table read it again.
// It is called with the table's lock held, so it only starts the work.
func (p *plotTables) repair(tab *plot.Table, g plot.Gram, m *smilepb.PlotTable, tenant string) {
	p.spawn(func() {
		t := p.t
		log := t.log.With("table", m.Id, "ngram", g.String())
		dev, ok := t.s.devices[m.Backbone]
		if !ok {
			return
		}
		pe, err := t.store.PlotEntries(m.BackboneFingerprint, int(m.Cut))
		if err != nil {
			log.Error("PLOT entry repair", "err", err)
			return
		}
		var entries [][]byte
		err = patient(dev.Exec(t.s.cl.ActorSystem, tenant))(p.ctx, int(g.N), func(bb model.Backbone) error {
			entries, err = plot.Compute(p.ctx, bb, int(m.Cut), []plot.Gram{g})
			return err
		})
		if err == nil {
			err = plot.Entries{KV: pe}.Put([]plot.Gram{g}, entries)
		}
		if err != nil {
			log.Error("PLOT entry repair failed: the n-gram stays skipped", "err", err)
			return
		}
		tab.Forgive(g)
		log.Info("PLOT entry repaired")
	})
}

// spawn runs fn in the background until the node stops (close waits for
// it); nothing once it has.
func (p *plotTables) spawn(fn func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn()
	}()
}

// warm reads a table's entries into memory in the background, in list
// order, a slice at a time (lookups go on in between), until its cache is
// full or the node stops.
func (p *plotTables) warm(tab *plot.Table, grams []plot.Gram) {
	p.spawn(func() {
		start, read := time.Now(), 0
		largest := int64(plot.EntryLen(plot.MaxN, tab.Width()) - 4)
		const step = 512
		for lo := 0; lo < len(grams); lo += step {
			if p.ctx.Err() != nil {
				return
			}
			read += tab.Warm(grams[lo:min(lo+step, len(grams))])
			if tab.Stats().MemoryBytes+largest > p.t.cfg.Plot.CacheBytes {
				break
			}
		}
		p.t.log.Debug("PLOT table warmed", "table", tab.ID(), "entries", read, "took", time.Since(start))
	})
}

// buildTable runs a table job: it computes the entries of the table's
// n-grams that are not stored yet, a batch of PlotConfig.BatchGrams at a
// time (each a device work item of the job's tenant, then one write), and
// marks the table complete. Cancel and shutdown take effect between
// batches; whatever was stored stays and is not computed again.
func (t *trainer) buildTable(ctx context.Context, j *runningJob) error {
	rec := j.snapshot()
	m, err := t.manifest(rec.Table)
	if errors.Is(err, ErrTableNotFound) {
		return fmt.Errorf("%w: the manifest of table %s is gone", ErrInternal, rec.Table)
	}
	if err != nil {
		return err
	}
	if m.Complete {
		t.finish(j, func(r *smilepb.TrainJob) {
			r.State, r.Step, r.Steps = smilepb.JobState_JOB_SUCCEEDED, m.Entries, m.Entries
			r.Stage = fmt.Sprintf("table %s is complete: %d entries", m.Id, m.Entries)
		})
		return nil
	}
	dev, ok := t.s.devices[m.Backbone]
	if !ok {
		return fmt.Errorf("%w: backbone %q is not served on this node", ErrUnavailable, m.Backbone)
	}
	exec := patient(dev.Exec(t.s.cl.ActorSystem, rec.Tenant))
	se, err := t.spec(ctx, m.Backbone, exec)
	if err != nil {
		return err
	}
	if se.fingerprint != m.BackboneFingerprint {
		return fmt.Errorf("%w: table %s was planned for other weights of %s (%s; the node's are %s)",
			ErrBadRequest, m.Id, m.Backbone, m.BackboneFingerprint, se.fingerprint)
	}
	grams, err := t.readList(m)
	if err != nil {
		return err
	}
	cut := int(m.Cut)
	pe, err := t.store.PlotEntries(m.BackboneFingerprint, cut)
	if err != nil {
		return fmt.Errorf("%w: table %s: %w", ErrInternal, m.Id, err)
	}
	if err := t.update(j, true, func(r *smilepb.TrainJob) {
		r.State, r.Stage, r.Steps = smilepb.JobState_JOB_CACHING, "finding the entries already stored", m.Entries
	}); err != nil {
		return err
	}
	missing, err := missingEntries(ctx, pe, grams)
	if err != nil {
		return err
	}
	total, present := len(grams), len(grams)-len(missing)
	if err := t.update(j, true, func(r *smilepb.TrainJob) {
		r.CachedExamples, r.Step = uint64(present), uint64(present)
		r.Stage = fmt.Sprintf("computing entries %d/%d", present, total)
	}); err != nil {
		return err
	}
	start, computed, bs := time.Now(), 0, t.cfg.Plot.BatchGrams
	for b, lo := 0, 0; lo < len(missing); b++ {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		hi := min(lo+bs, len(missing))
		batch, tokens := missing[lo:hi], 0
		for _, g := range batch {
			tokens += int(g.N)
		}
		var entries [][]byte
		err := exec(ctx, tokens, func(bb model.Backbone) error {
			var err error
			entries, err = plot.Compute(ctx, bb, cut, batch)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("table %s: computing entries: %w", m.Id, err)
		}
		if err := (plot.Entries{KV: pe}).Put(batch, entries); err != nil {
			return fmt.Errorf("%w: storing entries of table %s: %w", ErrUnavailable, m.Id, err)
		}
		computed += len(batch)
		lo = hi
		rate := float64(computed) / max(time.Since(start).Seconds(), 1e-9)
		done := present + computed
		if err := t.update(j, false, func(r *smilepb.TrainJob) {
			r.Step, r.ExamplesPerS = uint64(done), rate
			r.EtaMs = int64(float64(total-done) / rate * 1000)
			r.Stage = fmt.Sprintf("computing entries %d/%d", done, total)
		}); err != nil {
			return err
		}
		if t.cfg.AfterCheckpoint != nil {
			t.cfg.AfterCheckpoint(ctx, j.id, b+1)
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	t.tableMu.Lock()
	done := proto.CloneOf(m)
	done.Complete, done.UpdatedUnixMs = true, t.s.now().UnixMilli()
	err = t.putManifest(done)
	t.tableMu.Unlock()
	if err != nil {
		return err
	}
	t.finish(j, func(r *smilepb.TrainJob) {
		r.State, r.Step, r.EtaMs = smilepb.JobState_JOB_SUCCEEDED, uint64(total), 0
		r.Stage = fmt.Sprintf("table complete: %d entries, %d computed, %d already stored", total, computed, present)
	})
	t.log.Info("PLOT table built", "job", j.id, "table", m.Id, "entries", total, "computed", computed, "took", time.Since(start))
	return nil
}

// missingEntries lists the n-grams of grams without a stored entry, in
// order, reading a slice at a time (cancel takes effect in between).
func missingEntries(ctx context.Context, pe *storage.PlotEntries, grams []plot.Gram) ([]plot.Gram, error) {
	var missing []plot.Gram
	const step = 4096
	for lo := 0; lo < len(grams); lo += step {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		m, err := plot.Entries{KV: pe}.Missing(grams[lo:min(lo+step, len(grams))])
		if err != nil {
			return nil, fmt.Errorf("%w: reading table entries: %w", ErrUnavailable, err)
		}
		missing = append(missing, m...)
	}
	return missing, nil
}
