package storage

import (
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// blobGroup turns concurrent PutBlob calls into few synced transactions.
// Badger syncs once per transaction (and its write-ahead log once per
// request), so two thousand creates a second, each putting its own params
// blob, would otherwise wait on two thousand syncs. A caller hashes its
// blob itself (in parallel with the others) and queues it. While fewer
// than maxCommitters groups are being committed, a caller becomes a
// committer: it commits what is queued, a group at a time, until its own
// put is done, and then hands the role to the oldest waiter (or gives it
// up when nothing waits), so no caller is held to commit others' blobs
// for long. No one waits on a timer: a lone put commits at once. Two
// committers let one group's transaction be built while the other's is
// written.
type blobGroup struct {
	mu         sync.Mutex
	pending    []*blobPut
	committers int
}

type blobPut struct {
	d    Digest
	data []byte
	err  error
	done chan struct{}
	lead chan struct{} // a committer hands its role over here (buffered)
	// handed: a role was sent on lead (under blobGroup.mu).
	handed bool
}

const (
	// maxGroupBytes bounds one group's blob bytes (Badger keeps a
	// transaction's values in memory until it commits).
	maxGroupBytes = 64 << 20
	maxCommitters = 2
)

// putGrouped stores data under d (its digest) with the puts of other
// goroutines.
func (s *Store) putGrouped(d Digest, data []byte) error {
	p := &blobPut{d: d, data: data, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	g := &s.puts
	g.mu.Lock()
	g.pending = append(g.pending, p)
	lead := g.committers < maxCommitters
	if lead {
		g.committers++
	}
	g.mu.Unlock()
	if lead {
		s.commitGroups(p)
		<-p.done
		return p.err
	}
	select {
	case <-p.done:
		// Handed the role as the put completed: take it, to pass it on.
		select {
		case <-p.lead:
			s.commitGroups(p)
		default:
		}
	case <-p.lead:
		s.commitGroups(p)
		<-p.done
	}
	return p.err
}

// commitGroups commits queued puts, a group at a time, until own is done;
// then it hands the committer role to the oldest waiting put, or gives it
// up when none waits.
func (s *Store) commitGroups(own *blobPut) {
	g := &s.puts
	for {
		g.mu.Lock()
		if isClosed(own.done) {
			// Hand the role to the oldest put not handed one already (a
			// put handed two roles would keep one of them for nobody).
			for _, p := range g.pending {
				if !p.handed {
					p.handed = true
					p.lead <- struct{}{} // buffered, and sent at most once
					g.mu.Unlock()
					return
				}
			}
			if len(g.pending) > 0 {
				// Every waiter already holds a role: this one is not needed.
				g.committers--
				g.mu.Unlock()
				return
			}
		}
		n := groupLen(g.pending)
		if n == 0 {
			g.committers--
			g.pending = nil
			g.mu.Unlock()
			return
		}
		group := g.pending[:n:n]
		g.pending = g.pending[n:]
		g.mu.Unlock()
		err := s.commitGroup(group)
		for _, p := range group {
			p.err = err
			close(p.done)
		}
	}
}

// groupLen is how many of puts, from the first, one transaction takes: at
// least one, then as many as fit in maxGroupBytes (0 for none).
func groupLen(puts []*blobPut) int {
	n, size := 0, 0
	for n < len(puts) && (n == 0 || size+len(puts[n].data) <= maxGroupBytes) {
		size += len(puts[n].data)
		n++
	}
	return n
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (s *Store) commitGroup(group []*blobPut) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	err := updateChunked(s.db, len(group), func(txn *badger.Txn, i int) error {
		return s.putBlobTxn(txn, group[i].d, group[i].data, false)
	})
	if err != nil {
		return fmt.Errorf("storage: put %d blobs: %w", len(group), err)
	}
	return nil
}
