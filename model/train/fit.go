package train

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/smile-vplm/smile/model"
)

// fitState is what a checkpoint holds beyond the engine: where the run is.
type fitState struct {
	epoch     int // epochs finished
	bestEpoch int
	bestAcc   float64
	bad       int // epochs since the best
	valAcc    float64
}

const fitMagic = "SMILEFT1"

func (s *fitState) marshal(engine []byte) []byte {
	b := append([]byte(nil), fitMagic...)
	b = binary.LittleEndian.AppendUint64(b, uint64(s.epoch))
	b = binary.LittleEndian.AppendUint64(b, uint64(s.bestEpoch))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(s.bestAcc))
	b = binary.LittleEndian.AppendUint64(b, uint64(s.bad))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(s.valAcc))
	return append(b, engine...)
}

func (s *fitState) unmarshal(b []byte) ([]byte, error) {
	if len(b) < len(fitMagic)+40 || string(b[:len(fitMagic)]) != fitMagic {
		return nil, fmt.Errorf("%w: train: resume: not a run checkpoint", model.ErrBadInput)
	}
	r := b[len(fitMagic):]
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(r[8*i:]) }
	s.epoch, s.bestEpoch, s.bestAcc, s.bad, s.valAcc = int(u(0)), int(u(1)), math.Float64frombits(u(2)), int(u(3)), math.Float64frombits(u(4))
	if s.epoch < 0 || s.epoch > 1000 || s.bestEpoch < 0 || s.bestEpoch > s.epoch {
		return nil, fmt.Errorf("%w: train: resume: bad run state (epoch %d, best %d)", model.ErrBadInput, s.epoch, s.bestEpoch)
	}
	return r[40:], nil
}

