package model

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/smile-vplm/smile/model/tokenizer"
)

// EmbedOptions bounds the work of one Embed call.
type EmbedOptions struct {
	// MaxTextBytes rejects longer texts with ErrTextTooLong. Only the first
	// MaxPositions tokens of a text matter, so a huge text is almost surely a
	// mistake (a file pasted whole) and costs tokenizer time for nothing.
	MaxTextBytes int
	// MaxBatchTokens bounds the token rows of one forward pass (device memory
	// and latency); texts are grouped into passes up to this many tokens.
	MaxBatchTokens int
}

// Upper bounds of EmbedOptions: beyond them a request is a mistake, and a
// pass would need gigabytes of activations.
const (
	MaxTextBytesLimit   = 16 << 20
	MaxBatchTokensLimit = 1 << 16
)

// DefaultEmbedOptions: 64 KiB per text, 2,048 tokens per pass.
func DefaultEmbedOptions() EmbedOptions {
	return EmbedOptions{MaxTextBytes: 64 << 10, MaxBatchTokens: 2048}
}

// Validate checks the options.
func (o EmbedOptions) Validate() error {
	if o.MaxTextBytes <= 0 || o.MaxTextBytes > MaxTextBytesLimit {
		return fmt.Errorf("%w: max text bytes %d: want 1..%d", ErrBadInput, o.MaxTextBytes, MaxTextBytesLimit)
	}
	if o.MaxBatchTokens <= 0 || o.MaxBatchTokens > MaxBatchTokensLimit {
		return fmt.Errorf("%w: max batch tokens %d: want 1..%d", ErrBadInput, o.MaxBatchTokens, MaxBatchTokensLimit)
	}
	return nil
}

// TextError names the text (by its index in the request) that failed.
type TextError struct {
	Index int
	Err   error
}

func (e *TextError) Error() string { return fmt.Sprintf("text %d: %v", e.Index, e.Err) }
func (e *TextError) Unwrap() error { return e.Err }

// Tokenize checks and tokenizes texts for bb and returns the ids the model
// will see (after Prepare). Errors are *TextError wrapping ErrEmptyText,
// ErrTextTooLong or tokenizer.ErrInvalidUTF8.
func Tokenize(bb Backbone, texts []string, opts EmbedOptions) ([][]int32, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if len(texts) == 0 {
		return nil, fmt.Errorf("%w: no texts", ErrBadInput)
	}
	tok := bb.Tokenizer()
	ids := make([][]int32, len(texts))
	for i, t := range texts {
		if len(t) > opts.MaxTextBytes {
			return nil, &TextError{i, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTextTooLong, len(t), opts.MaxTextBytes)}
		}
		s, err := tok.Encode(t)
		if err != nil {
			return nil, &TextError{i, err}
		}
		if len(s) == 0 {
			return nil, &TextError{i, fmt.Errorf("%w: %q has no tokens", ErrEmptyText, t)}
		}
		ids[i] = bb.Prepare(s)
	}
	return ids, nil
}

// Embed returns the backbone's pooled output for each text, in order.
// Texts are sorted by length and packed into passes of at most
// opts.MaxBatchTokens tokens; packing has no padding, so a text's result does
// not depend on its companions beyond float rounding.
func Embed(ctx context.Context, bb Backbone, texts []string, opts EmbedOptions) ([][]float32, error) {
	ids, err := Tokenize(bb, texts, opts)
	if err != nil {
		return nil, err
	}
	return EmbedIDs(ctx, bb, ids, opts.MaxBatchTokens)
}

// EmbedIDs is Embed for prepared id sequences.
func EmbedIDs(ctx context.Context, bb Backbone, ids [][]int32, maxBatchTokens int) ([][]float32, error) {
	if maxBatchTokens <= 0 {
		return nil, fmt.Errorf("%w: max batch tokens %d", ErrBadInput, maxBatchTokens)
	}
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(ids[b]) - len(ids[a]) })
	dim := bb.Info().OutputDim
	out := make([][]float32, len(ids))
	flat := make([]float32, len(ids)*dim)
	batch := make([][]int32, 0, 64)
	var idx []int
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		dst := flat[idx[0]*dim : (idx[0]+len(batch))*dim]
		if err := forward(ctx, bb, batch, dst); err != nil {
			return err
		}
		for j, o := range idx {
			out[order[o]] = dst[j*dim : (j+1)*dim : (j+1)*dim]
		}
		batch, idx = batch[:0], idx[:0]
		return nil
	}
	tokens := 0
	for k, o := range order {
		n := len(ids[o])
		if n == 0 {
			return nil, &TextError{o, fmt.Errorf("%w: no tokens", ErrEmptyText)}
		}
		if tokens+n > maxBatchTokens && len(batch) > 0 {
			if err := flush(); err != nil {
				return nil, err
			}
			tokens = 0
		}
		batch = append(batch, ids[o])
		idx = append(idx, k)
		tokens += n
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// forward runs one packed pass: embed, all layers, pool.
func forward(ctx context.Context, bb Backbone, batch [][]int32, dst []float32) error {
	st, err := bb.Embed(ctx, batch)
	if err != nil {
		return err
	}
	defer bb.Release(st)
	if pr, ok := bb.(PoolRunner); ok {
		return pr.RunPool(ctx, st, dst)
	}
	if err := bb.RunLayers(ctx, st, bb.Info().Layers, nil); err != nil {
		return err
	}
	return bb.Pool(ctx, st, dst)
}

// IsInputError reports whether err is the caller's fault (bad text or
// argument) rather than the model's or device's.
func IsInputError(err error) bool {
	return errors.Is(err, ErrEmptyText) || errors.Is(err, ErrTextTooLong) || errors.Is(err, ErrBadInput) ||
		errors.Is(err, tokenizer.ErrInvalidUTF8)
}
