package storage

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/smile-vplm/smile/api/smilepb"
)

// Entry is the data of one committed Raft log entry: its index and the
// commands it carries (a CatalogBatch), applied in order.
type Entry struct {
	Index uint64
	Cmds  []*smilepb.CatalogCommand
}

// appliedPos is how far the catalog has applied the Raft log: every entry
// before index, and the first n commands of entry index. It is stored
// under keyApplied as 16 bytes: index and n, big-endian.
type appliedPos struct{ index, n uint64 }

func (p appliedPos) encode() []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16), p.index), p.n)
}

func decodeApplied(v []byte) (appliedPos, error) {
	if len(v) != 16 {
		return appliedPos{}, fmt.Errorf("%w: applied position is %d bytes, not 16", ErrCorrupt, len(v))
	}
	return appliedPos{binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])}, nil
}

func getApplied(txn *badger.Txn) (appliedPos, error) {
	item, err := txn.Get(keyApplied)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return appliedPos{}, nil
	}
	if err != nil {
		return appliedPos{}, err
	}
	var p appliedPos
	err = item.Value(func(v []byte) (err error) {
		p, err = decodeApplied(v)
		return err
	})
	return p, err
}

// Applied returns the index of the last Raft log entry ApplyEntries has
// applied (wholly or in part), or 0 when it never ran; after Restore, the
// snapshot's.
func (c *Catalog) Applied() (uint64, error) {
	var p appliedPos
	err := c.s.catView(func(txn *badger.Txn) (err error) {
		p, err = getApplied(txn)
		return err
	})
	return p.index, err
}

// ApplyEntries is the Raft FSM's apply: it applies the commands of
// consecutive committed log entries, in order, and returns each command's
// result (out[e][k], errs[e][k] for entries[e].Cmds[k]), as Apply would.
//
// The commands of all the entries share as few Badger transactions as fit
// (usually one, one fsync). Each transaction also records the applied
// position (entry index, commands of that entry done, failed ones
// included) under a node-local key, so a replay after a crash skips what
// was applied: a command of an entry before the position, or among the
// first n of the position's entry, is not applied again and gets
// ErrAlreadyApplied. Entries must come in increasing index order; one
// whose index is 0 or not above the previous entry's in the same call gets
// ErrInvalid for each command. An entry without commands only moves the
// position.
//
// Unlike Apply, the outcome depends only on the catalog and the commands,
// so every replica reaches the same state: params blobs need not be stored
// locally (the proposer checks replication; a follower may fetch the blob
// later; a blob whose count drops to zero is still deleted where present),
// and the clock is never read: zero times stay zero, so the proposer sets
// them. A storage failure (not a command's own error) fails the rest of
// the call with a wrapped Badger error and moves no position: the FSM
// should treat it as fatal.
func (c *Catalog) ApplyEntries(entries []Entry) ([][]*smilepb.VPLM, [][]error) {
	out := make([][]*smilepb.VPLM, len(entries))
	errs := make([][]error, len(entries))
	total := 0
	for e, en := range entries {
		out[e] = make([]*smilepb.VPLM, len(en.Cmds))
		errs[e] = make([]error, len(en.Cmds))
		total += len(en.Cmds)
	}
	failAll := func(err error) ([][]*smilepb.VPLM, [][]error) {
		for e := range errs {
			for k := range errs[e] {
				errs[e][k] = err
			}
		}
		return out, errs
	}
	c.s.mu.RLock()
	defer c.s.mu.RUnlock()
	if c.s.closed {
		return failAll(ErrClosed)
	}
	c.s.applyMu.Lock()
	defer c.s.applyMu.Unlock()
	var at appliedPos
	if err := c.s.db.View(func(txn *badger.Txn) (err error) {
		at, err = getApplied(txn)
		return err
	}); err != nil {
		return failAll(fmt.Errorf("storage: catalog: %w", err))
	}

	steps := make([]step, 0, total)
	var prev uint64
	for e, en := range entries {
		if en.Index == 0 || en.Index <= prev {
			for k := range en.Cmds {
				errs[e][k] = fmt.Errorf("%w: entry index %d after %d", ErrInvalid, en.Index, prev)
			}
			continue
		}
		prev = en.Index
		skip := 0
		switch {
		case en.Index < at.index:
			skip = len(en.Cmds)
		case en.Index == at.index:
			skip = int(min(at.n, uint64(len(en.Cmds))))
		}
		for k := range skip {
			errs[e][k] = fmt.Errorf("%w: entry %d command %d (applied through entry %d command %d)",
				ErrAlreadyApplied, en.Index, k, at.index, at.n)
		}
		if en.Index <= at.index {
			if skip == len(en.Cmds) {
				continue
			}
		} else if len(en.Cmds) == 0 {
			steps = append(steps, step{pos: appliedPos{en.Index, 0}})
		}
		for k := skip; k < len(en.Cmds); k++ {
			steps = append(steps, step{cmd: en.Cmds[k], out: &out[e][k], err: &errs[e][k], pos: appliedPos{en.Index, uint64(k + 1)}})
		}
	}
	if len(steps) > 0 {
		c.applySteps(steps, applyOpts{track: true})
	}
	return out, errs
}
