package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/smile-vplm/smile/api/smilepb"
)

// Stable error codes. Clients match on these strings, so a code is never
// renamed or reused; new failure kinds get new codes. The HTTP status of each
// is in codeStatus, the one place codes meet HTTP.
const (
	CodeNotFound        = "not_found"
	CodeAlreadyExists   = "already_exists"
	CodeBadRequest      = "bad_request"
	CodeWrongTask       = "wrong_task"
	CodeTextTooLong     = "text_too_long"
	CodeTooManyTexts    = "too_many_texts"
	CodePayloadTooLarge = "payload_too_large"
	CodeEmptyText       = "empty_text"
	CodeInvalidUTF8     = "invalid_utf8"
	CodeRateLimited     = "rate_limited"
	CodeTenantOverLimit = "tenant_over_limit"
	CodeOverloaded      = "overloaded" // a device queue is full: retry later or elsewhere
	CodeUnavailable     = "unavailable"
	CodeTimeout         = "timeout"
	CodeInternal        = "internal"
	// Training, table building and evaluation.
	CodeJobNotFound  = "job_not_found" // no job (training or table building) with that id
	CodeJobConflict  = "job_conflict"  // the vPLM, or the PLOT table, already has an active job
	CodeBadDataset   = "bad_dataset"   // examples that cannot train or score the vPLM (the line is named)
	CodeModelChanged = "model_changed" // the vPLM got another version during the job or the evaluation
	// Storage.
	CodeQuotaExceeded = "quota_exceeded" // the tenant's vPLM count or bytes quota would be exceeded
)

// codeTable maps every code to its HTTP status. A slice, not a map, so that
// a duplicate code is a test failure instead of a silent overwrite.
var codeTable = []struct {
	code   string
	status int
}{
	{CodeNotFound, http.StatusNotFound},
	{CodeAlreadyExists, http.StatusConflict},
	{CodeBadRequest, http.StatusBadRequest},
	{CodeWrongTask, http.StatusBadRequest},
	{CodeTextTooLong, http.StatusRequestEntityTooLarge},
	{CodeTooManyTexts, http.StatusRequestEntityTooLarge},
	{CodePayloadTooLarge, http.StatusRequestEntityTooLarge},
	{CodeEmptyText, http.StatusBadRequest},
	{CodeInvalidUTF8, http.StatusBadRequest},
	{CodeRateLimited, http.StatusTooManyRequests},
	{CodeTenantOverLimit, http.StatusTooManyRequests},
	{CodeOverloaded, http.StatusServiceUnavailable},
	{CodeUnavailable, http.StatusServiceUnavailable},
	{CodeTimeout, http.StatusGatewayTimeout},
	{CodeInternal, http.StatusInternalServerError},
	{CodeJobNotFound, http.StatusNotFound},
	{CodeJobConflict, http.StatusConflict},
	{CodeBadDataset, http.StatusBadRequest},
	{CodeModelChanged, http.StatusConflict},
	{CodeQuotaExceeded, http.StatusForbidden},
}

var codeStatus = func() map[string]int {
	m := make(map[string]int, len(codeTable))
	for _, c := range codeTable {
		m[c.code] = c.status
	}
	return m
}()

// Codes lists every stable code, in table order.
func Codes() []string {
	out := make([]string, len(codeTable))
	for i, c := range codeTable {
		out[i] = c.code
	}
	return out
}

// KnownCode reports whether code is in the table.
func KnownCode(code string) bool {
	_, ok := codeStatus[code]
	return ok
}

// Error is an error that crosses the wire: a stable code, a message for
// people, and the index of the offending text when one text is at fault.
type Error struct {
	Code    string
	Message string
	// Index is the position of the offending text in the request, or -1.
	Index int
	// cause is the local error behind a client-side failure (a refused
	// connection), for errors.Is; it never crosses the wire.
	cause error
}

// Unwrap gives the local cause of a client-side error, if any.
func (e *Error) Unwrap() error { return e.cause }

// Error formats as "code: message" (with the text index when there is one).
func (e *Error) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("%s: text %d: %s", e.Code, e.Index, e.Message)
	}
	return e.Code + ": " + e.Message
}

// Status is the HTTP status of e's code; an unknown code is a 500.
func (e *Error) Status() int {
	if s, ok := codeStatus[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Errorf makes an *Error not tied to one text (Index -1).
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Index: -1}
}

// TextErrorf makes an *Error about the text at index i of a request.
func TextErrorf(i int, code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Index: i}
}

// AsError maps any error to an *Error: an *Error anywhere in err's chain
// passes through, deadlines become timeout, cancellation unavailable, and
// everything else internal. nil maps to nil.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return Errorf(CodeTimeout, "%v", err)
	case errors.Is(err, context.Canceled):
		return Errorf(CodeUnavailable, "%v", err)
	}
	return Errorf(CodeInternal, "%v", err)
}

// Proto is e in its wire form.
func (e *Error) Proto() *smilepb.Error {
	if e == nil {
		return nil
	}
	p := &smilepb.Error{Code: e.Code, Message: e.Message}
	if e.Index >= 0 {
		i := int32(e.Index)
		p.Index = &i
	}
	return p
}

// FromProto is the inverse of Proto; nil for nil.
func FromProto(p *smilepb.Error) *Error {
	if p == nil {
		return nil
	}
	e := &Error{Code: p.GetCode(), Message: p.GetMessage(), Index: -1}
	if p.Index != nil {
		e.Index = int(p.GetIndex())
	}
	return e
}
