package storage

import (
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// PLOT table entries (model/plot) are stored under binary keys, outside the
// string-keyed records:
//
//	p/<backbone fingerprint>\x00<cut u8><n-gram key>   one entry (plot.EncodeEntry bytes)
//
// An entry is a function of (backbone, cut, n-gram) alone, so every table
// of a backbone and cut shares it: a domain table built on top of another
// stores only its new n-grams. Tables themselves (their manifests and
// n-gram lists) are records under NSPlotTable.

const plotPrefix = "p/"

// PlotEntries reads and writes the entries of one backbone and cut. It is
// safe for concurrent use.
type PlotEntries struct {
	s      *Store
	prefix []byte
}

// PlotEntries returns the entry store of backbone (its fingerprint: no NUL
// bytes) cut after layer cut (1..255).
func (s *Store) PlotEntries(backbone string, cut int) (*PlotEntries, error) {
	if backbone == "" || strings.IndexByte(backbone, 0) >= 0 {
		return nil, fmt.Errorf("%w: plot backbone fingerprint %q", ErrInvalid, backbone)
	}
	if cut < 1 || cut > 255 {
		return nil, fmt.Errorf("%w: plot cut %d", ErrInvalid, cut)
	}
	p := append([]byte(plotPrefix), backbone...)
	p = append(p, 0, byte(cut))
	return &PlotEntries{s: s, prefix: p}, nil
}

func (p *PlotEntries) key(gram []byte) ([]byte, error) {
	if len(gram) == 0 {
		return nil, fmt.Errorf("%w: empty plot n-gram key", ErrInvalid)
	}
	k := make([]byte, 0, len(p.prefix)+len(gram))
	return append(append(k, p.prefix...), gram...), nil
}

// Get returns the entry stored under an n-gram key, or ok false.
func (p *PlotEntries) Get(gram []byte) (v []byte, ok bool, err error) {
	k, err := p.key(gram)
	if err != nil {
		return nil, false, err
	}
	err = p.s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		ok = err == nil
		return err
	})
	return v, ok, err
}

// Has reports which of the n-gram keys have an entry (one read
// transaction).
func (p *PlotEntries) Has(grams [][]byte) ([]bool, error) {
	out := make([]bool, len(grams))
	err := p.s.view(func(txn *badger.Txn) error {
		for i, g := range grams {
			k, err := p.key(g)
			if err != nil {
				return err
			}
			_, err = txn.Get(k)
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			out[i] = true
		}
		return nil
	})
	return out, err
}

// Put stores entries (values[i] under grams[i]) in one Badger write
// batch. A batch is neither atomic nor ordered: a crash mid-way leaves
// some of them, which a resumed build finds with Has.
func (p *PlotEntries) Put(grams, values [][]byte) error {
	if len(grams) != len(values) {
		return fmt.Errorf("%w: %d plot keys for %d values", ErrInvalid, len(grams), len(values))
	}
	p.s.mu.RLock()
	defer p.s.mu.RUnlock()
	if p.s.closed {
		return ErrClosed
	}
	wb := p.s.db.NewWriteBatch()
	defer wb.Cancel()
	for i, g := range grams {
		k, err := p.key(g)
		if err != nil {
			return err
		}
		if err := wb.Set(k, values[i]); err != nil {
			return fmt.Errorf("storage: put plot entries: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("storage: put plot entries: %w", err)
	}
	return nil
}

// Usage counts the stored entries and their value bytes.
func (p *PlotEntries) Usage() (entries, bytes int64, err error) {
	err = p.s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix, opts.PrefetchValues = p.prefix, false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(p.prefix); it.ValidForPrefix(p.prefix); it.Next() {
			entries++
			bytes += it.Item().ValueSize()
		}
		return nil
	})
	return entries, bytes, err
}
