package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/model"
)

// HTTPConfig bounds what the HTTP API accepts.
type HTTPConfig struct {
	MaxBodyBytes   int64         // request bodies beyond this get payload_too_large
	RequestTimeout time.Duration // per request, unless the client asks for less (?timeout_ms=)
	// MaxUploadBytes bounds the bodies of train and eval, which may carry a
	// whole JSONL file of examples (base64 inside the JSON).
	MaxUploadBytes int64
	// EvalTimeout replaces RequestTimeout for eval, which runs a whole
	// dataset through the model.
	EvalTimeout  time.Duration
	MaxListLimit int
	// MaxInflight bounds the requests being handled at once; beyond it a
	// request is answered overloaded at once, so a flood of connections
	// cannot grow memory without bound (each may hold a body).
	MaxInflight int
}

// Validate checks the configuration.
func (c HTTPConfig) Validate() error {
	switch {
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("api: max body bytes %d: want at least 1024", c.MaxBodyBytes)
	case c.RequestTimeout < time.Millisecond:
		return fmt.Errorf("api: request timeout %v: want at least 1ms", c.RequestTimeout)
	case c.MaxUploadBytes < c.MaxBodyBytes:
		return fmt.Errorf("api: max upload bytes %d: want at least max body bytes (%d)", c.MaxUploadBytes, c.MaxBodyBytes)
	case c.EvalTimeout < time.Millisecond:
		return fmt.Errorf("api: eval timeout %v: want at least 1ms", c.EvalTimeout)
	case c.MaxListLimit < 1:
		return fmt.Errorf("api: max list limit %d: want at least 1", c.MaxListLimit)
	case c.MaxInflight < 1:
		return fmt.Errorf("api: max in-flight %d: want at least 1", c.MaxInflight)
	}
	return nil
}

// DefaultHTTPConfig returns the defaults.
func DefaultHTTPConfig() HTTPConfig {
	return HTTPConfig{MaxBodyBytes: 8 << 20, RequestTimeout: 30 * time.Second, MaxUploadBytes: 64 << 20,
		EvalTimeout: 10 * time.Minute, MaxListLimit: 1000, MaxInflight: 8192}
}

// Handler serves the HTTP API over a node's service. Handlers are thin: they
// decode, call the service, and encode; errors go through one mapping.
type Handler struct {
	svc *actors.Service
	cfg HTTPConfig
	log *slog.Logger
	mux *http.ServeMux
	sem chan struct{}
	// kinds says which routes (by mux pattern) escape the default deadline.
	kinds map[string]routeKind
	// trainer serves the training and evaluation routes, tables the PLOT
	// table routes: svc, but for tests.
	trainer trainer
	tables  tableService
	// stop is closed by StopStreams: open event streams end.
	stop     chan struct{}
	stopOnce sync.Once
}

// StopStreams ends every open event stream (their clients reconnect to
// wherever the API is served next). A server registers it with
// http.Server.RegisterOnShutdown: Shutdown waits for open connections, and
// a stream would otherwise hold it until the job ends.
func (h *Handler) StopStreams() { h.stopOnce.Do(func() { close(h.stop) }) }

// routeKind is how a route's deadline is set.
type routeKind uint8

const (
	routeDefault routeKind = iota // RequestTimeout, or ?timeout_ms=
	routeLong                     // EvalTimeout, or ?timeout_ms=
	routeStream                   // none: it lasts until its subject ends or the client leaves
)

