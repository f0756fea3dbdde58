package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/smile-vplm/smile/api/smilepb"
)

// FuzzDecodeCreate feeds arbitrary bodies through the create route's
// decoding and validation (everything before the service is called): it
// must never panic, and every refusal must carry a known code.
func FuzzDecodeCreate(f *testing.F) {
	for _, s := range []string{
		`{"id":"m","task":"classify","labels":["a","b"]}`,
		`{"id":"m","task":"embed","adapter":"lora","rank":8,"layers":[1,2]}`,
		`{"id":"m","task":"classify","rank":-1}`,
		`{"id":"m","task":"classify","labels":["a","b"],"mode":"plot","table":"plot-0123456789abcdef0123456789abcdef"}`,
		`{"id":"m","task":"embed","mode":"full","table":"plot-x"}`, `{"id":"m","task":"embed","mode":"half"}`, `{"id":"m","task":"embed","mode":"plot"}`,
		`{"texts":["a"]}`, `{}`, `[]`, `null`, `{"id":1}`, "{\"id\":\"\xff\"}", `{"id":"a"}{"id":"b"}`,
	} {
		f.Add([]byte(s))
	}
	h := &Handler{cfg: DefaultHTTPConfig()}
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/models", bytes.NewReader(body))
		var req CreateModelRequest
		err := h.decode(w, r, &req)
		if err == nil {
			_, err = createSpec(req)
		}
		if err != nil {
			if e := ToError(err); !KnownCode(e.Code) || e.Status() < 400 {
				t.Fatalf("refusal %v has code %q, status %d", err, e.Code, e.Status())
			}
		} else if ok := (req.Mode == "" || req.Mode == ModeFull) && req.Table == "" || req.Mode == ModePlot && req.Table != ""; !ok {
			t.Fatalf("accepted mode %q with table %q", req.Mode, req.Table)
		}
		var tr TextsRequest
		r = httptest.NewRequest(http.MethodPost, "/v1/models/m/classify", bytes.NewReader(body))
		if err := h.decode(w, r, &tr); err != nil && !KnownCode(ToError(err).Code) {
			t.Fatalf("texts refusal %v has an unknown code", err)
		}
	})
}

// FuzzDecodeTrain feeds arbitrary bodies through the train route's
// decoding (protojson, the uploaded JSONL and its labels) and the eval
// route's: it must never panic, every refusal must carry a known code, and
// accepted uploads must hold examples with text and a known label.
func FuzzDecodeTrain(f *testing.F) {
	for _, s := range []string{
		`{"dataset":"imdb","config":{"epochs":2,"batch_size":16,"lr":0.001,"patience":-1,"seed":"7"}}`,
		`{"examples_jsonl":"eyJ0ZXh0IjoiYSIsImxhYmVsIjoicG9zIn0KeyJ0ZXh0IjoiYiIsImxhYmVsIjoibmVnIn0K"}`, // two lines, pos and neg
		`{"examples_jsonl":"eyJ0ZXh0IjoiYSIsImxhYmVsIjoibWVoIn0K"}`,
		`{"model":"m","dataset":"imdb","split":"test"}`,
		`{"config":{"lr":"NaN","warmup":"Infinity"},"dataset":"x"}`,
		`{"examples_jsonl":"%%"}`, `{}`, `[]`, `null`, "{\"dataset\":\"\xff\"}", `{"dataset":"a"}{"dataset":"b"}`,
	} {
		f.Add([]byte(s))
	}
	h := &Handler{cfg: DefaultHTTPConfig()}
	labels := []string{"neg", "pos"}
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(what string, err error) {
			if e := ToError(err); err != nil && (!KnownCode(e.Code) || e.Status() < 400) {
				t.Fatalf("%s refusal %v has code %q, status %d", what, err, e.Code, e.Status())
			}
		}
		r := httptest.NewRequest(http.MethodPost, "/v1/models/m/train", bytes.NewReader(body))
		r.SetPathValue("id", "m")
		req, err := h.decodeTrain(httptest.NewRecorder(), r)
		check("train", err)
		if err == nil && len(req.ExamplesJsonl) > 0 {
			ex, err := trainExamples(req.ExamplesJsonl, labels)
			check("examples", err)
			for i, e := range ex {
				if e.Text == "" || !slices.Contains(labels, e.Label) {
					t.Fatalf("example %d accepted: %+v", i, e)
				}
			}
		}
		var er smilepb.EvalRequest
		r = httptest.NewRequest(http.MethodPost, "/v1/models/m/eval", bytes.NewReader(body))
		check("eval", h.decodeProto(httptest.NewRecorder(), r, h.cfg.MaxUploadBytes, &er))
	})
}

// FuzzDecodeTable feeds arbitrary bodies through the table build route's
// decoding and checks (protojson, one corpus, the budget's sign): it must
// never panic, every refusal must carry a known code, and an accepted
// request must name exactly one corpus and no negative budget.
func FuzzDecodeTable(f *testing.F) {
	for _, s := range []string{
		`{"dataset":"imdb"}`,
		`{"dataset":"imdb","cut":1,"budget_bytes":"1048576","base":"plot-0123456789abcdef0123456789abcdef","backbone":"use-lite","tenant":"t"}`,
		`{"examples_jsonl":"eyJ0ZXh0IjoiYSJ9Cg=="}`, // {"text":"a"}
		`{"dataset":"imdb","examples_jsonl":"eyJ0ZXh0IjoiYSJ9Cg=="}`,
		`{"dataset":"imdb","budget_bytes":"-1"}`, `{"dataset":"imdb","budget_bytes":-1}`, `{"dataset":"imdb","cut":-1}`,
		`{"dataset":"imdb","cut":"4294967296"}`, `{"examples_jsonl":"%%"}`, `{"dataset":"x","budget":1}`,
		`{}`, `[]`, `null`, "{\"dataset\":\"\xff\"}", `{"dataset":"a"}{"dataset":"b"}`,
	} {
		f.Add([]byte(s))
	}
	h := &Handler{cfg: DefaultHTTPConfig()}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/v1/tables", bytes.NewReader(body))
		req, err := h.decodeTable(httptest.NewRecorder(), r)
		if err != nil {
			if e := ToError(err); !KnownCode(e.Code) || e.Status() < 400 {
				t.Fatalf("refusal %v has code %q, status %d", err, e.Code, e.Status())
			}
			return
		}
		if (req.Dataset == "") == (len(req.ExamplesJsonl) == 0) || req.BudgetBytes < 0 {
			t.Fatalf("accepted %v", req)
		}
	})
}
