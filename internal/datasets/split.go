package datasets

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
)

// SplitSeed is the seed of the catalog datasets' splits. Changing it changes
// every pulled split: keep it.
const SplitSeed uint64 = 20260101

// Split names, in the order they are written and shown.
const (
	Train      = "train"
	Validation = "validation"
	Test       = "test"
)

// SplitNames lists the splits in order.
var SplitNames = []string{Train, Validation, Test}

// Splits holds the three parts of a dataset.
type Splits struct {
	Train, Validation, Test []Example
}

// Get returns the named split (nil for an unknown name).
func (s *Splits) Get(name string) []Example {
	switch name {
	case Train:
		return s.Train
	case Validation:
		return s.Validation
	case Test:
		return s.Test
	}
	return nil
}

// Split divides examples 80/10/10 per label, ordered by SHA-256 of the seed
// and each example's id (its 1-based position in examples when the id is
// empty), so that with unique ids the result does not depend on the input
// order. A label with n examples gives (n+5)/10 to test and to validation
// and the rest to train.
func Split(examples []Example, seed uint64) Splits {
	type keyed struct {
		key [sha256.Size]byte
		id  string
		ex  Example
	}
	byLabel := map[string][]keyed{}
	var seedBytes [8]byte
	binary.BigEndian.PutUint64(seedBytes[:], seed)
	for i, ex := range examples {
		id := ex.ID
		if id == "" {
			id = strconv.Itoa(i + 1)
		}
		h := sha256.New()
		h.Write(seedBytes[:])
		h.Write([]byte(id))
		var k keyed
		h.Sum(k.key[:0])
		k.id, k.ex = id, ex
		byLabel[ex.Label] = append(byLabel[ex.Label], k)
	}
	cmp := func(a, b keyed) int {
		if c := bytes.Compare(a.key[:], b.key[:]); c != 0 {
			return c
		}
		if a.id != b.id {
			return strings.Compare(a.id, b.id)
		}
		return strings.Compare(a.ex.Text, b.ex.Text)
	}
	var train, val, test []keyed
	for _, ks := range byLabel {
		slices.SortFunc(ks, cmp)
		n := len(ks)
		nTest := (n + 5) / 10
		nVal := (n + 5) / 10
		test = append(test, ks[:nTest]...)
		val = append(val, ks[nTest:nTest+nVal]...)
		train = append(train, ks[nTest+nVal:]...)
	}
	out := func(ks []keyed) []Example {
		slices.SortFunc(ks, cmp)
		ex := make([]Example, len(ks))
		for i, k := range ks {
			ex[i] = k.ex
		}
		return ex
	}
	return Splits{Train: out(train), Validation: out(val), Test: out(test)}
}

// Counts is the number of examples of a split, in all and per label.
type Counts struct {
	Total  int            `json:"total"`
	Labels map[string]int `json:"labels"`
}

// Count tallies examples per label.
func Count(examples []Example) Counts {
	c := Counts{Total: len(examples), Labels: map[string]int{}}
	for _, ex := range examples {
		c.Labels[ex.Label]++
	}
	return c
}
