package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/actors"
	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/datasets"
)

// Training and evaluation: their bodies are the protobuf messages of
// api/smilepb in protojson (snake_case names, enums by name, 64-bit
// integers as strings, bytes as base64), so the schema is the one
// description of the wire.

// UploadName is how errors about uploaded examples name the file
// ("datasets: unknown label ... (examples_jsonl:12)").
const UploadName = actors.UploadName

// protoOut is how answers are written: every field, even a zero one, so a
// client reads val_accuracy 0 as a value and not as a missing field.
var protoOut = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// protoIn reads requests strictly, as decode does JSON: unknown fields are
// errors.
var protoIn = protojson.UnmarshalOptions{}

// trainer is what the training and evaluation routes need of the node's
// service (*actors.Service); an interface of its own so that the streaming
// can be tested without a training run.
type trainer interface {
	Get(ctx context.Context, id string) (*smilepb.VPLM, error)
	Train(ctx context.Context, req actors.TrainRequest) (*smilepb.TrainJob, error)
	Job(ctx context.Context, id string) (*smilepb.TrainJob, error)
	Jobs(ctx context.Context, model string) ([]*smilepb.TrainJob, error)
	CancelJob(ctx context.Context, id string) (*smilepb.TrainJob, error)
	WatchJob(ctx context.Context, id string, fn func(*smilepb.TrainJob) error) error
	Eval(ctx context.Context, req *smilepb.EvalRequest) (*smilepb.EvalReply, error)
}

func (h *Handler) trainRoutes() {
	if h.svc != nil {
		h.trainer = h.svc
	}
	// A train request may pull its dataset first (npm) and tokenizes it all.
	h.handle("POST /v1/models/{id}/train", routeLong, h.train)
	h.mux.HandleFunc("GET /v1/jobs", h.jobs)
	h.mux.HandleFunc("GET /v1/jobs/{id}", h.job)
	h.mux.HandleFunc("DELETE /v1/jobs/{id}", h.cancelJob)
	h.handle("GET /v1/jobs/{id}/events", routeStream, h.jobEvents)
	h.handle("POST /v1/models/{id}/eval", routeLong, h.eval)
}

// decodeProto reads a protojson body of at most limit bytes into m with
// the same checks as decode (content type, size, UTF-8, known fields).
func (h *Handler) decodeProto(w http.ResponseWriter, r *http.Request, limit int64, m proto.Message) error {
	body, err := h.body(w, r, limit)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return Errorf(CodeBadRequest, "empty request body")
	}
	if err := protoIn.Unmarshal(body, m); err != nil {
		return Errorf(CodeBadRequest, "request body: %v", err)
	}
	return nil
}

// pathModel reconciles the model named by the path with the body's
// "model" field, which may be left out.
func pathModel(r *http.Request, body string) (string, error) {
	id := r.PathValue("id")
	if body != "" && body != id {
		return "", Errorf(CodeBadRequest, "body names model %q, the path %q", body, id)
	}
	return id, nil
}

// decodeTrain reads a train request: the body, and its model checked
// against the path. The uploaded examples are parsed by trainExamples.
func (h *Handler) decodeTrain(w http.ResponseWriter, r *http.Request) (*smilepb.TrainRequest, error) {
	var req smilepb.TrainRequest
	if err := h.decodeProto(w, r, h.cfg.MaxUploadBytes, &req); err != nil {
		return nil, err
	}
	id, err := pathModel(r, req.Model)
	if err != nil {
		return nil, err
	}
	req.Model = id
	switch {
	case req.Dataset == "" && len(req.ExamplesJsonl) == 0:
		return nil, Errorf(CodeBadRequest, "no examples: name a dataset (\"dataset\") or upload JSONL (\"examples_jsonl\", base64)")
	case req.Dataset != "" && len(req.ExamplesJsonl) > 0:
		return nil, Errorf(CodeBadRequest, "both a dataset (%q) and uploaded examples: send one", req.Dataset)
	}
	return &req, nil
}

// trainExamples parses uploaded JSONL examples, checking their labels
// against labels (the vPLM's; none for an embed vPLM). Errors name the line
// (bad_dataset).
func trainExamples(jsonl []byte, labels []string) ([]datasets.Example, error) {
	return actors.ReadExamples(jsonl, labels)
}