// NewHandler builds the HTTP API.
func NewHandler(svc *actors.Service, cfg HTTPConfig, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{svc: svc, cfg: cfg, log: log, mux: http.NewServeMux(), sem: make(chan struct{}, max(cfg.MaxInflight, 1)),
		kinds: map[string]routeKind{}, stop: make(chan struct{})}
	h.mux.HandleFunc("GET /v1/health", h.health)
	h.mux.HandleFunc("POST /v1/models", h.create)
	h.mux.HandleFunc("GET /v1/models", h.list)
	h.mux.HandleFunc("GET /v1/models/{id}", h.get)
	h.mux.HandleFunc("DELETE /v1/models/{id}", h.delete)
	h.mux.HandleFunc("POST /v1/models/{id}/classify", h.classify)
	h.mux.HandleFunc("POST /v1/models/{id}/embed", h.embed)
	h.mux.HandleFunc("PUT /v1/tenants/{name}", h.putTenant)
	h.mux.HandleFunc("GET /v1/tenants/{name}", h.getTenant)
	h.mux.HandleFunc("GET /v1/stats", h.stats)
	h.trainRoutes()
	h.tableRoutes()
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, Errorf(CodeNotFound, "no route %s %s", r.Method, r.URL.Path))
	})
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v) // the server's own way to abort a response
			}
			h.log.Error("panic in handler", "path", r.URL.Path, "panic", v)
			writeError(w, Errorf(CodeInternal, "internal error"))
		}
	}()
	select {
	case h.sem <- struct{}{}:
		defer func() { <-h.sem }()
	default:
		writeError(w, Errorf(CodeOverloaded, "%d requests in progress: retry later", cap(h.sem)))
		return
	}
	// The deadline is set here, once, so handlers use r.Context(). A
	// stream (a training job's events) has none: it lasts minutes, and
	// ends when its job does or the client goes away.
	ctx := r.Context()
	if _, pattern := h.mux.Handler(r); h.kinds[pattern] != routeStream {
		d := h.cfg.RequestTimeout
		if h.kinds[pattern] == routeLong {
			d = h.cfg.EvalTimeout
		}
		bounded, cancel, err := h.context(r, d)
		if err != nil {
			writeError(w, err)
			return
		}
		defer cancel()
		ctx = bounded
	}
	h.mux.ServeHTTP(w, r.WithContext(ctx))
}

// handle registers a route whose deadline is not the default one.
func (h *Handler) handle(pattern string, kind routeKind, fn http.HandlerFunc) {
	h.mux.HandleFunc(pattern, fn)
	h.kinds[pattern] = kind
}

// context bounds a request by d, or the client's shorter ?timeout_ms=.
func (h *Handler) context(r *http.Request, d time.Duration) (context.Context, context.CancelFunc, error) {
	if s := r.URL.Query().Get("timeout_ms"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 1 {
			return nil, nil, Errorf(CodeBadRequest, "timeout_ms %q: want a positive integer", s)
		}
		if ms < d.Milliseconds() { // compared before multiplying: no overflow
			d = time.Duration(ms) * time.Millisecond
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return ctx, cancel, nil
}

// ToError maps any error of the service to its wire form: the code table
// (errors.go) then gives the HTTP status.
func ToError(err error) *Error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	code := actors.Code(err)
	if !KnownCode(code) {
		code = CodeInternal
	}
	return &Error{Code: code, Message: actors.Message(err), Index: actors.TextIndex(err)}
}

// WriteError answers with err's code, status and JSON body, as every API
// route does (for servers that answer before a Handler exists).
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }

func writeError(w http.ResponseWriter, err error) {
	e := ToError(err)
	body := ErrorBody{Error: ErrorJSON{Code: e.Code, Message: e.Message}}
	if e.Index >= 0 {
		i := e.Index
		body.Error.Index = &i
	}
	if e.Code == CodeOverloaded || e.Code == CodeRateLimited || e.Code == CodeTenantOverLimit {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.Status(), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body strictly: bounded size, known fields only, one value.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := h.body(w, r, h.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return Errorf(CodeBadRequest, "empty request body")
		}
		return Errorf(CodeBadRequest, "request body: %v", err)
	}
	if dec.More() {
		return Errorf(CodeBadRequest, "request body: more than one JSON value")
	}
	return nil
}

// body reads a JSON request body of at most limit bytes, checking its
// content type and that it is UTF-8.
func (h *Handler) body(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	// curl -d labels its body form-urlencoded unless told otherwise; the
	// body is read as JSON either way. Anything else is a client mistake.
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") &&
		!strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return nil, Errorf(CodeBadRequest, "content type %q: want application/json", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, Errorf(CodePayloadTooLarge, "request body over %d bytes", limit)
		}
		return nil, Errorf(CodeBadRequest, "reading the request body: %v", err)
	}
	// JSON is UTF-8; the decoder would quietly turn bad bytes into U+FFFD
	// and answer for a text the client never sent.
	if !utf8.Valid(body) {
		return nil, Errorf(CodeInvalidUTF8, "request body is not valid UTF-8 (byte offset %d)", invalidAt(body))
	}
	return body, nil
}

