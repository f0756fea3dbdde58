package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzDecodeCreate feeds arbitrary bodies through the create route's
// decoding and validation (everything before the service is called): it
// must never panic, and every refusal must carry a known code.
func FuzzDecodeCreate(f *testing.F) {
	for _, s := range []string{
		`{"id":"m","task":"classify","labels":["a","b"]}`,
		`{"id":"m","task":"embed","adapter":"lora","rank":8,"layers":[1,2]}`,
		`{"id":"m","task":"classify","rank":-1}`,
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
		}
		var tr TextsRequest
		r = httptest.NewRequest(http.MethodPost, "/v1/models/m/classify", bytes.NewReader(body))
		if err := h.decode(w, r, &tr); err != nil && !KnownCode(ToError(err).Code) {
			t.Fatalf("texts refusal %v has an unknown code", err)
		}
	})
}
