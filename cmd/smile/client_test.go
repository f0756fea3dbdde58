package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/api"
	"github.com/smile-vplm/smile/internal/testenv"
)

// TestClientUsageErrors: bad flags and arguments of the client commands
// are usage errors (exit 2), caught before any server is asked.
func TestClientUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"create"},
		{"create", "x"},
		{"create", "x", "--task", "summarize"},
		{"create", "x", "--task", "classify"},
		{"create", "x", "--task", "classify", "--labels", "only"},
		{"create", "x", "--task", "embed", "--labels", "a,b"},
		{"create", "x", "--task", "embed", "--adapter", "prefix"},
		{"create", "x", "--task", "embed", "--rank", "-1"},
		{"create", "x", "--task", "embed", "--layers", "two"},
		{"create", "x", "y", "--task", "embed"},
		{"ls", "extra"},
		{"ls", "--limit", "-1"},
		{"show"},
		{"show", "a", "b"},
		{"rm"},
		{"classify", "m"},
		{"classify", "m", "x", "--top", "0"},
		{"classify", "m", "-"}, // nothing on stdin
		{"tenant"},
		{"tenant", "t", "--weight", "-1"},
		{"tenant", "t", "--rate", "-2"},
		{"embed", "--model", "m", "--backbone", "use-lite", "x"},
		{"embed", "--model", "m", "--max-batch-tokens", "64", "x"},
		{"embed", "--server", "127.0.0.1:1", "x"},
		{"ls", "--server", "://nowhere"},
		{"ls", "--server", "ftp://host:1"},
	} {
		_, err := run(t, "", args...)
		if _, ok := errors.AsType[*usageError](err); !ok {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
}

// TestClientNoServer: with nothing listening, every client command says
// where it looked and how to start a server.
func TestClientNoServer(t *testing.T) {
	addr := testenv.FreeAddr(t)
	for _, args := range [][]string{
		{"ls"},
		{"show", "m"},
		{"rm", "a", "b"},
		{"classify", "m", "x"},
		{"embed", "--model", "m", "x"},
		{"create", "m", "--task", "embed"},
		{"tenant", "t"},
	} {
		_, err := run(t, "", append(args, "--server", addr)...)
		if !errors.Is(err, errNoServer) || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "smile serve") {
			t.Errorf("%v: err = %v", args, err)
		}
	}
	t.Setenv("SMILE_SERVER", addr)
	if _, err := run(t, "", "ls"); !errors.Is(err, errNoServer) || !strings.Contains(err.Error(), addr) {
		t.Errorf("SMILE_SERVER=%s: err = %v", addr, err)
	}
}

// TestClientFormatError: a server error prints as "code: message", naming
// the offending text once.
func TestClientFormatError(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{api.Errorf(api.CodeNotFound, "no vPLM %q", "x"), `not_found: no vPLM "x"`},
		{api.TextErrorf(2, api.CodeEmptyText, "text 2: model: empty text"), "empty_text: text 2: model: empty text"},
		{api.TextErrorf(2, api.CodeTextTooLong, "model: text too long"), "text_too_long: text 2: model: text too long"},
		{fmt.Errorf("rm: %w", api.Errorf(api.CodeInternal, "boom")), "rm: internal: boom"},
		{errors.New("plain"), "plain"},
	} {
		if got := formatError(c.err); got != c.want {
			t.Errorf("formatError(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
