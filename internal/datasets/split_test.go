package datasets

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

func synthetic(perLabel map[string]int) []Example {
	var ex []Example
	for l, n := range perLabel {
		for i := range n {
			ex = append(ex, Example{Text: fmt.Sprintf("%s text %d", l, i), Label: l, ID: fmt.Sprintf("%s-%d", l, i)})
		}
	}
	return ex
}

func encodeSplits(t *testing.T, s Splits) [][]byte {
	t.Helper()
	var out [][]byte
	for _, name := range SplitNames {
		b, err := EncodeJSONL(s.Get(name))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestDataSplitDeterministic(t *testing.T) {
	ex := synthetic(map[string]int{"a": 137, "b": 41, "c": 6})
	first := encodeSplits(t, Split(ex, SplitSeed))
	// Any input order gives the same bytes: the order comes from the ids.
	for trial := range 5 {
		shuffled := append([]Example(nil), ex...)
		rand.New(rand.NewPCG(uint64(trial), 1)).Shuffle(len(shuffled), func(i, j int) {
			shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
		})
		again := encodeSplits(t, Split(shuffled, SplitSeed))
		for i := range first {
			if !bytes.Equal(first[i], again[i]) {
				t.Fatalf("trial %d: split %s differs", trial, SplitNames[i])
			}
		}
	}
	other := encodeSplits(t, Split(ex, SplitSeed+1))
	if bytes.Equal(first[2], other[2]) {
		t.Fatal("another seed gave the same test split")
	}
}

func TestDataSplitProportions(t *testing.T) {
	for n := 1; n <= 120; n++ {
		s := Split(synthetic(map[string]int{"x": n, "y": 1000 - n}), 7)
		seen := map[string]bool{}
		for _, name := range SplitNames {
			for _, e := range s.Get(name) {
				if seen[e.ID] {
					t.Fatalf("n=%d: %s in two splits", n, e.ID)
				}
				seen[e.ID] = true
			}
		}
		if len(seen) != 1000 {
			t.Fatalf("n=%d: %d examples after the split, want 1000", n, len(seen))
		}
		for _, label := range []string{"x", "y"} {
			total := map[string]int{"x": n, "y": 1000 - n}[label]
			for name, share := range map[string]float64{Train: 0.8, Validation: 0.1, Test: 0.1} {
				got := Count(s.Get(name)).Labels[label]
				if d := float64(got) - share*float64(total); d > 1 || d < -1 {
					t.Fatalf("n=%d label %s: %s has %d of %d, want %.1f ± 1", n, label, name, got, total, share*float64(total))
				}
			}
		}
	}
}

func TestDataSplitWithoutIDs(t *testing.T) {
	ex := []Example{{Text: "a", Label: "p"}, {Text: "b", Label: "n"}, {Text: "c", Label: "p"}}
	a, b := encodeSplits(t, Split(ex, 1)), encodeSplits(t, Split(ex, 1))
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			t.Fatal("the same input split twice differs")
		}
	}
	if c := Count(Split(ex, 1).Train); c.Total != 3 {
		t.Fatalf("3 examples, 1 or 2 per label: train has %d, want all 3", c.Total)
	}
}
