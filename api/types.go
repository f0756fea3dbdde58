package api

import "github.com/smile-vplm/smile/actors"

// JSON bodies of the HTTP API (docs/api.md shows them in use).

// A vPLM's modes: how the layers below its adapters run.
const (
	ModeFull = actors.ModeFull // the backbone's own layers
	ModePlot = actors.ModePlot // lookups in a PLOT table replace layers 1..cut
)

// CreateModelRequest derives a vPLM from a backbone.
type CreateModelRequest struct {
	ID       string   `json:"id"`
	Tenant   string   `json:"tenant,omitempty"`   // default "default"
	Backbone string   `json:"backbone,omitempty"` // default: the server's default backbone
	Task     string   `json:"task"`               // "classify" or "embed"
	Labels   []string `json:"labels,omitempty"`   // classify: 2..1000 labels
	Adapter  string   `json:"adapter,omitempty"`  // "bottleneck" (default) or "lora"
	Rank     int      `json:"rank,omitempty"`     // default 64
	Layers   []int    `json:"layers,omitempty"`   // default: the backbone's upper half (plot: those above the table's cut)
	EmbedDim int      `json:"embed_dim,omitempty"`
	Mode     string   `json:"mode,omitempty"`  // "full" (default) or "plot"
	Table    string   `json:"table,omitempty"` // plot: the PLOT table's id (GET /v1/tables)
	// How the params blob stores the adapter and head matrices: "fp16"
	// (default) or "int8" (per-channel scales; about half the bytes).
	Precision string `json:"precision,omitempty"`
}

// Model is a vPLM's catalog entry.
type Model struct {
	ID           string   `json:"id"`
	Tenant       string   `json:"tenant"`
	Backbone     string   `json:"backbone"`
	Task         string   `json:"task"`
	Labels       []string `json:"labels,omitempty"`
	Adapter      string   `json:"adapter"`
	Rank         int      `json:"rank"`
	Layers       []int    `json:"layers"`
	EmbedDim     int      `json:"embed_dim,omitempty"`
	Mode         string   `json:"mode"`            // "full" or "plot"
	Table        string   `json:"table,omitempty"` // plot: the PLOT table it looks its lower layers up in
	Version      uint64   `json:"version"`
	ParamsDigest string   `json:"params_digest"`
	ParamsBytes  uint64   `json:"params_bytes"` // the stored params blob's size
	Precision    string   `json:"precision"`    // "fp16" or "int8"
	CreatedMs    int64    `json:"created_unix_ms"`
	UpdatedMs    int64    `json:"updated_unix_ms"`
}

// ModelList is a page of models; Next is the id to pass as ?after= for the
// next page ("" at the end).
type ModelList struct {
	Models []Model `json:"models"`
	Next   string  `json:"next,omitempty"`
}

// TextsRequest carries the texts of a classify or embed call.
type TextsRequest struct {
	Texts []string `json:"texts"`
}

// Prediction is one text's classification.
type Prediction struct {
	Label string             `json:"label"`
	Index int                `json:"index"`
	Probs map[string]float32 `json:"probs"`
}

// Timings of a call, in microseconds.
type Timings struct {
	TokenizeUs int64 `json:"tokenize_us"`
	QueueUs    int64 `json:"queue_us"`
	ComputeUs  int64 `json:"compute_us"`
	TotalUs    int64 `json:"total_us"`
	BatchRows  int   `json:"batch_rows"`
	BatchVPLMs int   `json:"batch_vplms"`
}

// ClassifyResponse answers a classify call, one prediction per text.
type ClassifyResponse struct {
	Model       string       `json:"model"`
	Version     uint64       `json:"version"`
	Predictions []Prediction `json:"predictions"`
	Timings     Timings      `json:"timings"`
}

// EmbedResponse answers an embed call, one unit vector per text.
type EmbedResponse struct {
	Model      string      `json:"model"`
	Version    uint64      `json:"version"`
	Dim        int         `json:"dim"`
	Embeddings [][]float32 `json:"embeddings"`
	Timings    Timings     `json:"timings"`
}

// TenantRequest sets a tenant's virtual processor.
type TenantRequest struct {
	Weight      float64 `json:"weight"`                 // share of each device (default 1)
	MaxInflight int     `json:"max_inflight,omitempty"` // 0: unlimited
	RatePerSec  float64 `json:"rate_per_s,omitempty"`   // 0: unlimited
	Burst       int     `json:"burst,omitempty"`
	// Quotas, checked when a vPLM is created or gets a new version (0:
	// unlimited): how many vPLMs, and how many bytes of params blobs.
	MaxVPLMs uint64 `json:"max_vplms,omitempty"`
	MaxBytes uint64 `json:"max_bytes,omitempty"`
}

// Tenant is a tenant's settings and what it holds (GET /v1/tenants/{name}).
type Tenant struct {
	Name string `json:"name"`
	TenantRequest
	// Usage: the tenant's vPLMs and the bytes of their params blobs.
	VPLMs uint64 `json:"vplms"`
	Bytes uint64 `json:"bytes"`
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Error ErrorJSON `json:"error"`
}

// ErrorJSON is an error's wire form in JSON.
type ErrorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Index   *int   `json:"index,omitempty"`
}
