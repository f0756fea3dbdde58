package train_test

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/smile-vplm/smile/model"
	"github.com/smile-vplm/smile/model/train"
)

// exactLower gives a backbone's own states at the cut (its lower layers run
// on the whole sequence), so plot-mode inputs must equal full-mode ones.
type exactLower struct {
	bb  model.Backbone
	cut int
}

func (l exactLower) Cut() int { return l.cut }

func (l exactLower) Lower(ids []int32, dst []float32) error {
	ctx := context.Background()
	st, err := l.bb.Embed(ctx, [][]int32{ids})
	if err != nil {
		return err
	}
	defer l.bb.Release(st)
	if err := l.bb.RunLayers(ctx, st, l.cut, nil); err != nil {
		return err
	}
	return l.bb.Device().Download(dst, st.H)
}

func TestComputeInputsLower(t *testing.T) {
	ctx := context.Background()
	for name, bb := range backbones(t) {
		t.Run(name, func(t *testing.T) {
			ids := prepared(t, bb, []string{"a fine film", "no", "the plot holds together until the very last scene"})
			L := bb.Info().Layers
			low := exactLower{bb, L - 1}
			for _, c := range []struct {
				kind  train.InputKind
				layer int
			}{{train.InputStates, L - 1}, {train.InputStates, L}, {train.InputAttended, L}, {train.InputPooled, 0}} {
				want, err := train.ComputeInputs(ctx, bb, c.kind, c.layer, ids)
				if err != nil {
					t.Fatal(err)
				}
				got, err := train.ComputeInputsLower(ctx, bb, low, c.kind, c.layer, ids)
				if err != nil {
					t.Fatalf("kind %d layer %d: %v", c.kind, c.layer, err)
				}
				for _, p := range [][2][]float32{{got.H, want.H}, {got.Z, want.Z}} {
					if len(p[0]) != len(p[1]) {
						t.Fatalf("kind %d layer %d: %d values, want %d", c.kind, c.layer, len(p[0]), len(p[1]))
					}
					for i := range p[0] {
						if d := math.Abs(float64(p[0][i] - p[1][i])); d > 1e-4*(1+math.Abs(float64(p[1][i]))) {
							t.Fatalf("kind %d layer %d: value %d = %g, want %g", c.kind, c.layer, i, p[0][i], p[1][i])
						}
					}
				}
			}
			for _, c := range []struct {
				lower model.Lower
				kind  train.InputKind
				layer int
			}{
				{low, train.InputIDs, 0},
				{low, train.InputStates, L - 2},
				{low, train.InputAttended, L - 1},
				{exactLower{bb, L}, train.InputPooled, 0},
				{exactLower{bb, 0}, train.InputPooled, 0},
			} {
				if _, err := train.ComputeInputsLower(ctx, bb, c.lower, c.kind, c.layer, ids); !errors.Is(err, model.ErrBadInput) {
					t.Errorf("cut %d kind %d layer %d: %v, want ErrBadInput", c.lower.Cut(), c.kind, c.layer, err)
				}
			}
		})
	}
}
