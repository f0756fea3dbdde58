package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
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
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	// The server learns the caller's deadline, so work for a caller that
	// has given up is dropped there too.
	if dl, ok := ctx.Deadline(); ok {
		ms := max(time.Until(dl).Milliseconds(), 1)
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += fmt.Sprintf("%stimeout_ms=%d", sep, ms)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		e := Errorf(CodeUnavailable, "%v", err)
		e.cause = err
		return e
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return Errorf(CodeUnavailable, "reading the answer: %v", err)
	}
	if resp.StatusCode >= 300 {
		var eb ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error.Code == "" {
			return Errorf(CodeInternal, "HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(data)))
		}
		e := &Error{Code: eb.Error.Code, Message: eb.Error.Message, Index: -1}
		if eb.Error.Index != nil {
			e.Index = *eb.Error.Index
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return Errorf(CodeInternal, "decoding the answer: %v", err)
	}
	return nil
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

// Health checks the server.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/v1/health", nil, nil)
}
