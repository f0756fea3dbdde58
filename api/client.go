package api

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
)

// Client speaks the HTTP API of a SMILE cluster (the CLI uses it). Any node
// answers any request, so a client may know several: a call goes to the
// endpoint that answered last, and moves on to the next one while endpoints
// are unreachable or answer unavailable or overloaded, backing off between
// attempts, until the call's deadline. Errors the server answers come back
// as *Error with their stable code; refusals (not_found, bad_request, ...)
// come back at once, never resent.
//
// What is resent: reads, classify, embed, eval, delete and the other
// writes whose repetition changes nothing are resent after any failure. A
// create is resent too; when its resend is refused as already_exists, the
// vPLM is read back and returned if it is what was asked for (an earlier
// attempt of the same call made it). A call that starts a job (train,
// building a table) is resent only when it surely reached no server (the
// connection could not be opened): a second send could start a second job.
type Client struct {
	// Endpoints are the base URLs of the nodes, e.g. "http://127.0.0.1:7077".
	Endpoints []string
	// Base is the first endpoint, for messages; a Client built without
	// NewClient may set Base alone.
	Base string
	HTTP *http.Client
	// Timeout bounds a call whose context has no deadline, its retries
	// included, so that a call against a cluster that stays down ends
	// (0: DefaultTimeout; negative: no bound). Streams (WatchJob) have none.
	Timeout time.Duration
	// EvalTimeout replaces Timeout for Eval, which runs a whole dataset
	// through a vPLM (0: DefaultEvalTimeout).
	EvalTimeout time.Duration
	// UnreachableRounds, when positive, ends a call before its deadline once
	// every endpoint in turn has failed to open a connection (nothing
	// listening, no route, no such host) this many times in a row: a
	// command-line tool should say at once that no server is there, where a
	// service rather waits out a restart. 0: retry until the deadline.
	UnreachableRounds int

	preferred atomic.Uint32 // index in Endpoints of the endpoint that answered last

	mu sync.Mutex
	// downUntil marks the endpoints that could not be reached lately: calls
	// pass them over until then while another may answer, so a node that is
	// gone (a dial that times out) does not cost every call a dial.
	downUntil map[string]time.Time
}

// Defaults of the Client's bounds.
const (
	DefaultTimeout = 2 * time.Minute
	// DefaultEvalTimeout lies above the server's own bound of an eval (its
	// HTTPConfig.EvalTimeout, 10 minutes by default), so the server's decides.
	DefaultEvalTimeout = 15 * time.Minute
)

// Backoff between the attempts of a call (with jitter: each pause lies
// between half the step and the step), and how long an endpoint that could
// not be reached is passed over.
const (
	retryBackoffMin = 10 * time.Millisecond
	retryBackoffMax = 500 * time.Millisecond
	downFor         = time.Second
)

// NewClient returns a client for the given endpoints: URLs, or host:port,
// each argument one endpoint or a comma-separated list of them. Calls start
// at the first.
func NewClient(bases ...string) (*Client, error) {
	var eps []string
	for _, arg := range bases {
		for base := range strings.SplitSeq(arg, ",") {
			if base = strings.TrimSpace(base); base == "" {
				continue
			}
			ep, err := endpointURL(base)
			if err != nil {
				return nil, err
			}
			if !slices.Contains(eps, ep) {
				eps = append(eps, ep)
			}
		}
	}
	if len(eps) == 0 {
		return nil, Errorf(CodeBadRequest, "no server address: want http://host:port")
	}
	return &Client{Endpoints: eps, Base: eps[0], HTTP: &http.Client{}}, nil
}

