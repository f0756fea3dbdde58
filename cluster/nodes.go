package cluster

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/storage"
)

// NodeReport is one node of the cluster as `smile nodes` shows it: its
// membership (gossip), its role in the catalog's Raft, and what it serves.
type NodeReport struct {
	Node      string   `json:"node"`           // persistent node id
	MemberID  string   `json:"member_id"`      // actor system id of this run ("" when down)
	State     string   `json:"state"`          // alive, leaving, down
	Raft      string   `json:"raft"`           // leader, voter, nonvoter, none
	API       string   `json:"api_addr"`       // HTTP API
	Actor     string   `json:"actor_addr"`     // protoactor remote
	Gossip    string   `json:"gossip_addr"`    // memberlist
	Backbones []string `json:"backbones"`      // backbones it serves
	Devices   int      `json:"devices"`        // device actors
	Resident  int      `json:"resident_vplms"` // vPLM activations it hosts
	Self      bool     `json:"self,omitempty"` // the node that answered
}

// Nodes reports the cluster's nodes: the members gossip knows, and the
// Raft servers it does not (down).
func (n *Node) Nodes() []NodeReport {
	var st Status
	if n.rp != nil {
		st, _ = n.rp.Status()
	}
	role := func(id string) string {
		for _, m := range st.Members {
			if m.ID == id {
				switch {
				case id == st.Leader:
					return "leader"
				case m.Voter:
					return "voter"
				}
				return "nonvoter"
			}
		}
		return "none"
	}
	self := n.sys.ID
	var out []NodeReport
	seen := map[string]bool{}
	for _, m := range n.g.members() {
		r := NodeReport{Node: m.Node, MemberID: m.MemberID, State: m.State, Raft: role(m.Node), API: m.API, Actor: m.Actor,
			Gossip: m.Gossip, Backbones: m.Backbones, Devices: m.Devices, Resident: m.Resident, Self: m.MemberID == self}
		if r.Self {
			r.Resident = n.Resident() // exact, not as last gossiped
		}
		seen[m.Node] = true
		out = append(out, r)
	}
	for _, m := range st.Members {
		if !seen[m.ID] {
			out = append(out, NodeReport{Node: m.ID, State: "down", Raft: role(m.ID), API: m.APIAddr})
		}
	}
	slices.SortFunc(out, func(a, b NodeReport) int { return strings.Compare(a.Node+a.MemberID, b.Node+b.MemberID) })
	return out
}

// Owner is the node hosting a vPLM's activation (activating it where
// placement puts it when it has none).
func (n *Node) Owner(id string) (NodeReport, bool) {
	pid := n.cl.Get(id, actors.KindVPLM)
	if pid == nil {
		return NodeReport{}, false
	}
	for _, r := range n.Nodes() {
		if r.Actor == pid.Address {
			return r, true
		}
	}
	return NodeReport{}, false
}

// NodesHandler serves GET /v1/nodes: the cluster's nodes as this node
// sees them; with ?vplm=ID, the node hosting that vPLM.
func NodesHandler(n *Node) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if id := r.URL.Query().Get("vplm"); id != "" {
			if err := storage.ValidID(id); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			owner, ok := n.Owner(id)
			if !ok {
				http.Error(w, "no activation of "+id, http.StatusServiceUnavailable)
				return
			}
			json.NewEncoder(w).Encode(owner)
			return
		}
		json.NewEncoder(w).Encode(struct {
			Nodes []NodeReport `json:"nodes"`
		}{n.Nodes()})
	})
}
