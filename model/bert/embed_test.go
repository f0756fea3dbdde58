package bert

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/tokenizer"
)

// TestModelEmbedTextErrors: model.Embed names the failing text by its index
// and wraps the sentinel of the failure.
func TestModelEmbedTextErrors(t *testing.T) {
	m, err := NewRandom(newDevice(t), TinyConfig(), 8)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	cases := []struct {
		name string
		text string
		want error
	}{
		// [CLS] and [SEP] are added by Prepare after the empty check, so a
		// text whose WordPiece encoding is empty is still an empty text.
		{"empty", "", model.ErrEmptyText},
		{"whitespace", " \t\r\n\u00a0\u3000", model.ErrEmptyText},
		{"removed characters", "\x00\ufffd\u200b\x07", model.ErrEmptyText},
		{"1 MB", strings.Repeat("hello ", 1<<20/6+1), model.ErrTextTooLong},
		{"invalid UTF-8", "good \xff movie", tokenizer.ErrInvalidUTF8},
		{"truncated rune", "caf\xc3", tokenizer.ErrInvalidUTF8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for idx := range 3 {
				texts := []string{"hello world", "a good movie", "the cat"}
				texts[idx] = c.text
				out, err := model.Embed(ctx, m, texts, model.DefaultEmbedOptions())
				var te *model.TextError
				if !errors.As(err, &te) || te.Index != idx || !errors.Is(err, c.want) {
					t.Fatalf("text at %d: Embed = %v, %v; want *model.TextError{Index: %d} wrapping %v", idx, out, err, idx, c.want)
				}
				if !model.IsInputError(err) {
					t.Errorf("IsInputError(%v) = false", err)
				}
			}
		})
	}
}

// TestModelEmbedBatchEqualsSingle: a text's embedding does not depend on its
// batch companions or on how the batch is cut into passes, beyond rounding.
func TestModelEmbedBatchEqualsSingle(t *testing.T) {
	cfg := TinyConfig()
	m, err := NewRandom(newDevice(t), cfg, 9)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	texts := []string{
		"hello world",
		"a",
		"this movie was really good , i love it !",
		strings.Repeat("the dog and the cat play ", 20), // past the window: truncated
		"unhappy walking talker",
		"Hello World",
		"x",
		"she was not very happy with the service",
		strings.Repeat("good ", cfg.MaxPositions-2), // exactly the window
	}
	opts := model.DefaultEmbedOptions()
	single := make([][]float32, len(texts))
	for i, text := range texts {
		out, err := model.Embed(ctx, m, []string{text}, opts)
		if err != nil {
			t.Fatal(err)
		}
		single[i] = out[0]
	}
	for _, maxTokens := range []int{opts.MaxBatchTokens, cfg.MaxPositions, 100} {
		o := opts
		o.MaxBatchTokens = maxTokens
		batch, err := model.Embed(ctx, m, texts, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) != len(texts) {
			t.Fatalf("%d results for %d texts", len(batch), len(texts))
		}
		for i := range texts {
			if len(batch[i]) != cfg.Hidden {
				t.Fatalf("text %d: %d floats", i, len(batch[i]))
			}
			d := 0.0
			for j := range batch[i] {
				d = math.Max(d, math.Abs(float64(batch[i][j]-single[i][j])))
			}
			// Packing has no padding, so only rounding differs: the GEMM
			// kernels block differently for different row counts (seen:
			// 1.3e-6 on these tanh outputs in [-1, 1]).
			if d > 1e-5 {
				t.Errorf("max batch tokens %d, text %d: batch differs from single by %g", maxTokens, i, d)
			}
		}
	}
}