// endpointURL is base as a URL without a trailing slash.
func endpointURL(base string) (string, error) {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", Errorf(CodeBadRequest, "server address %q: want http://host:port", base)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// endpoints are the endpoints calls go to.
func (c *Client) endpoints() []string {
	if len(c.Endpoints) > 0 {
		return c.Endpoints
	}
	return []string{c.Base}
}

// start is the index of the endpoint a call tries first.
func (c *Client) start(eps []string) int {
	return c.pick(eps, int(c.preferred.Load()%uint32(len(eps))))
}

// pick is the index of the first endpoint from i on, in turn, that is not
// marked unreachable; i when all are.
func (c *Client) pick(eps []string, i int) int {
	i %= len(eps)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for k := range len(eps) {
		if j := (i + k) % len(eps); !now.Before(c.downUntil[eps[j]]) {
			return j
		}
	}
	return i
}

// mark records whether ep could be reached.
func (c *Client) mark(ep string, reached bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case reached:
		delete(c.downUntil, ep)
	case c.downUntil == nil:
		c.downUntil = map[string]time.Time{ep: time.Now().Add(downFor)}
	default:
		c.downUntil[ep] = time.Now().Add(downFor)
	}
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// bound gives ctx the Client's deadline when it has none (long: Eval's).
func (c *Client) bound(ctx context.Context, long bool) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.Timeout < 0 {
		return ctx, func() {}
	}
	d := cmp.Or(c.Timeout, DefaultTimeout)
	if long {
		d = max(d, cmp.Or(c.EvalTimeout, DefaultEvalTimeout))
	}
	return context.WithTimeout(ctx, d)
}

// apiCall is one API call, as sent (and resent).
type apiCall struct {
	method, path string
	body         []byte
	hasBody      bool
	// once: the call starts a job, so it is resent only after failures
	// that surely kept it from every server.
	once bool
	long bool // eval: the longer default deadline
}

func (c *Client) do(ctx context.Context, r apiCall, body, out any) (maybeApplied bool, err error) {
	if body != nil {
		if r.body, err = json.Marshal(body); err != nil {
			return false, err
		}
		r.hasBody = true
	}
	data, maybeApplied, err := c.send(ctx, r)
	if err != nil || out == nil {
		return maybeApplied, err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return maybeApplied, Errorf(CodeInternal, "decoding the answer: %v", err)
	}
	return maybeApplied, nil
}

// outcome is how an attempt ended, for the decision to resend.
type outcome uint8

const (
	answered outcome = iota // the server answered: a success or its error
	unsent                  // no connection: the request reached no server
	broken                  // the exchange broke when the request may have reached a server
	final                   // a failure no other attempt can mend (a certificate refused)
)

// send makes a call, on one endpoint after another while they fail, and
// returns the answer's body or the error: the server's as *Error, or
// after the deadline what the last attempt got (its code, with the
// deadline and the attempt's cause in the chain, for errors.Is).
// maybeApplied reports that an earlier attempt failed in a way that may
// have let it reach a server (a connection broken after sending, an
// unavailable answer from a node that may have forwarded it), so a refusal
// such as already_exists may answer this call's own earlier attempt.
func (c *Client) send(ctx context.Context, r apiCall) (data []byte, maybeApplied bool, err error) {
	ctx, cancel := c.bound(ctx, r.long)
	defer cancel()
	eps := c.endpoints()
	i := c.start(eps)
	var (
		last    *Error // what the last attempt got, when not cut short by ctx
		lastAt  string
		refused int // attempts in a row that opened no connection
		backoff = retryBackoffMin
	)
	for n := 1; ; n++ {
		data, how, e := c.attempt(ctx, eps[i], r)
		if how != final && ctx.Err() == nil {
			c.mark(eps[i], how != unsent)
		}
		switch {
		case e == nil:
			c.preferred.Store(uint32(i))
			return data, maybeApplied, nil
		case ctx.Err() != nil:
			return nil, maybeApplied, gaveUp(ctx, e, last, lastAt, n, len(eps))
		case how == answered && !retryCode(e.Code):
			c.preferred.Store(uint32(i)) // it works, it refused
			return nil, maybeApplied, e
		case how == final, r.once && how != unsent:
			return nil, maybeApplied, e
		}
		last, lastAt = e, eps[i]
		if how == unsent {
			refused++
		} else {
			refused, maybeApplied = 0, true
		}
		if c.UnreachableRounds > 0 && refused >= c.UnreachableRounds*len(eps) {
			return nil, maybeApplied, e
		}
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, maybeApplied, gaveUp(ctx, nil, last, lastAt, n, len(eps))
		case <-t.C:
		}
		backoff = min(2*backoff, retryBackoffMax)
		i = c.pick(eps, i+1)
	}
}

// retryCode reports whether an answer with this code may be resent,
// elsewhere: the node could not serve it now, another may.
func retryCode(code string) bool { return code == CodeUnavailable || code == CodeOverloaded }

