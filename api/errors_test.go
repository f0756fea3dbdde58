package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
)

func TestCodeStatus(t *testing.T) {
	want := map[string]int{
		"not_found":         404,
		"already_exists":    409,
		"bad_request":       400,
		"wrong_task":        400,
		"text_too_long":     413,
		"too_many_texts":    413,
		"payload_too_large": 413,
		"empty_text":        400,
		"invalid_utf8":      400,
		"rate_limited":      429,
		"tenant_over_limit": 429,
		"overloaded":        503,
		"unavailable":       503,
		"timeout":           504,
		"internal":          500,
		"job_not_found":     404,
		"job_conflict":      409,
		"bad_dataset":       400,
		"model_changed":     409,
		"quota_exceeded":    403,
	}
	if got := len(Codes()); got != len(want) {
		t.Errorf("table has %d codes, want %d", got, len(want))
	}
	for code, status := range want {
		if !KnownCode(code) {
			t.Errorf("code %q missing from the table", code)
		}
		if got := Errorf(code, "x").Status(); got != status {
			t.Errorf("%s: status %d, want %d", code, got, status)
		}
	}
	if got := Errorf("no_such_code", "x").Status(); got != http.StatusInternalServerError {
		t.Errorf("unknown code: status %d, want 500", got)
	}
}

func TestCodeTableUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Codes() {
		if seen[c] {
			t.Errorf("duplicate code %q", c)
		}
		seen[c] = true
	}
}

func TestErrorString(t *testing.T) {
	if got := Errorf(CodeNotFound, "model %q", "m1").Error(); got != `not_found: model "m1"` {
		t.Errorf("got %q", got)
	}
	if got := TextErrorf(3, CodeEmptyText, "empty").Error(); got != "empty_text: text 3: empty" {
		t.Errorf("got %q", got)
	}
}

func TestProtoRoundTrip(t *testing.T) {
	for _, code := range Codes() {
		for _, idx := range []int{-1, 0, 7} {
			e := &Error{Code: code, Message: "msg " + code, Index: idx}
			wire, err := proto.Marshal(e.Proto())
			if err != nil {
				t.Fatal(err)
			}
			var p smilepb.Error
			if err := proto.Unmarshal(wire, &p); err != nil {
				t.Fatal(err)
			}
			if got := FromProto(&p); *got != *e {
				t.Errorf("round trip: %+v, want %+v", got, e)
			}
		}
	}
	if FromProto(nil) != nil {
		t.Error("FromProto(nil) != nil")
	}
	if (*Error)(nil).Proto() != nil {
		t.Error("nil.Proto() != nil")
	}
}

func TestAsError(t *testing.T) {
	nf := Errorf(CodeNotFound, "gone")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		err  error
		code string
	}{
		{"api error", nf, CodeNotFound},
		{"wrapped api error", fmt.Errorf("lookup: %w", nf), CodeNotFound},
		{"deadline", context.DeadlineExceeded, CodeTimeout},
		{"wrapped deadline", fmt.Errorf("infer: %w", context.DeadlineExceeded), CodeTimeout},
		{"canceled", ctx.Err(), CodeUnavailable},
		{"other", errors.New("boom"), CodeInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := AsError(tc.err)
			if got.Code != tc.code {
				t.Errorf("code %q, want %q", got.Code, tc.code)
			}
		})
	}
	if AsError(nf) != nf {
		t.Error("an *Error must pass through unchanged")
	}
	if AsError(nil) != nil {
		t.Error("AsError(nil) != nil")
	}
}