// Fit trains e on trainSet for the configured epochs, validating after
// each on valSet (accuracy: argmax for classify heads, leave-one-out
// nearest neighbour by cosine for embed heads), and stops early after
// Patience epochs without a better validation accuracy. The engine ends
// holding the best epoch's values; Result.Best has them as params.
// Shuffling is a fixed function of (Seed, epoch), so a run resumed from a
// checkpoint continues exactly as the uninterrupted run would have.
func Fit(ctx context.Context, e *Engine, trainSet, valSet Dataset, opt FitOptions) (*Result, error) {
	cfg := e.cfg
	n := trainSet.Len()
	if n == 0 {
		return nil, fmt.Errorf("%w: train: no training examples", model.ErrBadInput)
	}
	exec := opt.Exec
	if exec == nil {
		exec = func(_ context.Context, _ int, work func() error) error { return work() }
	}
	bs := min(cfg.BatchSize, n)
	perEpoch := (n + bs - 1) / bs
	e.SetTotalSteps(cfg.Epochs * perEpoch)
	st := fitState{bestAcc: -1, valAcc: -1}
	if opt.Resume != nil {
		rest, err := st.unmarshal(opt.Resume)
		if err != nil {
			return nil, err
		}
		if err := e.Restore(rest); err != nil {
			return nil, err
		}
		if e.Steps() != st.epoch*perEpoch {
			return nil, fmt.Errorf("%w: train: resume: %d steps done, epoch %d of %d steps each (another dataset or batch size?)",
				model.ErrBadInput, e.Steps(), st.epoch, perEpoch)
		}
	}
	if st.epoch == 0 && e.method == MethodAdapter && e.headK == model.HeadClassify && cfg.HeadWarmup > 0 {
		if err := warmHead(ctx, e, trainSet, valSet, exec); err != nil {
			return nil, fmt.Errorf("train: head warm-up: %w", err)
		}
	}
	res := &Result{}
	var trainTime time.Duration
	trainEpochs := 0
	report := func(p Progress) {
		if opt.Progress != nil {
			opt.Progress(p)
		}
	}
	// A run checkpointed after its early stop has nothing left to do.
	stopped := st.epoch > 0 && cfg.Patience >= 0 && st.bad > cfg.Patience && st.epoch < cfg.Epochs
	for ep := st.epoch + 1; ep <= cfg.Epochs && !stopped; ep++ {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(ep)))
		perm := rng.Perm(n)
		start := time.Now()
		var lossSum float64
		for b := 0; b < perEpoch; b++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			idx := perm[b*bs : min((b+1)*bs, n)]
			in, labels, err := trainSet.Load(ctx, idx)
			if err != nil {
				return nil, err
			}
			var loss float64
			if err := exec(ctx, e.tokens(in), func() error {
				var err error
				loss, err = e.Step(in, labels)
				return err
			}); err != nil {
				return nil, err
			}
			lossSum += loss
			done := b + 1
			el := time.Since(start)
			eps := float64(min(done*bs, n)) / el.Seconds()
			left := (perEpoch - done) + (cfg.Epochs-ep)*perEpoch
			report(Progress{Epoch: ep, Epochs: cfg.Epochs, Step: e.Steps(), Steps: cfg.Epochs * perEpoch,
				Loss: lossSum / float64(done), ValAccuracy: st.valAcc, BestValAccuracy: st.bestAcc,
				ExamplesPerSec: eps, ETA: time.Duration(float64(el) / float64(done) * float64(left))})
		}
		trainTime += time.Since(start)
		trainEpochs++
		acc, err := Accuracy(ctx, e, valSet, exec)
		if err != nil {
			return nil, err
		}
		st.epoch, st.valAcc = ep, acc
		if acc > st.bestAcc {
			st.bestAcc, st.bestEpoch, st.bad = acc, ep, 0
			e.snapshot()
		} else {
			st.bad++
		}
		stopped = cfg.Patience >= 0 && st.bad > cfg.Patience && ep < cfg.Epochs
		if opt.Checkpoint != nil {
			ck, err := e.Checkpoint()
			if err != nil {
				return nil, err
			}
			if err := opt.Checkpoint(ep, st.marshal(ck)); err != nil {
				return nil, err
			}
		}
		report(Progress{Epoch: ep, Epochs: cfg.Epochs, Step: e.Steps(), Steps: cfg.Epochs * perEpoch,
			Loss: lossSum / float64(perEpoch), ValAccuracy: acc, BestValAccuracy: st.bestAcc,
			EpochDone: true, EarlyStopped: stopped})
	}
	if len(e.best) > 0 {
		e.restoreSnapshot()
	}
	res.BestEpoch, res.BestValAccuracy, res.Epochs, res.EarlyStopped = st.bestEpoch, st.bestAcc, st.epoch, stopped
	if trainEpochs > 0 {
		res.EpochSeconds = trainTime.Seconds() / float64(trainEpochs)
	}
	if e.method != MethodFull {
		p, err := e.Params()
		if err != nil {
			return nil, err
		}
		res.Best = p
	}
	return res, nil
}

// tokens is a batch's size in token rows (its cost for a scheduler);
// pooled inputs count one row per text.
func (e *Engine) tokens(in *Inputs) int {
	switch {
	case in.IDs != nil:
		t := 0
		for _, s := range in.IDs {
			t += len(s)
		}
		return t
	case len(in.Offsets) > 0:
		return in.Offsets[len(in.Offsets)-1]
	}
	return max(1, len(in.H)/e.spec.Info.OutputDim)
}

// Accuracy scores e on a dataset in batches: the share of examples whose
// argmax matches (classify), or whose nearest other example by cosine has
// the same label (embed). exec may be nil.
func Accuracy(ctx context.Context, e *Engine, set Dataset, exec func(context.Context, int, func() error) error) (float64, error) {
	pred, gold, err := Predictions(ctx, e, set, exec)
	if err != nil {
		return 0, err
	}
	if len(gold) == 0 {
		return 0, nil
	}
	right := 0
	for i := range gold {
		if pred[i] == gold[i] {
			right++
		}
	}
	return float64(right) / float64(len(gold)), nil
}

