package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
)

// Client speaks the HTTP API of one `smile serve` (the CLI uses it). Errors
// the server answers come back as *Error with their stable code.
type Client struct {
	Base string // e.g. "http://127.0.0.1:7077"
	HTTP *http.Client
}

// NewClient returns a client for base (a URL, or host:port).
func NewClient(base string) (*Client, error) {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, Errorf(CodeBadRequest, "server address %q: want http://host:port", base)
	}
	return &Client{Base: strings.TrimRight(u.String(), "/"), HTTP: &http.Client{}}, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return err
		}
	}
	data, err := c.send(ctx, method, path, b, body != nil)
	if err != nil || out == nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return Errorf(CodeInternal, "decoding the answer: %v", err)
	}
	return nil
}

// send makes one call and returns the answer's body, or the server's error
// as *Error.
func (c *Client) send(ctx context.Context, method, path string, body []byte, hasBody bool) ([]byte, error) {
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(body)
	}
	resp, err := c.open(ctx, method, withDeadline(ctx, path), rd)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, Errorf(CodeUnavailable, "reading the answer: %v", err)
	}
	if resp.StatusCode >= 300 {
		return nil, errorOf(resp.StatusCode, data)
	}
	return data, nil
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

// open sends a request; a transport failure is an unavailable *Error
// carrying its cause.
func (c *Client) open(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		e := Errorf(CodeUnavailable, "%v", err)
		e.cause = err
		return nil, e
	}
	return resp, nil
}

// errorOf decodes an error answer.
func errorOf(status int, data []byte) *Error {
	var eb ErrorBody
	if json.Unmarshal(data, &eb) != nil || eb.Error.Code == "" {
		return Errorf(CodeInternal, "HTTP %d: %s", status, strings.TrimSpace(string(data)))
	}
	e := &Error{Code: eb.Error.Code, Message: eb.Error.Message, Index: -1}
	if eb.Error.Index != nil {
		e.Index = *eb.Error.Index
	}
	return e
}

// Create derives a vPLM.
func (c *Client) Create(ctx context.Context, req CreateModelRequest) (*Model, error) {
	var m Model
	return &m, c.do(ctx, http.MethodPost, "/v1/models", req, &m)
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
	return &l, c.do(ctx, http.MethodGet, "/v1/models?"+q.Encode(), nil, &l)
}

// Get returns a model's catalog entry.
func (c *Client) Get(ctx context.Context, id string) (*Model, error) {
	var m Model
	return &m, c.do(ctx, http.MethodGet, "/v1/models/"+url.PathEscape(id), nil, &m)
}

// Delete removes a model.
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/models/"+url.PathEscape(id), nil, nil)
}

// Classify classifies texts with a classification model.
func (c *Client) Classify(ctx context.Context, id string, texts []string) (*ClassifyResponse, error) {
	var r ClassifyResponse
	return &r, c.do(ctx, http.MethodPost, "/v1/models/"+url.PathEscape(id)+"/classify", TextsRequest{Texts: texts}, &r)
}

// Embed embeds texts with an embedding model.
func (c *Client) Embed(ctx context.Context, id string, texts []string) (*EmbedResponse, error) {
	var r EmbedResponse
	return &r, c.do(ctx, http.MethodPost, "/v1/models/"+url.PathEscape(id)+"/embed", TextsRequest{Texts: texts}, &r)
}

// PutTenant sets a tenant's virtual processor.
func (c *Client) PutTenant(ctx context.Context, name string, t TenantRequest) error {
	return c.do(ctx, http.MethodPut, "/v1/tenants/"+url.PathEscape(name), t, nil)
}

// Tenant returns a tenant's settings and usage.
func (c *Client) Tenant(ctx context.Context, name string) (*Tenant, error) {
	var t Tenant
	if err := c.do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(name), nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// Health checks the server.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/v1/health", nil, nil)
}

// The training and evaluation calls speak protojson (see train.go).

// callProto sends in (nil: no body) and decodes the answer into out.
func (c *Client) callProto(ctx context.Context, method, path string, in, out proto.Message) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = protojson.Marshal(in); err != nil {
			return Errorf(CodeBadRequest, "encoding the request: %v", err)
		}
	}
	data, err := c.send(ctx, method, path, body, in != nil)
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
	return &j, c.callProto(ctx, http.MethodPost, "/v1/models/"+url.PathEscape(req.GetModel())+"/train", req, &j)
}

// Job returns a job's record (training, or building a table).
func (c *Client) Job(ctx context.Context, id string) (*smilepb.TrainJob, error) {
	var j smilepb.TrainJob
	return &j, c.callProto(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), nil, &j)
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
	return &j, c.callProto(ctx, http.MethodDelete, "/v1/jobs/"+url.PathEscape(id), nil, &j)
}

// Eval scores a classification vPLM on a dataset split or uploaded examples.
func (c *Client) Eval(ctx context.Context, req *smilepb.EvalRequest) (*smilepb.EvalReply, error) {
	if req.GetModel() == "" {
		return nil, Errorf(CodeBadRequest, "eval: no model named")
	}
	var r smilepb.EvalReply
	return &r, c.callProto(ctx, http.MethodPost, "/v1/models/"+url.PathEscape(req.GetModel())+"/eval", req, &r)
}

// BuildTable starts building a PLOT table (on req.Dataset, a dataset
// pulled on the server, or on req.ExamplesJsonl, one {"text"} a line) and
// returns its job (kind "table"; its table field names the table) at
// once: follow it with WatchJob, stop it with CancelJob. A table that is
// already complete gives a job that has succeeded.
func (c *Client) BuildTable(ctx context.Context, req *smilepb.TableRequest) (*smilepb.TrainJob, error) {
	var j smilepb.TrainJob
	return &j, c.callProto(ctx, http.MethodPost, "/v1/tables", req, &j)
}

// Tables lists the PLOT tables stored on the server, newest first.
func (c *Client) Tables(ctx context.Context) ([]*smilepb.PlotTable, error) {
	return getProtoList(ctx, c, "/v1/tables", "tables", func() *smilepb.PlotTable { return &smilepb.PlotTable{} })
}

// Table describes a PLOT table: its manifest, the entries stored, and its
// memory and lookups where it is open on the server.
func (c *Client) Table(ctx context.Context, id string) (*smilepb.PlotTableInfo, error) {
	var t smilepb.PlotTableInfo
	return &t, c.callProto(ctx, http.MethodGet, "/v1/tables/"+url.PathEscape(id), nil, &t)
}

// getProtoList reads an answer {"<key>": [...]} of protojson items.
func getProtoList[M proto.Message](ctx context.Context, c *Client, path, key string, alloc func() M) ([]M, error) {
	data, err := c.send(ctx, http.MethodGet, path, nil, false)
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
// stream breaks before the job ended, WatchJob reconnects with backoff
// until ctx ends; after a reconnection fn sees the current record again.
// An error on the first connection (an unknown job, no server) is returned
// at once.
func (c *Client) WatchJob(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) error {
	backoff := watchBackoffMin
	connected := false
	for {
		ended, progressed, err := c.watchOnce(ctx, id, fn)
		switch {
		case ended:
			return nil
		case isCallback(err):
			return err.(*callbackError).err
		case ctx.Err() != nil:
			return ctx.Err()
		case !connected && !progressed && err != nil:
			return err
		case err != nil && !retryable(err):
			return err
		}
		connected = connected || progressed
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
func (c *Client) watchOnce(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) (ended, progressed bool, err error) {
	resp, err := c.open(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id)+"/events", nil)
	if err != nil {
		return false, false, err
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