// gaveUp is the error of a call whose ctx ended: the code of what the last
// attempt got (timeout, or unavailable when canceled, if none got
// anything), a message saying so, and ctx's error and the last attempt's
// in the chain. cut is the attempt ctx cut short, if any.
func gaveUp(ctx context.Context, cut, last *Error, lastAt string, attempts, endpoints int) *Error {
	why := "the deadline passed"
	code := CodeTimeout
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		why, code = "the call was canceled", CodeUnavailable
	}
	tries := fmt.Sprintf("%d attempt", attempts)
	if attempts > 1 {
		tries += "s"
	}
	if endpoints > 1 {
		tries += fmt.Sprintf(" over %d endpoints", endpoints)
	}
	if last == nil {
		e := Errorf(code, "%s before any answer (%s)", why, tries)
		e.cause = ctx.Err()
		if cut != nil {
			e.Message += ": " + cut.Message
			e.cause = errors.Join(ctx.Err(), cut)
		}
		return e
	}
	return &Error{Code: last.Code, Index: last.Index, cause: errors.Join(ctx.Err(), last),
		Message: fmt.Sprintf("%s (from %s; %s after %s)", last.Message, lastAt, why, tries)}
}

// attempt sends r once, to base.
func (c *Client) attempt(ctx context.Context, base string, r apiCall) ([]byte, outcome, *Error) {
	var body io.Reader
	if r.hasBody {
		body = bytes.NewReader(r.body)
	}
	resp, how, e := c.open(ctx, base, r.method, withDeadline(ctx, r.path), body)
	if e != nil {
		return nil, how, e
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		e := Errorf(CodeUnavailable, "reading the answer of %s: %v", base, err)
		e.cause = err
		return nil, broken, e
	}
	if resp.StatusCode >= 300 {
		return nil, answered, errorOf(resp.StatusCode, data)
	}
	return data, answered, nil
}

// withDeadline adds ctx's deadline to path: the server learns it, so work
// for a caller that has given up is dropped there too.
func withDeadline(ctx context.Context, path string) string {
	if dl, ok := ctx.Deadline(); ok {
		ms := max(time.Until(dl).Milliseconds(), 1)
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += fmt.Sprintf("%stimeout_ms=%d", sep, ms)
	}
	return path
}

// open sends a request to base; a transport failure is an unavailable
// *Error carrying its cause, and how it failed.
func (c *Client) open(ctx context.Context, base, method, path string, body io.Reader) (*http.Response, outcome, *Error) {
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		e := Errorf(CodeBadRequest, "%v", err)
		e.cause = err
		return nil, final, e
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		e := Errorf(CodeUnavailable, "%v", err)
		e.cause = err
		return nil, transportOutcome(err), e
	}
	return resp, answered, nil
}

// transportOutcome classifies a failure of the transport: a connection
// that could not be opened (refused, timed out, no route, no such host)
// carried nothing; one that broke later may have carried the request.
func transportOutcome(err error) outcome {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return final
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && (op.Op == "dial" || op.Op == "proxyconnect") {
		return unsent
	}
	if _, ok := errors.AsType[*net.DNSError](err); ok {
		return unsent
	}
	return broken
}

// errorOf decodes an error answer. One without a code, from something in
// front of the nodes (a proxy, a load balancer), maps by its status.
func errorOf(status int, data []byte) *Error {
	var eb ErrorBody
	if json.Unmarshal(data, &eb) != nil || eb.Error.Code == "" {
		code := CodeInternal
		switch status {
		case http.StatusBadGateway, http.StatusServiceUnavailable:
			code = CodeUnavailable
		case http.StatusGatewayTimeout:
			code = CodeTimeout
		}
		return Errorf(code, "HTTP %d: %s", status, strings.TrimSpace(string(data)))
	}
	e := &Error{Code: eb.Error.Code, Message: eb.Error.Message, Index: -1}
	if eb.Error.Index != nil {
		e.Index = *eb.Error.Index
	}
	return e
}

// hasCode reports whether err is an *Error with code.
func hasCode(err error, code string) bool {
	e, ok := errors.AsType[*Error](err)
	return ok && e.Code == code
}