// invalidAt is the offset of the first byte of b that is not valid UTF-8.
func invalidAt(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

func (h *Handler) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "backbone": h.svc.DefaultBackbone()})
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	var req CreateModelRequest
	if err := h.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	spec, err := createSpec(req)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	v, err := h.svc.Create(ctx, spec)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, ModelJSON(v))
}

func createSpec(req CreateModelRequest) (actors.CreateSpec, error) {
	spec := actors.CreateSpec{ID: req.ID, Tenant: req.Tenant, Backbone: req.Backbone, Labels: req.Labels, Rank: req.Rank, Layers: req.Layers, EmbedDim: req.EmbedDim,
		Mode: req.Mode, Table: req.Table}
	if req.Precision != "" {
		p, err := model.ParsePrecision(req.Precision)
		if err != nil {
			return spec, Errorf(CodeBadRequest, "precision %q: want fp16 or int8", req.Precision)
		}
		spec.Precision = p
	}
	// The mode is checked here too, before the service opens any table:
	// these refusals need no node.
	switch req.Mode {
	case "", ModeFull:
		if req.Table != "" {
			return spec, Errorf(CodeBadRequest, "table %q given with mode %q: a table is for mode %q", req.Table, cmp.Or(req.Mode, ModeFull), ModePlot)
		}
	case ModePlot:
		if req.Table == "" {
			return spec, Errorf(CodeBadRequest, "mode %q needs a PLOT table (\"table\": an id of GET /v1/tables)", ModePlot)
		}
	default:
		return spec, Errorf(CodeBadRequest, "mode %q: want %q or %q", req.Mode, ModeFull, ModePlot)
	}
	switch req.Task {
	case "classify":
		spec.Task = smilepb.Task_TASK_CLASSIFY
	case "embed":
		spec.Task = smilepb.Task_TASK_EMBED
	default:
		return spec, Errorf(CodeBadRequest, "task %q: want classify or embed", req.Task)
	}
	if req.Adapter != "" {
		k, err := model.ParseAdapterKind(req.Adapter)
		if err != nil {
			return spec, Errorf(CodeBadRequest, "%v", err)
		}
		spec.Adapter = k
	}
	if req.Rank < 0 {
		return spec, Errorf(CodeBadRequest, "rank %d: want a positive rank", req.Rank)
	}
	return spec, nil
}

