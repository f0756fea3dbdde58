package benchdata

import (
	"strings"
	"testing"
)

func TestIMDB(t *testing.T) {
	texts := IMDB()
	if len(texts) != 1000 {
		t.Fatalf("got %d texts, want 1000", len(texts))
	}
	if !strings.HasPrefix(texts[0], "A very, very, very slow-moving, aimless movie") {
		t.Errorf("first text %q", texts[0])
	}
	for i, s := range texts {
		if strings.TrimSpace(s) == "" || strings.ContainsAny(s, "\r\n") {
			t.Errorf("text %d: %q", i, s)
		}
	}
	texts[0] = "changed"
	if IMDB()[0] == "changed" {
		t.Error("IMDB shares its slice between calls")
	}
}
