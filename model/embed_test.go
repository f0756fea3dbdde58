package model_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"unicode/utf8"

	"github.com/smile-vplm/smile/gpu"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/tokenizer"
)

// echo is a Backbone whose "embedding" of a sequence is (length, first id,
// pass number): enough to check that EmbedIDs groups, orders and scatters
// results correctly. It computes nothing on a device.
type echo struct {
	passes   int
	maxSeqs  int
	tokens   []int
	released int
}

type words struct{}

func (words) Encode(text string) ([]int32, error) {
	if !utf8.ValidString(text) { // the Tokenizer contract
		return nil, tokenizer.ErrInvalidUTF8
	}
	var ids []int32
	for _, r := range text {
		if r != ' ' {
			ids = append(ids, int32(r))
		}
	}
	return ids, nil
}
func (words) VocabSize() int { return 1 << 21 }

func (e *echo) Info() model.Info                                                   { return model.Info{Layers: 1, OutputDim: 3, MaxPositions: 4} }
func (e *echo) Device() gpu.Device                                                 { return nil }
func (e *echo) LayerDims(int) model.LayerDims                                      { return model.LayerDims{In: 1, Attention: 1, Out: 1} }
func (e *echo) Tokenizer() tokenizer.Tokenizer                                     { return words{} }
func (e *echo) StateWidth(int) int                                                 { return 1 }
func (e *echo) Prepare(ids []int32) []int32                                        { return ids[:min(len(ids), 4)] }
func (e *echo) Release(*model.State)                                               { e.released++ }
func (e *echo) Close() error                                                       { return nil }
func (e *echo) RunLayers(context.Context, *model.State, int, model.Observer) error { return nil }
func (e *echo) Restore(context.Context, []int, int, []float32) (*model.State, error) {
	return nil, errors.New("not used")
}

var firsts = map[*model.State][]int32{}

func (e *echo) Embed(_ context.Context, seqs [][]int32) (*model.State, error) {
	st := &model.State{Offsets: make([]int, len(seqs)+1)}
	f := make([]int32, len(seqs))
	for i, s := range seqs {
		st.Offsets[i+1] = st.Offsets[i] + len(s)
		f[i] = s[0]
	}
	firsts[st] = f
	e.passes++
	e.maxSeqs = max(e.maxSeqs, len(seqs))
	e.tokens = append(e.tokens, st.Tokens())
	return st, nil
}

func (e *echo) Pool(_ context.Context, st *model.State, dst []float32) error {
	for i := range st.Seqs() {
		dst[3*i] = float32(st.Offsets[i+1] - st.Offsets[i])
		dst[3*i+1] = float32(firsts[st][i])
		dst[3*i+2] = float32(e.passes)
	}
	return nil
}

func TestEmbedOrderAndBatching(t *testing.T) {
	e := &echo{}
	texts := []string{"ab", "abcdefgh", "x", "pqr", "zz", "m n o"}
	opts := model.EmbedOptions{MaxTextBytes: 100, MaxBatchTokens: 5}
	out, err := model.Embed(context.Background(), e, texts, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, text := range texts {
		ids, _ := words{}.Encode(text)
		ids = e.Prepare(ids)
		if out[i][0] != float32(len(ids)) || out[i][1] != float32(ids[0]) {
			t.Errorf("text %d %q: got %v, want length %d and first id %d", i, text, out[i], len(ids), ids[0])
		}
	}
	for _, n := range e.tokens {
		if n > opts.MaxBatchTokens {
			t.Errorf("a pass held %d tokens, the limit is %d", n, opts.MaxBatchTokens)
		}
	}
	if e.released != e.passes {
		t.Errorf("%d passes but %d states released", e.passes, e.released)
	}
}

func TestEmbedErrors(t *testing.T) {
	e := &echo{}
	ctx := context.Background()
	ok := model.DefaultEmbedOptions()
	cases := []struct {
		texts []string
		opts  model.EmbedOptions
		want  error
		index int
	}{
		{nil, ok, model.ErrBadInput, -1},
		{[]string{"a", "   "}, ok, model.ErrEmptyText, 1},
		{[]string{"a", "b", "\xff"}, ok, tokenizer.ErrInvalidUTF8, 2},
		{[]string{"abcdef"}, model.EmbedOptions{MaxTextBytes: 5, MaxBatchTokens: 10}, model.ErrTextTooLong, 0},
		{[]string{"a"}, model.EmbedOptions{MaxTextBytes: 5, MaxBatchTokens: 0}, model.ErrBadInput, -1},
		{[]string{"a"}, model.EmbedOptions{MaxTextBytes: model.MaxTextBytesLimit + 1, MaxBatchTokens: 10}, model.ErrBadInput, -1},
		{[]string{"a"}, model.EmbedOptions{MaxTextBytes: 5, MaxBatchTokens: model.MaxBatchTokensLimit + 1}, model.ErrBadInput, -1},
	}
	for i, c := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			_, err := model.Embed(ctx, e, c.texts, c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			var te *model.TextError
			if got := errors.As(err, &te); got != (c.index >= 0) || (got && te.Index != c.index) {
				t.Fatalf("err = %v, want a TextError for text %d", err, c.index)
			}
			if !model.IsInputError(err) {
				t.Fatalf("IsInputError(%v) = false", err)
			}
		})
	}
	if _, err := model.EmbedIDs(ctx, e, [][]int32{{1}, {}}, 10); !errors.Is(err, model.ErrEmptyText) {
		t.Fatalf("empty id sequence: %v", err)
	}
}
