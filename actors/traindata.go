package actors

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/smile-vplm/smile/api/smilepb"
	"github.com/smile-vplm/smile/internal/datasets"
	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/train"
)

// A training job's data: its config, its examples (a pulled dataset or an
// upload), checked against the vPLM and tokenized as serving tokenizes.

// trainConfig applies a request's config over the method's defaults.
func trainConfig(pb *smilepb.TrainConfig, m train.Method) (train.Config, error) {
	c := train.Defaults(m)
	if pb != nil {
		if pb.Epochs != 0 {
			c.Epochs = int(min(pb.Epochs, math.MaxInt32))
		}
		if pb.BatchSize != 0 {
			c.BatchSize = int(min(pb.BatchSize, math.MaxInt32))
		}
		if pb.Lr != 0 {
			c.LR = pb.Lr
		}
		if pb.WeightDecay != 0 {
			c.WeightDecay = pb.WeightDecay
		}
		if pb.Warmup != 0 {
			c.Warmup = pb.Warmup
		}
		if pb.ClipNorm != 0 {
			c.ClipNorm = pb.ClipNorm
		}
		if pb.Seed != 0 {
			c.Seed = pb.Seed
		}
		if pb.Patience != 0 {
			c.Patience = int(pb.Patience)
		}
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return c, nil
}

func trainConfigPB(c train.Config) *smilepb.TrainConfig {
	return &smilepb.TrainConfig{Epochs: uint32(c.Epochs), BatchSize: uint32(c.BatchSize), Lr: c.LR, WeightDecay: c.WeightDecay,
		Warmup: c.Warmup, ClipNorm: c.ClipNorm, Seed: c.Seed, Patience: int32(c.Patience)}
}

// jobData is a job's examples, checked and tokenized.
type jobData struct {
	train, val       []datasets.Example
	trainSrc, valSrc string // how errors name the examples: "imdb/train.jsonl" or "" (uploaded)
	trainPos, valPos []int  // uploaded: each example's index in the upload
	valIsTrain       bool

	trainIDs, valIDs       [][]int32
	trainLabels, valLabels []int
}

// uploadData splits uploaded examples (see the file comment). Each is
// split under the id "<index>:<id>" (its index in the upload), so
// duplicates stay distinct and errors can name the upload's index.
func uploadData(ex []datasets.Example) *jobData {
	keyed := make([]datasets.Example, len(ex))
	for i, e := range ex {
		keyed[i] = datasets.Example{Text: e.Text, Label: e.Label, ID: strconv.Itoa(i) + ":" + e.ID}
	}
	sp := datasets.Split(keyed, datasets.SplitSeed)
	d := &jobData{}
	unkey := func(set []datasets.Example) ([]datasets.Example, []int) {
		pos := make([]int, len(set))
		out := make([]datasets.Example, len(set))
		for k, e := range set {
			p, _, _ := strings.Cut(e.ID, ":")
			pos[k], _ = strconv.Atoi(p)
			out[k] = ex[pos[k]]
		}
		return out, pos
	}
	d.train, d.trainPos = unkey(append(sp.Train, sp.Test...))
	d.val, d.valPos = unkey(sp.Validation)
	if len(d.val) == 0 {
		d.val, d.valPos, d.valIsTrain = d.train, d.trainPos, true
	}
	return d
}

// namedData reads a pulled dataset's train and validation splits.
func (t *trainer) namedData(ctx context.Context, name string) (*jobData, error) {
	tr, err := t.s.LoadDataset(ctx, name, datasets.Train)
	if err != nil {
		return nil, err
	}
	val, err := t.s.LoadDataset(ctx, name, datasets.Validation)
	if err != nil {
		return nil, err
	}
	d := &jobData{train: tr, val: val, trainSrc: name + "/" + datasets.Train + ".jsonl", valSrc: name + "/" + datasets.Validation + ".jsonl"}
	if len(d.val) == 0 {
		d.val, d.valIsTrain = d.train, true
	}
	return d, nil
}

// where names example i of a set for an error: its line in a pulled
// split, or its index in the upload.
func where(src string, pos []int, i int) string {
	if src == "" {
		if i < len(pos) {
			i = pos[i]
		}
		return fmt.Sprintf("example %d", i)
	}
	return fmt.Sprintf("%s line %d", src, i+1)
}

// prepare checks the examples against the vPLM and tokenizes them.
func (d *jobData) prepare(bb model.Backbone, v *smilepb.VPLM) error {
	if len(d.train) == 0 {
		return fmt.Errorf("%w: no training examples", ErrBadDataset)
	}
	var labels []string
	switch v.Task {
	case smilepb.Task_TASK_CLASSIFY:
		labels = v.Labels
	case smilepb.Task_TASK_EMBED:
		// Class ids for the contrastive loss: the training set's labels.
		for _, e := range d.train {
			if !slices.Contains(labels, e.Label) {
				labels = append(labels, e.Label)
			}
		}
		slices.Sort(labels)
	default:
		return fmt.Errorf("%w: %s has no trainable task", ErrBadRequest, v.Id)
	}
	index := func(set []datasets.Example, src string, pos []int) ([]int, error) {
		out := make([]int, len(set))
		for i, e := range set {
			if strings.TrimSpace(e.Label) == "" {
				return nil, fmt.Errorf("%w: %s: %w", ErrBadDataset, where(src, pos, i), datasets.ErrEmptyLabel)
			}
			out[i] = slices.Index(labels, e.Label)
			if out[i] < 0 {
				return nil, fmt.Errorf("%w: %s: %w: %q is not a label of %s (want one of %s)", ErrBadDataset, where(src, pos, i),
					datasets.ErrUnknownLabel, e.Label, v.Id, strings.Join(labels, ", "))
			}
		}
		return out, nil
	}
	var err error
	if d.trainLabels, err = index(d.train, d.trainSrc, d.trainPos); err != nil {
		return err
	}
	seen := map[int]bool{}
	for _, l := range d.trainLabels {
		seen[l] = true
	}
	if len(seen) < 2 {
		return fmt.Errorf("%w: %w: the training examples have %d distinct label(s); training needs at least two", ErrBadDataset, datasets.ErrSingleClass, len(seen))
	}
	if d.trainIDs, err = tokenizeExamples(bb, d.train, d.trainSrc, d.trainPos); err != nil {
		return err
	}
	if d.valIsTrain {
		d.valLabels, d.valIDs = d.trainLabels, d.trainIDs
		return nil
	}
	if d.valLabels, err = index(d.val, d.valSrc, d.valPos); err != nil {
		return err
	}
	d.valIDs, err = tokenizeExamples(bb, d.val, d.valSrc, d.valPos)
	return err
}

// tokenizeForServing tokenizes texts as a vPLM actor does (model.Tokenize:
// the backbone's tokenizer, then Prepare's cut to the window), so a model
// trains on the ids serving will give it. Only the byte limit differs: a
// long training text is cut like any other, not refused.
func tokenizeForServing(bb model.Backbone, texts []string) ([][]int32, error) {
	return model.Tokenize(bb, texts, model.EmbedOptions{MaxTextBytes: model.MaxTextBytesLimit, MaxBatchTokens: model.MaxBatchTokensLimit})
}

func tokenizeExamples(bb model.Backbone, set []datasets.Example, src string, pos []int) ([][]int32, error) {
	texts := make([]string, len(set))
	for i, e := range set {
		if strings.TrimSpace(e.Text) == "" {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadDataset, where(src, pos, i), datasets.ErrEmptyText)
		}
		texts[i] = e.Text
	}
	ids, err := tokenizeForServing(bb, texts)
	if err != nil {
		var te *model.TextError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadDataset, where(src, pos, te.Index), te.Err)
		}
		return nil, fmt.Errorf("%w: %w", ErrBadDataset, err)
	}
	return ids, nil
}

