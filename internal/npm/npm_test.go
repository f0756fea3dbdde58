package npm

import (
	"context"
	"errors"
	"testing"
)

func TestPackWithoutNPM(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := Pack(context.Background(), "sentiment@5.0.2", t.TempDir()); !errors.Is(err, ErrMissing) {
		t.Fatalf("Pack without npm on PATH: %v, want ErrMissing", err)
	}
}
