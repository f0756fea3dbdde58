package api

import (
	"context"
	"net/http"

	"github.com/smile-vplm/smile/api/smilepb"
)

// PLOT tables (lower-layer skipping): building one is a job of kind
// "table" in the training job system (GET /v1/jobs/{id}, its events and
// DELETE work for it); the tables themselves are listed and described
// here. Bodies are protojson, as for training (train.go).

// tableService is what the table routes need of the node's service
// (*actors.Service).
type tableService interface {
	BuildTable(ctx context.Context, req *smilepb.TableRequest) (*smilepb.TrainJob, error)
	Tables(ctx context.Context) ([]*smilepb.PlotTable, error)
	Table(ctx context.Context, id string) (*smilepb.PlotTableInfo, error)
}

func (h *Handler) tableRoutes() {
	if h.svc != nil {
		h.tables = h.svc
	}
	// A build may pull its dataset first and tokenizes the whole corpus
	// before its job starts.
	h.handle("POST /v1/tables", routeLong, h.buildTable)
	h.mux.HandleFunc("GET /v1/tables", h.listTables)
	h.mux.HandleFunc("GET /v1/tables/{id}", h.showTable)
}

// decodeTable reads a table request and refuses what needs no node to
// refuse: no corpus or two, a negative budget. The backbone-dependent
// checks (the cut, the budget's upper bound, the base) are the service's.
func (h *Handler) decodeTable(w http.ResponseWriter, r *http.Request) (*smilepb.TableRequest, error) {
	var req smilepb.TableRequest
	if err := h.decodeProto(w, r, h.cfg.MaxUploadBytes, &req); err != nil {
		return nil, err
	}
	switch {
	case req.Dataset == "" && len(req.ExamplesJsonl) == 0:
		return nil, Errorf(CodeBadRequest, "no corpus: name a dataset (\"dataset\") or upload JSONL texts (\"examples_jsonl\", base64)")
	case req.Dataset != "" && len(req.ExamplesJsonl) > 0:
		return nil, Errorf(CodeBadRequest, "both a dataset (%q) and uploaded texts: send one", req.Dataset)
	case req.BudgetBytes < 0:
		return nil, Errorf(CodeBadRequest, "budget_bytes %d: want > 0 (0: the server's default)", req.BudgetBytes)
	}
	return &req, nil
}

func (h *Handler) buildTable(w http.ResponseWriter, r *http.Request) {
	req, err := h.decodeTable(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	job, err := h.tables.BuildTable(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+job.Id)
	writeProto(w, http.StatusAccepted, job)
}

func (h *Handler) listTables(w http.ResponseWriter, r *http.Request) {
	tables, err := h.tables.Tables(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeProtoList(w, "tables", tables)
}

func (h *Handler) showTable(w http.ResponseWriter, r *http.Request) {
	info, err := h.tables.Table(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeProto(w, http.StatusOK, info)
}