// LoadDataset returns a split ("train", "validation", "test"; "" is test)
// of a catalog dataset from the node's data directory, pulling the dataset
// on first use.
func (s *Service) LoadDataset(ctx context.Context, name, split string) ([]datasets.Example, error) {
	t, err := s.trainer()
	if err != nil {
		return nil, err
	}
	if t.cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: this node has no data directory for datasets", ErrUnavailable)
	}
	if split == "" {
		split = datasets.Test
	}
	if !slices.Contains(datasets.SplitNames, split) {
		return nil, fmt.Errorf("%w: split %q: want %s", ErrBadRequest, split, strings.Join(datasets.SplitNames, ", "))
	}
	if _, ok := datasets.Catalog[name]; !ok {
		return nil, fmt.Errorf("%w: %w: %q (known: %s)", ErrBadDataset, datasets.ErrUnknownDataset, name, strings.Join(datasets.Names(), ", "))
	}
	ex, err := datasets.ReadSplit(t.cfg.DataDir, name, split)
	if errors.Is(err, datasets.ErrNotPulled) {
		if err := t.pull(ctx, name); err != nil {
			return nil, err
		}
		ex, err = datasets.ReadSplit(t.cfg.DataDir, name, split)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDataset, err)
	}
	return ex, nil
}

func (t *trainer) pull(ctx context.Context, name string) error {
	t.pullMu.Lock()
	defer t.pullMu.Unlock()
	if _, err := datasets.ReadMeta(t.cfg.DataDir, name); err == nil {
		return nil // pulled while we waited
	}
	var err error
	if t.cfg.Pull != nil {
		err = t.cfg.Pull(ctx, t.cfg.DataDir, name)
	} else {
		_, err = datasets.Pull(ctx, t.cfg.DataDir, name, "", nil)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, datasets.ErrUnknownDataset):
		return fmt.Errorf("%w: %w", ErrBadDataset, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: pulling dataset %s: %w", ErrTimeout, name, err)
	}
	return fmt.Errorf("%w: pulling dataset %s: %w", ErrUnavailable, name, err)
}
