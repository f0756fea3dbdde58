package actors

import (
	"context"
	"errors"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/tokenizer"
	"github.com/smile-vplm/smile/storage"
)

// Errors of the actors; each maps to one stable wire code (Code), which the
// API maps to an HTTP status in one table (package apierr). Test with errors.Is.
var (
	ErrBadConfig       = errors.New("actors: bad configuration")
	ErrBadRequest      = errors.New("actors: bad request")
	ErrNotFound        = errors.New("actors: no such vPLM")
	ErrExists          = errors.New("actors: vPLM exists")
	ErrWrongTask       = errors.New("actors: wrong task for this vPLM")
	ErrTooManyTexts    = errors.New("actors: too many texts")
	ErrOverloaded      = errors.New("actors: overloaded")
	ErrTenantOverLimit = errors.New("actors: tenant over its in-flight limit")
	ErrRateLimited     = errors.New("actors: tenant over its rate")
	ErrUnavailable     = errors.New("actors: unavailable")
	ErrTimeout         = errors.New("actors: timeout")
	ErrInternal        = errors.New("actors: internal error")

	// Training and table building.
	ErrJobNotFound = errors.New("actors: no such job")
	// ErrJobConflict: a Train for a vPLM, or a BuildTable for a table,
	// that already has a job queued or running (one at a time for each).
	ErrJobConflict = errors.New("actors: the vPLM or table already has an active job")
	// ErrBadDataset: training data that cannot train the vPLM: no
	// examples, fewer than two labels, a label the vPLM does not have, an
	// unknown dataset name, an empty text. It wraps the internal/datasets
	// sentinel of the cause where there is one.
	ErrBadDataset = errors.New("actors: bad dataset")
	// ErrModelChanged: the vPLM got another version or was deleted while
	// it trained; the job's result is not committed.
	ErrModelChanged = errors.New("actors: the vPLM changed during training")

	// PLOT tables (wire code not_found, bad_request).
	ErrTableNotFound = errors.New("actors: no such PLOT table")
	// ErrTableIncomplete: a plot-mode create on a table whose build has
	// not finished (or was canceled: build it again to finish it).
	ErrTableIncomplete = errors.New("actors: the PLOT table is not complete")
)

// Wire codes (the api/apierr table holds the same strings).
const (
	CodeNotFound        = "not_found"
	CodeExists          = "already_exists"
	CodeBadRequest      = "bad_request"
	CodeWrongTask       = "wrong_task"
	CodeTextTooLong     = "text_too_long"
	CodeTooManyTexts    = "too_many_texts"
	CodeEmptyText       = "empty_text"
	CodeInvalidUTF8     = "invalid_utf8"
	CodeRateLimited     = "rate_limited"
	CodeTenantOverLimit = "tenant_over_limit"
	CodeOverloaded      = "overloaded"
	CodeUnavailable     = "unavailable"
	CodeTimeout         = "timeout"
	CodeInternal        = "internal"
	CodeJobNotFound     = "job_not_found"
	CodeJobConflict     = "job_conflict"
	CodeBadDataset      = "bad_dataset"
	CodeModelChanged    = "model_changed"
	CodeQuotaExceeded   = "quota_exceeded"
)

