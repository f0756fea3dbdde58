package actors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/train"
	"github.com/smile-vplm/smile/storage"
)

// evalBatch is how many texts one Classify call of Eval carries (at most
// VPLMConfig.MaxTexts).
const evalBatch = 32

// evalUpload is how Eval's errors name uploaded examples.
const evalUpload = "examples_jsonl"

// Eval scores a classification vPLM on labelled examples: a named
// dataset's split (default test) or uploaded JSONL. The texts go through
// Classify, batch by batch, so the scores are those of what serving
// answers, tenant scheduling included. Every batch must be answered by the
// same model version: if a training job commits in the middle, Eval fails
// rather than mix two models' answers.
func (s *Service) Eval(ctx context.Context, req *smilepb.EvalRequest) (*smilepb.EvalReply, error) {
	id := req.GetModel()
	v, err := s.Get(ctx, id)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) && !errors.Is(err, ErrNotFound) {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, err
	}
	if v.Task != smilepb.Task_TASK_CLASSIFY {
		return nil, fmt.Errorf("%w: eval scores classify vPLMs; %s is an embed vPLM", ErrWrongTask, id)
	}
	ex, where, err := s.evalExamples(ctx, req, v.Labels)
	if err != nil {
		return nil, err
	}
	gold := make([]int, len(ex))
	for i, e := range ex {
		gold[i] = slices.Index(v.Labels, e.Label)
		if gold[i] < 0 {
			return nil, fmt.Errorf("%w: %w", ErrBadDataset, &datasets.LineError{Path: where.name, Line: where.line(i),
				Err: fmt.Errorf("%w: %q is not a label of %s (want one of %s)", datasets.ErrUnknownLabel, e.Label, id, strings.Join(v.Labels, ", "))})
		}
	}
	batch := min(evalBatch, s.env.Config.MaxTexts)
	pred := make([]int, len(ex))
	var version uint64
	for start := 0; start < len(ex); start += batch {
		end := min(start+batch, len(ex))
		texts := make([]string, 0, end-start) // the request owns it: not reused
		for _, e := range ex[start:end] {
			// The model reads only a text's first tokens (its window), and
			// training cut long texts the same way: a text past the serving
			// limit is scored on its first MaxTextBytes bytes, not refused.
			texts = append(texts, cutUTF8(e.Text, s.env.Config.MaxTextBytes))
		}
		rep, err := s.Classify(ctx, id, texts)
		if err != nil {
			if i := TextIndex(err); i >= 0 && start+i < len(ex) {
				// Name the example in the whole set, not in its batch (the
				// outer TextError's index is the one TextIndex finds).
				return nil, &model.TextError{Index: start + i, Err: fmt.Errorf("%s line %d: %w", where.name, where.line(start+i), err)}
			}
			return nil, err
		}
		switch {
		case start == 0:
			version = rep.Version
			if !slices.Equal(rep.Labels, v.Labels) {
				return nil, fmt.Errorf("%w: eval: %s answered with labels %v, its catalog entry has %v (re-created during the evaluation?)",
					ErrModelChanged, id, rep.Labels, v.Labels)
			}
		case rep.Version != version:
			return nil, fmt.Errorf("%w: eval: %s went from version %d to %d in the middle of the evaluation (a training job committed): evaluate again",
				ErrModelChanged, id, version, rep.Version)
		}
		if len(rep.Predictions) != len(texts) {
			return nil, fmt.Errorf("%w: %d predictions for %d texts", ErrInternal, len(rep.Predictions), len(texts))
		}
		for i, p := range rep.Predictions {
			pred[start+i] = int(p.Index)
		}
	}
	m := train.Evaluate(pred, gold, len(v.Labels))
	out := &smilepb.EvalReply{Model: id, Version: version, N: uint64(m.N), Accuracy: m.Accuracy, MacroF1: m.MacroF1,
		Labels: v.Labels, Confusion: make([]uint64, 0, len(v.Labels)*len(v.Labels))}
	for _, row := range m.Confusion {
		for _, c := range row {
			out.Confusion = append(out.Confusion, uint64(c))
		}
	}
	return out, nil
}

// evalSource names where Eval's examples came from, for its errors.
type evalSource struct {
	name  string
	lines []int // lines[i] is example i's line; nil: example i is on line i+1
}

func (w evalSource) line(i int) int {
	if w.lines != nil && i < len(w.lines) {
		return w.lines[i]
	}
	return i + 1
}

// evalExamples reads the examples of an eval request: a named dataset's
// split, or the uploaded JSONL, whose labels must be labels (the vPLM's).
func (s *Service) evalExamples(ctx context.Context, req *smilepb.EvalRequest, labels []string) ([]datasets.Example, evalSource, error) {
	switch {
	case req.Dataset != "" && len(req.ExamplesJsonl) > 0:
		return nil, evalSource{}, fmt.Errorf("%w: both a dataset (%q) and uploaded examples: send one", ErrBadRequest, req.Dataset)
	case req.Dataset != "":
		split := req.Split
		if split == "" {
			split = datasets.Test
		}
		if !slices.Contains(datasets.SplitNames, split) {
			return nil, evalSource{}, fmt.Errorf("%w: split %q: want %s", ErrBadRequest, split, strings.Join(datasets.SplitNames, ", "))
		}
		ex, err := s.LoadDataset(ctx, req.Dataset, split)
		if err != nil {
			return nil, evalSource{}, err
		}
		if len(ex) == 0 {
			return nil, evalSource{}, fmt.Errorf("%w: %s has no %s examples", ErrBadDataset, req.Dataset, split)
		}
		// A pulled split is written one example a line.
		return ex, evalSource{name: req.Dataset + "/" + split + ".jsonl"}, nil
	case len(req.ExamplesJsonl) > 0:
		if req.Split != "" {
			return nil, evalSource{}, fmt.Errorf("%w: split %q is for a named dataset, not uploaded examples", ErrBadRequest, req.Split)
		}
		opts := datasets.DefaultLoadOptions()
		opts.MaxBytes = int64(len(req.ExamplesJsonl)) + 1
		opts.Labels = labels
		opts.AllowSingleClass = true // a test set may hold one class
		ex, err := datasets.ReadJSONL(bytes.NewReader(req.ExamplesJsonl), evalUpload, opts)
		if err != nil {
			return nil, evalSource{}, fmt.Errorf("%w: %w", ErrBadDataset, err)
		}
		return ex, evalSource{name: evalUpload, lines: jsonlLines(req.ExamplesJsonl)}, nil
	}
	return nil, evalSource{}, fmt.Errorf("%w: no examples: name a dataset or upload JSONL (examples_jsonl)", ErrBadRequest)
}

// jsonlLines gives the line of each record of a JSONL file that
// datasets.ReadJSONL accepted: its non-blank lines, in order.
func jsonlLines(b []byte) []int {
	var lines []int
	for n := 1; len(b) > 0; n++ {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		if n == 1 {
			line = bytes.TrimPrefix(line, []byte("\ufeff"))
		}
		if len(bytes.TrimSpace(line)) > 0 {
			lines = append(lines, n)
		}
		b = rest
	}
	return lines
}

// cutUTF8 returns s's longest prefix of at most n bytes that ends on a rune
// boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