// Create derives a vPLM. A resend refused as already_exists, after an
// attempt that may have created it, reads the vPLM back: it is returned if
// it matches req (see createdAs), else the refusal is.
func (c *Client) Create(ctx context.Context, req CreateModelRequest) (*Model, error) {
	ctx, cancel := c.bound(ctx, false)
	defer cancel()
	var m Model
	maybeApplied, err := c.do(ctx, apiCall{method: http.MethodPost, path: "/v1/models"}, req, &m)
	if err == nil {
		return &m, nil
	}
	if !maybeApplied || !hasCode(err, CodeAlreadyExists) {
		return nil, err
	}
	got, gerr := c.Get(ctx, req.ID)
	switch {
	case gerr == nil && createdAs(req, got):
		return got, nil
	case gerr == nil || hasCode(gerr, CodeNotFound):
		return nil, err
	}
	return nil, gerr
}

// createdAs reports whether m is what req asks for, the server's defaults
// standing for what req leaves out: same id, tenant, task and labels, and
// the backbone, adapter, rank, layers, width, mode, table and precision
// where req names them. It cannot tell a vPLM this call created from an
// identical one another client created under the same id meanwhile.
func createdAs(req CreateModelRequest, m *Model) bool {
	given := func(want, got string) bool { return want == "" || strings.EqualFold(want, got) }
	sameSet := func(a, b []int) bool {
		a, b = slices.Clone(a), slices.Clone(b)
		slices.Sort(a)
		slices.Sort(b)
		return slices.Equal(slices.Compact(a), slices.Compact(b))
	}
	return m.ID == req.ID && m.Tenant == cmp.Or(req.Tenant, "default") && m.Task == req.Task &&
		slices.Equal(m.Labels, req.Labels) && given(req.Backbone, m.Backbone) && given(req.Adapter, m.Adapter) &&
		(req.Rank == 0 || req.Rank == m.Rank) && (len(req.Layers) == 0 || sameSet(req.Layers, m.Layers)) &&
		(req.EmbedDim == 0 || req.EmbedDim == m.EmbedDim) && cmp.Or(req.Mode, ModeFull) == m.Mode &&
		given(req.Table, m.Table) && given(req.Precision, m.Precision)
}

// List returns one page of models (after: the last id of the previous page).
func (c *Client) List(ctx context.Context, tenant, after string, limit int) (*ModelList, error) {
	q := url.Values{}
	if tenant != "" {
		q.Set("tenant", tenant)
	}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	var l ModelList
	_, err := c.do(ctx, apiCall{method: http.MethodGet, path: "/v1/models?" + q.Encode()}, nil, &l)
	return &l, err
}

// Get returns a model's catalog entry.
func (c *Client) Get(ctx context.Context, id string) (*Model, error) {
	var m Model
	_, err := c.do(ctx, apiCall{method: http.MethodGet, path: "/v1/models/" + url.PathEscape(id)}, nil, &m)
	return &m, err
}

// Delete removes a model. A not_found answer to a resend, after an attempt
// that may have deleted it, is success: the model is gone either way.
func (c *Client) Delete(ctx context.Context, id string) error {
	maybeApplied, err := c.do(ctx, apiCall{method: http.MethodDelete, path: "/v1/models/" + url.PathEscape(id)}, nil, nil)
	if maybeApplied && hasCode(err, CodeNotFound) {
		return nil
	}
	return err
}

// Classify classifies texts with a classification model.
func (c *Client) Classify(ctx context.Context, id string, texts []string) (*ClassifyResponse, error) {
	var r ClassifyResponse
	_, err := c.do(ctx, apiCall{method: http.MethodPost, path: "/v1/models/" + url.PathEscape(id) + "/classify"}, TextsRequest{Texts: texts}, &r)
	return &r, err
}

// Embed embeds texts with an embedding model.
func (c *Client) Embed(ctx context.Context, id string, texts []string) (*EmbedResponse, error) {
	var r EmbedResponse
	_, err := c.do(ctx, apiCall{method: http.MethodPost, path: "/v1/models/" + url.PathEscape(id) + "/embed"}, TextsRequest{Texts: texts}, &r)
	return &r, err
}

// PutTenant sets a tenant's virtual processor.
func (c *Client) PutTenant(ctx context.Context, name string, t TenantRequest) error {
	_, err := c.do(ctx, apiCall{method: http.MethodPut, path: "/v1/tenants/" + url.PathEscape(name)}, t, nil)
	return err
}