// Code gives err's stable wire code.
func Code(err error) string {
	switch {
	case err == nil:
		return ""
	// The service's own verdicts first: an internal or unavailable error
	// may carry a cause that would read as the caller's fault (a missing or
	// corrupt params blob is not a missing vPLM or a bad request).
	case errors.Is(err, ErrInternal):
		return CodeInternal
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.Canceled):
		return CodeUnavailable
	case errors.Is(err, ErrJobNotFound):
		return CodeJobNotFound
	case errors.Is(err, ErrJobConflict):
		return CodeJobConflict
	case errors.Is(err, ErrModelChanged):
		return CodeModelChanged
	case errors.Is(err, ErrBadDataset):
		return CodeBadDataset
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrTableNotFound), errors.Is(err, storage.ErrNotFound):
		return CodeNotFound
	case errors.Is(err, ErrExists), errors.Is(err, storage.ErrExists):
		return CodeExists
	case errors.Is(err, storage.ErrQuotaExceeded):
		return CodeQuotaExceeded
	case errors.Is(err, ErrWrongTask):
		return CodeWrongTask
	case errors.Is(err, ErrTooManyTexts):
		return CodeTooManyTexts
	case errors.Is(err, model.ErrTextTooLong):
		return CodeTextTooLong
	case errors.Is(err, model.ErrEmptyText):
		return CodeEmptyText
	case errors.Is(err, tokenizer.ErrInvalidUTF8):
		return CodeInvalidUTF8
	case errors.Is(err, ErrRateLimited):
		return CodeRateLimited
	case errors.Is(err, ErrTenantOverLimit):
		return CodeTenantOverLimit
	case errors.Is(err, ErrOverloaded):
		return CodeOverloaded
	case errors.Is(err, ErrUnavailable):
		return CodeUnavailable
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrTableIncomplete), errors.Is(err, model.ErrBadInput), errors.Is(err, storage.ErrBadID),
		errors.Is(err, model.ErrBadParams):
		return CodeBadRequest
	}
	return CodeInternal
}

// wireError is an error that crossed the wire: its code and message.
type wireError struct {
	code, msg string
	index     int32
}

func (e *wireError) Error() string { return e.msg }

// Is matches the sentinel of the same code, so errors.Is works on both
// sides of the wire.
func (e *wireError) Is(target error) bool {
	s, ok := codeSentinel[e.code]
	return ok && s == target
}

var codeSentinel = map[string]error{
	CodeNotFound: ErrNotFound, CodeExists: ErrExists, CodeWrongTask: ErrWrongTask, CodeTooManyTexts: ErrTooManyTexts,
	CodeTextTooLong: model.ErrTextTooLong, CodeEmptyText: model.ErrEmptyText, CodeInvalidUTF8: tokenizer.ErrInvalidUTF8,
	CodeRateLimited: ErrRateLimited, CodeTenantOverLimit: ErrTenantOverLimit, CodeOverloaded: ErrOverloaded,
	CodeUnavailable: ErrUnavailable, CodeTimeout: ErrTimeout, CodeBadRequest: ErrBadRequest, CodeInternal: ErrInternal,
	CodeJobNotFound: ErrJobNotFound, CodeJobConflict: ErrJobConflict, CodeBadDataset: ErrBadDataset, CodeModelChanged: ErrModelChanged,
	CodeQuotaExceeded: storage.ErrQuotaExceeded,
}

// ToProto turns err into its wire form (nil for nil).
func ToProto(err error) *smilepb.Error {
	if err == nil {
		return nil
	}
	pe := &smilepb.Error{Code: Code(err), Message: Message(err)}
	if i := TextIndex(err); i >= 0 {
		i32 := int32(i)
		pe.Index = &i32
	}
	return pe
}

// FromProto turns a wire error back into an error matching the sentinel of
// its code (nil for nil).
func FromProto(pe *smilepb.Error) error {
	if pe == nil || pe.Code == "" {
		return nil
	}
	idx := int32(-1)
	if pe.Index != nil {
		idx = *pe.Index
	}
	return &wireError{code: pe.Code, msg: pe.Message, index: idx}
}

// Message is err's text for people, without the "text N:" prefix of a
// text's error (the index travels in its own field).
func Message(err error) string {
	var te *model.TextError
	if errors.As(err, &te) {
		return te.Err.Error()
	}
	return err.Error()
}

// TextIndex is the index of the text an error is about, or -1.
func TextIndex(err error) int {
	var te *model.TextError
	if errors.As(err, &te) {
		return te.Index
	}
	var we *wireError
	if errors.As(err, &we) {
		return int(we.index)
	}
	return -1
}