// ModelJSON converts a catalog entry to its JSON form.
func ModelJSON(v *smilepb.VPLM) Model {
	m := Model{
		ID: v.Id, Tenant: v.Tenant, Backbone: v.Backbone, Labels: v.Labels, EmbedDim: int(v.EmbedDim),
		Version: v.Version, ParamsDigest: v.ParamsDigest, ParamsBytes: v.ParamsBytes,
		CreatedMs: v.CreatedUnixMs, UpdatedMs: v.UpdatedUnixMs, Layers: []int{}, Mode: ModeFull,
		Precision: cmp.Or(v.Precision, "fp16"),
	}
	if v.Mode == ModePlot {
		m.Mode, m.Table = ModePlot, v.Table
	}
	switch v.Task {
	case smilepb.Task_TASK_CLASSIFY:
		m.Task = "classify"
	case smilepb.Task_TASK_EMBED:
		m.Task = "embed"
	}
	if a := v.Adapter; a != nil {
		m.Adapter = "bottleneck"
		if a.Kind == smilepb.AdapterKind_ADAPTER_LORA {
			m.Adapter = "lora"
		}
		m.Rank = int(a.Rank)
		for _, l := range a.Layers {
			m.Layers = append(m.Layers, int(l))
		}
	}
	return m
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > h.cfg.MaxListLimit {
			writeError(w, Errorf(CodeBadRequest, "limit %q: want 1..%d", s, h.cfg.MaxListLimit))
			return
		}
		limit = n
	}
	ctx := r.Context()
	vs, err := h.svc.List(ctx, q.Get("tenant"), q.Get("after"), limit)
	if err != nil {
		writeError(w, err)
		return
	}
	out := ModelList{Models: make([]Model, 0, len(vs))}
	for _, v := range vs {
		out.Models = append(out.Models, ModelJSON(v))
	}
	if len(vs) == limit {
		out.Next = vs[len(vs)-1].Id
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	v, err := h.svc.Get(ctx, r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ModelJSON(v))
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := h.svc.Delete(ctx, r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) texts(w http.ResponseWriter, r *http.Request) ([]string, error) {
	var req TextsRequest
	if err := h.decode(w, r, &req); err != nil {
		return nil, err
	}
	if len(req.Texts) == 0 {
		return nil, Errorf(CodeBadRequest, "no texts: send {\"texts\": [\"...\"]}")
	}
	return req.Texts, nil
}

func timingsJSON(t *smilepb.Timings) Timings {
	return Timings{
		TokenizeUs: t.GetTokenizeUs(), QueueUs: t.GetQueueUs(), ComputeUs: t.GetComputeUs(), TotalUs: t.GetTotalUs(),
		BatchRows: int(t.GetBatchRows()), BatchVPLMs: int(t.GetBatchVplms()),
	}
}

// textsCall runs an inference handler's common part: decode the texts,
// bound the call's time, call the service, and answer its error or the
// JSON that toJSON makes of its reply.
func textsCall[R any](h *Handler, w http.ResponseWriter, r *http.Request,
	call func(ctx context.Context, id string, texts []string) (R, error), toJSON func(id string, rep R) any) {
	texts, err := h.texts(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	id := r.PathValue("id")
	rep, err := call(ctx, id, texts)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toJSON(id, rep))
}

func (h *Handler) classify(w http.ResponseWriter, r *http.Request) {
	textsCall(h, w, r, h.svc.Classify, func(id string, rep *smilepb.ClassifyReply) any {
		out := ClassifyResponse{Model: id, Version: rep.Version, Timings: timingsJSON(rep.Timings), Predictions: make([]Prediction, len(rep.Predictions))}
		for i, p := range rep.Predictions {
			probs := make(map[string]float32, len(p.Probs))
			for k, v := range p.Probs {
				name := strconv.Itoa(k)
				if k < len(rep.Labels) {
					name = rep.Labels[k]
				}
				probs[name] = v
			}
			out.Predictions[i] = Prediction{Label: p.Label, Index: int(p.Index), Probs: probs}
		}
		return out
	})
}

func (h *Handler) embed(w http.ResponseWriter, r *http.Request) {
	textsCall(h, w, r, h.svc.Embed, func(id string, rep *smilepb.EmbedReply) any {
		out := EmbedResponse{Model: id, Version: rep.Version, Timings: timingsJSON(rep.Timings), Embeddings: make([][]float32, len(rep.Embeddings))}
		for i, v := range rep.Embeddings {
			out.Embeddings[i] = v.Values
		}
		if len(out.Embeddings) > 0 {
			out.Dim = len(out.Embeddings[0])
		}
		return out
	})
}

func (h *Handler) putTenant(w http.ResponseWriter, r *http.Request) {
	var req TenantRequest
	if err := h.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Weight == 0 {
		req.Weight = 1
	}
	const maxLimit = 1 << 30
	if req.Weight < 0 || req.MaxInflight < 0 || req.RatePerSec < 0 || req.Burst < 0 ||
		req.MaxInflight > maxLimit || req.Burst > maxLimit || req.RatePerSec > maxLimit || req.Weight > maxLimit {
		writeError(w, Errorf(CodeBadRequest, "tenant limits must be between 0 and %d", maxLimit))
		return
	}
	ctx := r.Context()
	t := &smilepb.Tenant{Name: r.PathValue("name"), Weight: req.Weight, MaxInflight: uint32(req.MaxInflight), RatePerS: req.RatePerSec, Burst: uint32(req.Burst),
		MaxVplms: req.MaxVPLMs, MaxBytes: req.MaxBytes}
	if err := h.svc.PutTenant(ctx, t); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func (h *Handler) getTenant(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, err := h.context(r, h.cfg.RequestTimeout)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	name := r.PathValue("name")
	t, u, err := h.svc.Tenant(ctx, name)
	if err != nil {
		writeError(w, err)
		return
	}
	out := Tenant{Name: name, TenantRequest: TenantRequest{Weight: 1}, VPLMs: u.GetVplms(), Bytes: u.GetBytes()}
	if t != nil {
		out.TenantRequest = TenantRequest{Weight: t.GetWeight(), MaxInflight: int(t.GetMaxInflight()), RatePerSec: t.GetRatePerS(),
			Burst: int(t.GetBurst()), MaxVPLMs: t.GetMaxVplms(), MaxBytes: t.GetMaxBytes()}
		if out.Weight == 0 {
			out.Weight = 1
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) stats(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st, err := h.svc.DeviceStats(ctx)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": st})
}

var _ http.Handler = (*Handler)(nil)
