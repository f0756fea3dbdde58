package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/smile-vplm/smile/cluster"
)

// NodeReport is one node of the cluster (GET /v1/nodes).
type NodeReport = cluster.NodeReport

// Nodes lists the cluster's nodes as the answering node sees them: state
// (alive, leaving, down), Raft role, addresses, backbones, devices and
// resident vPLMs.
func (c *Client) Nodes(ctx context.Context) ([]NodeReport, error) {
	var out struct {
		Nodes []NodeReport `json:"nodes"`
	}
	if _, err := c.do(ctx, apiCall{method: http.MethodGet, path: "/v1/nodes"}, nil, &out); err != nil {
		return nil, err
	}
	return out.Nodes, nil
}

// Owner is the node hosting a vPLM's actor (activating it if it has none).
func (c *Client) Owner(ctx context.Context, id string) (*NodeReport, error) {
	var out NodeReport
	if _, err := c.do(ctx, apiCall{method: http.MethodGet, path: "/v1/nodes?vplm=" + url.QueryEscape(id)}, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