func (h *Handler) train(w http.ResponseWriter, r *http.Request) {
	req, err := h.decodeTrain(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	tr := actors.TrainRequest{Model: req.Model, Dataset: req.Dataset, Config: req.Config, Full: req.Full}
	if len(req.ExamplesJsonl) > 0 {
		// The vPLM's labels, so that a wrong label is refused naming its
		// line (the service sees examples, not lines).
		v, err := h.trainer.Get(ctx, req.Model)
		if err != nil {
			writeError(w, err)
			return
		}
		var labels []string
		if v.Task == smilepb.Task_TASK_CLASSIFY {
			labels = v.Labels
		}
		if tr.Examples, err = trainExamples(req.ExamplesJsonl, labels); err != nil {
			writeError(w, err)
			return
		}
	}
	job, err := h.trainer.Train(ctx, tr)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+job.Id)
	writeProto(w, http.StatusAccepted, job)
}

func (h *Handler) jobs(w http.ResponseWriter, r *http.Request) {
	jobs, err := h.trainer.Jobs(r.Context(), r.URL.Query().Get("model"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeProtoList(w, "jobs", jobs)
}

func (h *Handler) job(w http.ResponseWriter, r *http.Request) {
	job, err := h.trainer.Job(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeProto(w, http.StatusOK, job)
}

func (h *Handler) cancelJob(w http.ResponseWriter, r *http.Request) {
	job, err := h.trainer.CancelJob(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeProto(w, http.StatusOK, job)
}

// jobEvents streams a job's records as NDJSON, one protojson TrainJob a
// line, each flushed as it comes: the current record at once, then one per
// change, until the job ends (the stream closes) or the client leaves. An
// error before the first record (an unknown job) is an ordinary error
// answer; after it, the stream just closes and the client reconnects.
func (h *Handler) jobEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// A server's WriteTimeout would otherwise cut the stream in the middle
	// of a run (its ReadTimeout does not: net/http lifts the read deadline
	// once the request is read).
	_ = rc.SetWriteDeadline(time.Time{})
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	started := false
	err := h.trainer.WatchJob(ctx, r.PathValue("id"), func(j *smilepb.TrainJob) error {
		b, err := protoOut.Marshal(j)
		if err != nil {
			return err
		}
		// protojson may add spaces but never a newline outside
		// strings, where it escapes them: one record, one line.
		b = compactJSON(b)
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("X-Accel-Buffering", "no") // a proxy in front must not hold lines back
			w.WriteHeader(http.StatusOK)
		}
		if _, err := w.Write(append(b, '\n')); err != nil {
			return err
		}
		return rc.Flush()
	})
	switch {
	case err == nil:
	case !started:
		writeError(w, err)
	case !errors.Is(err, context.Canceled):
		h.log.Debug("job events stream ended", "job", r.PathValue("id"), "err", err)
	}
}

func (h *Handler) eval(w http.ResponseWriter, r *http.Request) {
	var req smilepb.EvalRequest
	if err := h.decodeProto(w, r, h.cfg.MaxUploadBytes, &req); err != nil {
		writeError(w, err)
		return
	}
	id, err := pathModel(r, req.Model)
	if err != nil {
		writeError(w, err)
		return
	}
	req.Model = id
	rep, err := h.trainer.Eval(r.Context(), &req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeProto(w, http.StatusOK, rep)
}

// writeProto answers m in protojson.
func writeProto(w http.ResponseWriter, status int, m proto.Message) {
	b, err := protoOut.Marshal(m)
	if err != nil {
		writeError(w, Errorf(CodeInternal, "encoding the answer: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(compactJSON(b), '\n'))
}

// writeProtoList answers {"<key>": [...]}, each item in protojson.
func writeProtoList[M interface {
	proto.Message
	GetId() string
}](w http.ResponseWriter, key string, items []M) {
	list := make([]json.RawMessage, 0, len(items))
	for _, m := range items {
		b, err := protoOut.Marshal(m)
		if err != nil {
			writeError(w, Errorf(CodeInternal, "encoding the %s list at %s: %v", key, m.GetId(), err))
			return
		}
		list = append(list, compactJSON(b))
	}
	writeJSON(w, http.StatusOK, map[string][]json.RawMessage{key: list})
}

// compactJSON removes the insignificant spaces protojson inserts (on
// purpose, at random, so nobody depends on its exact bytes).
func compactJSON(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}
