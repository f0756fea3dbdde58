package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHandlerShedsBeyondMaxInflight: with every slot taken, a request is
// answered 503 overloaded at once instead of waiting.
func TestHandlerShedsBeyondMaxInflight(t *testing.T) {
	cfg := DefaultHTTPConfig()
	cfg.MaxInflight = 2
	h := NewHandler(nil, cfg, nil)
	h.sem <- struct{}{}
	h.sem <- struct{}{}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/models", nil))
	var eb ErrorBody
	if w.Code != http.StatusServiceUnavailable || json.Unmarshal(w.Body.Bytes(), &eb) != nil || eb.Error.Code != CodeOverloaded {
		t.Fatalf("HTTP %d %s, want 503 overloaded", w.Code, w.Body)
	}
	if w.Header().Get("Retry-After") == "" {
		t.Error("no Retry-After on overloaded")
	}
}

// TestHandlerRecoversPanics: a bug in a handler answers 500 internal, not
// a dropped connection (a nil service panics here).
func TestHandlerRecoversPanics(t *testing.T) {
	h := NewHandler(nil, DefaultHTTPConfig(), nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/health", nil))
	if w.Code != http.StatusInternalServerError {
		t.Fatalf("HTTP %d, want 500", w.Code)
	}
	if len(h.sem) != 0 {
		t.Fatal("the panicking request kept its slot")
	}
}