// Tenant returns a tenant's settings and usage.
func (c *Client) Tenant(ctx context.Context, name string) (*Tenant, error) {
	var t Tenant
	if _, err := c.do(ctx, apiCall{method: http.MethodGet, path: "/v1/tenants/" + url.PathEscape(name)}, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// Health checks the server.
func (c *Client) Health(ctx context.Context) error {
	_, err := c.do(ctx, apiCall{method: http.MethodGet, path: "/v1/health"}, nil, nil)
	return err
}

// The training and evaluation calls speak protojson (see train.go).

// callProto sends r with in as its body (nil: none) and decodes the answer
// into out.
func (c *Client) callProto(ctx context.Context, r apiCall, in, out proto.Message) error {
	if in != nil {
		var err error
		if r.body, err = protojson.Marshal(in); err != nil {
			return Errorf(CodeBadRequest, "encoding the request: %v", err)
		}
		r.hasBody = true
	}
	data, _, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	if err := protoRead.Unmarshal(data, out); err != nil {
		return Errorf(CodeInternal, "decoding the answer: %v", err)
	}
	return nil
}

// protoRead reads answers leniently: a newer server may add fields.
var protoRead = protojson.UnmarshalOptions{DiscardUnknown: true}

// Train starts a training job for req.Model (on req.Dataset, a dataset
// pulled on the server, or on req.ExamplesJsonl) and returns its record at
// once; the job runs on the server (see WatchJob).
func (c *Client) Train(ctx context.Context, req *smilepb.TrainRequest) (*smilepb.TrainJob, error) {
	if req.GetModel() == "" {
		return nil, Errorf(CodeBadRequest, "train: no model named")
	}
	var j smilepb.TrainJob
	// Starting a job: resent only when it surely reached no server.
	return &j, c.callProto(ctx, apiCall{method: http.MethodPost, path: "/v1/models/" + url.PathEscape(req.GetModel()) + "/train", once: true}, req, &j)
}

// Job returns a job's record (training, or building a table).
func (c *Client) Job(ctx context.Context, id string) (*smilepb.TrainJob, error) {
	var j smilepb.TrainJob
	return &j, c.callProto(ctx, apiCall{method: http.MethodGet, path: "/v1/jobs/" + url.PathEscape(id)}, nil, &j)
}

// Jobs lists the jobs the server knows, newest first: of one model, of
// one PLOT table (by its id), or ("") all.
func (c *Client) Jobs(ctx context.Context, model string) ([]*smilepb.TrainJob, error) {
	path := "/v1/jobs"
	if model != "" {
		path += "?" + url.Values{"model": {model}}.Encode()
	}
	return getProtoList(ctx, c, path, "jobs", func() *smilepb.TrainJob { return &smilepb.TrainJob{} })
}

// CancelJob cancels a job (training, or building a table) and returns its
// record.
func (c *Client) CancelJob(ctx context.Context, id string) (*smilepb.TrainJob, error) {
	var j smilepb.TrainJob
	return &j, c.callProto(ctx, apiCall{method: http.MethodDelete, path: "/v1/jobs/" + url.PathEscape(id)}, nil, &j)
}

// Eval scores a classification vPLM on a dataset split or uploaded examples.
func (c *Client) Eval(ctx context.Context, req *smilepb.EvalRequest) (*smilepb.EvalReply, error) {
	if req.GetModel() == "" {
		return nil, Errorf(CodeBadRequest, "eval: no model named")
	}
	var r smilepb.EvalReply
	return &r, c.callProto(ctx, apiCall{method: http.MethodPost, path: "/v1/models/" + url.PathEscape(req.GetModel()) + "/eval", long: true}, req, &r)
}

// BuildTable starts building a PLOT table (on req.Dataset, a dataset
// pulled on the server, or on req.ExamplesJsonl, one {"text"} a line) and
// returns its job (kind "table"; its table field names the table) at
// once: follow it with WatchJob, stop it with CancelJob. A table that is
// already complete gives a job that has succeeded.
func (c *Client) BuildTable(ctx context.Context, req *smilepb.TableRequest) (*smilepb.TrainJob, error) {
	var j smilepb.TrainJob
	// Starting a job: resent only when it surely reached no server.
	return &j, c.callProto(ctx, apiCall{method: http.MethodPost, path: "/v1/tables", once: true}, req, &j)
}

// Tables lists the PLOT tables stored on the server, newest first.
func (c *Client) Tables(ctx context.Context) ([]*smilepb.PlotTable, error) {
	return getProtoList(ctx, c, "/v1/tables", "tables", func() *smilepb.PlotTable { return &smilepb.PlotTable{} })
}

// Table describes a PLOT table: its manifest, the entries stored, and its
// memory and lookups where it is open on the server.
func (c *Client) Table(ctx context.Context, id string) (*smilepb.PlotTableInfo, error) {
	var t smilepb.PlotTableInfo
	return &t, c.callProto(ctx, apiCall{method: http.MethodGet, path: "/v1/tables/" + url.PathEscape(id)}, nil, &t)
}

// getProtoList reads an answer {"<key>": [...]} of protojson items.
func getProtoList[M proto.Message](ctx context.Context, c *Client, path, key string, alloc func() M) ([]M, error) {
	data, _, err := c.send(ctx, apiCall{method: http.MethodGet, path: path})
	if err != nil {
		return nil, err
	}
	var list map[string][]json.RawMessage
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, Errorf(CodeInternal, "decoding the answer: %v", err)
	}
	out := make([]M, len(list[key]))
	for i, raw := range list[key] {
		out[i] = alloc()
		if err := protoRead.Unmarshal(raw, out[i]); err != nil {
			return nil, Errorf(CodeInternal, "decoding item %d of the answer's %s: %v", i, key, err)
		}
	}
	return out, nil
}

// JobEnded reports whether a job is in a final state.
func JobEnded(j *smilepb.TrainJob) bool {
	switch j.GetState() {
	case smilepb.JobState_JOB_SUCCEEDED, smilepb.JobState_JOB_FAILED, smilepb.JobState_JOB_CANCELED:
		return true
	}
	return false
}

// Reconnection backoff of WatchJob.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 5 * time.Second
)