// Predictions returns predicted and gold label indices for every example
// of set (see Accuracy for embed heads).
func Predictions(ctx context.Context, e *Engine, set Dataset, exec func(context.Context, int, func() error) error) (pred, gold []int, err error) {
	if exec == nil {
		exec = func(_ context.Context, _ int, work func() error) error { return work() }
	}
	n := set.Len()
	bs := max(e.cfg.BatchSize, 64)
	var outs [][]float32
	idx := make([]int, 0, bs)
	for b := 0; b < n; b += bs {
		idx = idx[:0]
		for i := b; i < min(b+bs, n); i++ {
			idx = append(idx, i)
		}
		in, labels, err := set.Load(ctx, idx)
		if err != nil {
			return nil, nil, err
		}
		var out [][]float32
		if err := exec(ctx, e.tokens(in), func() error {
			var err error
			out, err = e.Predict(ctx, in)
			return err
		}); err != nil {
			return nil, nil, err
		}
		outs = append(outs, out...)
		gold = append(gold, labels...)
	}
	pred = make([]int, len(outs))
	if e.headK == model.HeadClassify {
		for i, o := range outs {
			pred[i] = Argmax(o)
		}
		return pred, gold, nil
	}
	for i, a := range outs {
		best, bj := math.Inf(-1), -1
		for j, b := range outs {
			if j == i {
				continue
			}
			var dot float64
			for k := range a {
				dot += float64(a[k]) * float64(b[k])
			}
			if dot > best {
				best, bj = dot, j
			}
		}
		pred[i] = -1
		if bj >= 0 {
			pred[i] = gold[bj]
		}
	}
	return pred, gold, nil
}

// warmHead fits a classify head alone on the frozen model's pooled output
// (computed once for both sets) and puts it into e: the linear-probe stage
// of LP-FT. The engine's adapter is still its initial (identity) one, so
// the pooled output is the backbone's.
func warmHead(ctx context.Context, e *Engine, trainSet, valSet Dataset, exec func(context.Context, int, func() error) error) error {
	pooled := func(set Dataset) (*pooledSet, error) {
		ps := &pooledSet{dim: e.spec.Info.OutputDim}
		n := set.Len()
		bs := max(e.cfg.BatchSize, 64)
		idx := make([]int, 0, bs)
		for b := 0; b < n; b += bs {
			idx = idx[:0]
			for i := b; i < min(b+bs, n); i++ {
				idx = append(idx, i)
			}
			in, labels, err := set.Load(ctx, idx)
			if err != nil {
				return nil, err
			}
			S, err := e.checkInputs(in)
			if err != nil {
				return nil, err
			}
			if err := exec(ctx, e.tokens(in), func() error {
				e.ar.reset()
				p := e.forward(in, S)
				ps.rows = append(ps.rows, p.pooled...)
				return nil
			}); err != nil {
				return nil, err
			}
			ps.labels = append(ps.labels, labels...)
		}
		return ps, nil
	}
	tr, err := pooled(trainSet)
	if err != nil {
		return err
	}
	va, err := pooled(valSet)
	if err != nil {
		return err
	}
	cfg := Defaults(MethodHead)
	cfg.Epochs, cfg.Seed, cfg.LR, cfg.HeadLR = e.cfg.HeadWarmup, e.cfg.Seed, e.cfg.HeadLR, e.cfg.HeadLR
	hp := cloneParams(e.base)
	he, err := New(e.spec, hp, MethodHead, cfg, e.blas)
	if err != nil {
		return err
	}
	res, err := Fit(ctx, he, tr, va, FitOptions{Exec: exec}) // on the device's goroutine, like every step
	if err != nil {
		return err
	}
	copy(e.base.Head.W, res.Best.Head.W)
	copy(e.base.Head.B, res.Best.Head.B)
	return nil
}

// pooledSet is a Dataset of pooled rows in memory (InputPooled).
type pooledSet struct {
	dim    int
	rows   []float32
	labels []int
}

func (p *pooledSet) Len() int { return len(p.labels) }

func (p *pooledSet) Load(_ context.Context, idx []int) (*Inputs, []int, error) {
	in := &Inputs{H: make([]float32, 0, len(idx)*p.dim)}
	labels := make([]int, len(idx))
	for i, j := range idx {
		in.H = append(in.H, p.rows[j*p.dim:(j+1)*p.dim]...)
		labels[i] = p.labels[j]
	}
	return in, labels, nil
}