// WatchJob follows a job (training, or building a table): fn sees its current record at once and
// then every change, until the job ends (WatchJob returns nil after fn saw
// the final record), fn fails (its error is returned) or ctx ends. If the
// stream breaks before the job ended, WatchJob reconnects, to the next
// endpoint, with backoff until ctx ends; after a reconnection fn sees the
// current record again. An error on the first connection is returned at
// once when it is a refusal (an unknown job), or when every endpoint has
// been tried once and none could be reached. A watch has no default
// deadline: it lasts as long as the job.
func (c *Client) WatchJob(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) error {
	eps := c.endpoints()
	i := c.start(eps)
	backoff := watchBackoffMin
	connected := false
	for tries := 1; ; tries++ {
		ended, progressed, err := c.watchOnce(ctx, eps[i], id, fn)
		if progressed {
			c.preferred.Store(uint32(i))
		}
		switch {
		case ended:
			return nil
		case isCallback(err):
			return err.(*callbackError).err
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !retryable(err):
			return err
		case !connected && !progressed && tries >= len(eps):
			return err
		}
		i = c.pick(eps, i+1)
		if !connected && !progressed {
			continue // the next endpoint, at once
		}
		connected = true
		if progressed {
			backoff = watchBackoffMin
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// callbackError is an error of WatchJob's fn, which ends the watch.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

func isCallback(err error) bool {
	_, ok := err.(*callbackError)
	return ok
}

// retryable reports whether a broken watch should reconnect: the server
// was unreachable, overloaded or failed, not a refusal of the request.
func retryable(err error) bool {
	e, ok := errors.AsType[*Error](err)
	if !ok {
		return true
	}
	switch e.Code {
	case CodeUnavailable, CodeOverloaded, CodeTimeout, CodeInternal:
		return true
	}
	return false
}

// watchOnce reads one events stream. ended: fn saw a final record;
// progressed: the stream opened and gave at least one record.
func (c *Client) watchOnce(ctx context.Context, base, id string, fn func(*smilepb.TrainJob) error) (ended, progressed bool, err error) {
	resp, _, e := c.open(ctx, base, http.MethodGet, "/v1/jobs/"+url.PathEscape(id)+"/events", nil)
	if e != nil {
		return false, false, e
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return false, false, errorOf(resp.StatusCode, data)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var j smilepb.TrainJob
		if err := protoRead.Unmarshal(line, &j); err != nil {
			return false, progressed, Errorf(CodeInternal, "job events: decoding a record: %v", err)
		}
		progressed = true
		if err := fn(&j); err != nil {
			return false, true, &callbackError{err}
		}
		if JobEnded(&j) {
			return true, true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return false, progressed, Errorf(CodeUnavailable, "job events: %v", err)
	}
	return false, progressed, Errorf(CodeUnavailable, "job events: the stream of job %s closed before the job ended", id)
}
