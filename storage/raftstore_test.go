package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

func testLog(index, term uint64, data string) *raft.Log {
	return &raft.Log{Index: index, Term: term, Type: raft.LogCommand, Data: []byte(data),
		AppendedAt: time.Unix(1700000000, int64(index))}
}

func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

func wantIndexes(t *testing.T, r raft.LogStore, first, last uint64) {
	t.Helper()
	f, err := r.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if f != first || l != last {
		t.Fatalf("first, last = %d, %d, want %d, %d", f, l, first, last)
	}
}

// wantStored checks that exactly the indexes in want (within lo..hi) are stored.
func wantStored(t *testing.T, r raft.LogStore, lo, hi uint64, want ...uint64) {
	t.Helper()
	in := map[uint64]bool{}
	for _, i := range want {
		in[i] = true
	}
	for i := lo; i <= hi; i++ {
		var l raft.Log
		err := r.GetLog(i, &l)
		switch {
		case in[i] && err != nil:
			t.Fatalf("GetLog(%d) = %v", i, err)
		case in[i] && l.Index != i:
			t.Fatalf("GetLog(%d) read index %d", i, l.Index)
		case !in[i] && err != raft.ErrLogNotFound: // raft compares with ==
			t.Fatalf("GetLog(%d) = %v, want raft.ErrLogNotFound", i, err)
		}
	}
}

func TestRaftStoreEmpty(t *testing.T) {
	s, _ := openTest(t)
	r := NewRaftStore(s)
	wantIndexes(t, r, 0, 0)
	wantStored(t, r, 0, 3)
	v, err := r.Get([]byte("CurrentTerm"))
	if err == nil || err.Error() != "not found" || !errors.Is(err, ErrNotFound) || v != nil {
		t.Fatalf("Get(missing) = %q, %v; raft needs the error text \"not found\"", v, err)
	}
	if n, err := r.GetUint64([]byte("CurrentTerm")); n != 0 || err != nil {
		t.Fatalf("GetUint64(missing) = %d, %v, want 0, nil", n, err)
	}
	if err := r.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
}

func TestRaftStoreLogs(t *testing.T) {
	s, _ := openTest(t)
	r := NewRaftStore(s)
	// Out of order and with gaps; Raft may leave a gap after a snapshot.
	if err := r.StoreLog(testLog(5, 2, "five")); err != nil {
		t.Fatal(err)
	}
	if err := r.StoreLogs([]*raft.Log{testLog(3, 1, "three"), testLog(1, 1, "one"), testLog(10, 3, "ten")}); err != nil {
		t.Fatal(err)
	}
	wantIndexes(t, r, 1, 10)
	wantStored(t, r, 0, 12, 1, 3, 5, 10)
	full := &raft.Log{Index: 7, Term: 4, Type: raft.LogConfiguration, Data: []byte{0, 1, 2},
		Extensions: []byte("ext"), AppendedAt: time.Now()}
	if err := r.StoreLog(full); err != nil {
		t.Fatal(err)
	}
	for _, want := range []*raft.Log{testLog(1, 1, "one"), testLog(5, 2, "five"), testLog(10, 3, "ten"), full} {
		var got raft.Log
		if err := r.GetLog(want.Index, &got); err != nil {
			t.Fatal(err)
		}
		if !sameLog(&got, want) {
			t.Errorf("GetLog(%d) = %+v, want %+v", want.Index, got, *want)
		}
	}
	// Overwrite (a follower replacing a conflicting entry).
	if err := r.StoreLog(testLog(10, 4, "ten again")); err != nil {
		t.Fatal(err)
	}
	var got raft.Log
	if err := r.GetLog(10, &got); err != nil || got.Term != 4 || string(got.Data) != "ten again" {
		t.Fatalf("overwritten log = %+v, %v", got, err)
	}
	// The extremes of the index space keep key order.
	if err := r.StoreLogs([]*raft.Log{testLog(0, 1, ""), testLog(math.MaxUint64, 9, "")}); err != nil {
		t.Fatal(err)
	}
	wantIndexes(t, r, 0, math.MaxUint64)
}

func TestRaftStoreDeleteRange(t *testing.T) {
	for _, tc := range []struct {
		name        string
		min, max    uint64
		first, last uint64
		left        []uint64
	}{
		{"compact head", 1, 4, 5, 10, []uint64{5, 6, 7, 8, 9, 10}},
		{"truncate tail", 7, 10, 1, 6, []uint64{1, 2, 3, 4, 5, 6}},
		{"middle", 4, 6, 1, 10, []uint64{1, 2, 3, 7, 8, 9, 10}},
		{"one", 10, 10, 1, 9, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"everything", 1, 10, 0, 0, nil},
		{"wider than stored", 0, math.MaxUint64, 0, 0, nil},
		{"tail past the end", 8, 1 << 40, 1, 7, []uint64{1, 2, 3, 4, 5, 6, 7}},
		{"none stored", 20, 30, 1, 10, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"min above max", 6, 5, 1, 10, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openTest(t)
			r := NewRaftStore(s)
			var logs []*raft.Log
			for i := uint64(1); i <= 10; i++ {
				logs = append(logs, testLog(i, 1, fmt.Sprint(i)))
			}
			if err := r.StoreLogs(logs); err != nil {
				t.Fatal(err)
			}
			if err := r.DeleteRange(tc.min, tc.max); err != nil {
				t.Fatal(err)
			}
			wantIndexes(t, r, tc.first, tc.last)
			wantStored(t, r, 0, 12, tc.left...)
		})
	}
}

func TestRaftStoreStable(t *testing.T) {
	s, _ := openTest(t)
	r := NewRaftStore(s)
	if err := r.Set([]byte("LastVoteCand"), []byte("node-1")); err != nil {
		t.Fatal(err)
	}
	if v, err := r.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-1" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if err := r.Set([]byte("empty"), nil); err != nil {
		t.Fatal(err)
	}
	if v, err := r.Get([]byte("empty")); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("Get(set to empty) = %#v, %v, want an empty non-nil value", v, err)
	}
	for _, n := range []uint64{0, 1, 42, math.MaxUint64} {
		if err := r.SetUint64([]byte("CurrentTerm"), n); err != nil {
			t.Fatal(err)
		}
		if got, err := r.GetUint64([]byte("CurrentTerm")); err != nil || got != n {
			t.Fatalf("GetUint64 = %d, %v, want %d", got, err, n)
		}
	}
	// Stable keys and log indexes live apart.
	if err := r.Set([]byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	wantIndexes(t, r, 0, 0)
	if _, err := r.GetUint64([]byte("LastVoteCand")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetUint64 of a 6-byte value = %v, want ErrCorrupt", err)
	}
	if _, err := r.Get([]byte("missing")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get(missing) = %v", err)
	}
}

func TestRaftStoreRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	r := NewRaftStore(s)
	var logs []*raft.Log
	for i := uint64(1); i <= 100; i++ {
		logs = append(logs, testLog(i, 1+i/10, fmt.Sprint("entry ", i)))
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.StoreLogs(logs))
	must(r.DeleteRange(1, 20))
	must(r.DeleteRange(91, 100))
	must(r.SetUint64([]byte("CurrentTerm"), 7))
	must(r.Set([]byte("LastVoteCand"), []byte("node-2")))
	must(s.Close())

	s, err = Open(DefaultOptions(dir))
	must(err)
	defer s.Close()
	r = NewRaftStore(s)
	wantIndexes(t, r, 21, 90)
	for _, want := range logs[20:90] {
		var got raft.Log
		must(r.GetLog(want.Index, &got))
		if !sameLog(&got, want) {
			t.Fatalf("after restart GetLog(%d) = %+v, want %+v", want.Index, got, *want)
		}
	}
	if n, err := r.GetUint64([]byte("CurrentTerm")); n != 7 || err != nil {
		t.Fatalf("CurrentTerm = %d, %v", n, err)
	}
	if v, err := r.Get([]byte("LastVoteCand")); string(v) != "node-2" || err != nil {
		t.Fatalf("LastVoteCand = %q, %v", v, err)
	}
}

// TestRaftStoreLargeBatch stores more than one Badger transaction holds, and
// deletes more than one DeleteRange round.
func TestRaftStoreLargeBatch(t *testing.T) {
	s, _ := openTest(t)
	r := NewRaftStore(s)
	const n = 20_000
	logs := make([]*raft.Log, n)
	for i := range logs {
		data := bytes.Repeat([]byte{byte(i)}, 1024)
		logs[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data}
	}
	if err := r.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	wantIndexes(t, r, 1, n)
	for _, i := range []int{0, 1, n / 3, n / 2, n - 1} {
		var got raft.Log
		if err := r.GetLog(uint64(i+1), &got); err != nil || !sameLog(&got, logs[i]) {
			t.Fatalf("GetLog(%d) = %v", i+1, err)
		}
	}
	if err := r.DeleteRange(1, n-1); err != nil {
		t.Fatal(err)
	}
	wantIndexes(t, r, n, n)
}

func TestRaftLogEncoding(t *testing.T) {
	for _, l := range []*raft.Log{
		{},
		{Index: 1, Term: 1, Type: raft.LogNoop},
		{Index: math.MaxUint64, Term: math.MaxUint64, Type: raft.LogType(255), Data: []byte("d"), Extensions: []byte("e"),
			AppendedAt: time.Unix(0, 0)},
		{Index: 3, Term: 2, Type: raft.LogConfiguration, Data: bytes.Repeat([]byte{7}, 300), AppendedAt: time.Unix(-5, 3)},
	} {
		b := encodeRaftLog(l)
		var got raft.Log
		if err := decodeRaftLog(b, &got); err != nil || !sameLog(&got, l) {
			t.Fatalf("round trip of %+v = %+v, %v", *l, got, err)
		}
		if got.AppendedAt.IsZero() != l.AppendedAt.IsZero() {
			t.Fatalf("AppendedAt %v decoded as %v", l.AppendedAt, got.AppendedAt)
		}
		// Every truncation and any trailing byte is corrupt.
		for i := range b {
			if err := decodeRaftLog(b[:i], &got); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode of %d of %d bytes = %v, want ErrCorrupt", i, len(b), err)
			}
		}
		if err := decodeRaftLog(append(bytes.Clone(b), 0), &got); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("trailing byte: %v", err)
		}
		bad := bytes.Clone(b)
		bad[0] = raftLogVersion + 1
		if err := decodeRaftLog(bad, &got); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("unknown version: %v", err)
		}
	}
}

func TestRaftStoreCorruptLog(t *testing.T) {
	s, _ := openTest(t)
	r := NewRaftStore(s)
	put := func(index uint64, v []byte) {
		t.Helper()
		if err := s.update(func(txn *badger.Txn) error { return txn.Set(raftLogKey(index), v) }); err != nil {
			t.Fatal(err)
		}
	}
	put(1, []byte{raftLogVersion, 1, 1})          // truncated
	put(2, encodeRaftLog(testLog(3, 1, "moved"))) // under the wrong index
	for _, i := range []uint64{1, 2} {
		var l raft.Log
		if err := r.GetLog(i, &l); !errors.Is(err, ErrCorrupt) {
			t.Errorf("GetLog(%d) = %v, want ErrCorrupt", i, err)
		}
	}
}

func TestRaftStoreClosed(t *testing.T) {
	s, _ := openTest(t)
	r := NewRaftStore(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	_, err1 := r.FirstIndex()
	_, err2 := r.LastIndex()
	_, err3 := r.Get([]byte("k"))
	_, err4 := r.GetUint64([]byte("k"))
	for i, err := range []error{err1, err2, r.GetLog(1, &l), r.StoreLog(testLog(1, 1, "")),
		r.StoreLogs([]*raft.Log{testLog(1, 1, "")}), r.DeleteRange(1, 2), r.Set([]byte("k"), nil),
		err3, r.SetUint64([]byte("k"), 1), err4} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("call %d on a closed store = %v, want ErrClosed", i, err)
		}
	}
}

// TestRaftStoreMatchesInmem drives raft's own InmemStore and a RaftStore
// through the same random history, shaped as Raft shapes it (appends,
// conflict truncation of the tail, compaction of the head, term and vote
// writes), and compares every answer.
func TestRaftStoreMatchesInmem(t *testing.T) {
	s, _ := openTest(t)
	got := NewRaftStore(s)
	want := raft.NewInmemStore()
	rng := rand.New(rand.NewPCG(6, 6))
	var first, last, next, term uint64 = 0, 0, 1, 1
	type store interface {
		raft.LogStore
		raft.StableStore
	}
	both := func(f func(st store) error) {
		t.Helper()
		if err1, err2 := f(want), f(got); err1 != nil || err2 != nil {
			t.Fatalf("inmem: %v, badger: %v", err1, err2)
		}
	}
	keys := [][]byte{[]byte("CurrentTerm"), []byte("LastVoteTerm"), []byte("LastVoteCand")}
	for step := range 400 {
		switch op := rng.IntN(10); {
		case op < 5 || last == 0: // append a run
			k := 1 + rng.IntN(20)
			var logs []*raft.Log
			for range k {
				l := testLog(next, term, fmt.Sprint("cmd ", step, " ", next))
				if rng.IntN(4) == 0 {
					l.Extensions = []byte{byte(step)}
				}
				logs = append(logs, l)
				next++
			}
			both(func(st store) error { return st.StoreLogs(logs) })
			if first == 0 {
				first = logs[0].Index
			}
			last = next - 1
		case op < 7: // a new leader's entries conflict with our tail
			i := first + rng.Uint64N(last-first+1)
			both(func(st store) error { return st.DeleteRange(i, last) })
			term++
			next, last = i, i-1
			if last < first {
				first, last = 0, 0
			}
		case op < 9: // compaction after a snapshot
			i := first + rng.Uint64N(last-first+1)
			both(func(st store) error { return st.DeleteRange(first, i) })
			first = i + 1
			if first > last {
				first, last = 0, 0
			}
		default: // term and vote
			term++
			both(func(st store) error { return st.SetUint64(keys[0], term) })
			both(func(st store) error { return st.SetUint64(keys[1], term) })
			both(func(st store) error { return st.Set(keys[2], []byte(fmt.Sprint("node-", step))) })
		}
		wantIndexes(t, want, first, last)
		wantIndexes(t, got, first, last)
		lo := uint64(1)
		if first > 2 {
			lo = first - 2
		}
		for i := lo; i <= next+2; i++ {
			var a, b raft.Log
			errA, errB := want.GetLog(i, &a), got.GetLog(i, &b)
			if errA != errB || (errA == nil && !sameLog(&a, &b)) {
				t.Fatalf("step %d GetLog(%d): inmem %+v, %v; badger %+v, %v", step, i, a, errA, b, errB)
			}
		}
		// InmemStore keeps Set and SetUint64 values apart, so each key is
		// read the way Raft writes it.
		never := []byte("never set")
		for _, k := range [][]byte{keys[2], never} {
			a, errA := want.Get(k)
			b, errB := got.Get(k)
			if !bytes.Equal(a, b) || fmt.Sprint(errA) != fmt.Sprint(errB) {
				t.Fatalf("step %d Get(%s): inmem %q, %v; badger %q, %v", step, k, a, errA, b, errB)
			}
		}
		for _, k := range [][]byte{keys[0], keys[1], never} {
			na, errA := want.GetUint64(k)
			nb, errB := got.GetUint64(k)
			if na != nb || errA != nil || errB != nil {
				t.Fatalf("step %d GetUint64(%s): inmem %d, %v; badger %d, %v", step, k, na, errA, nb, errB)
			}
		}
	}
}

// TestRaftStoreUnderRaft runs a one-voter hashicorp/raft on the store,
// restarts it on the same store, and checks that nothing committed is lost.
func TestRaftStoreUnderRaft(t *testing.T) {
	dir := t.TempDir()
	snaps := raft.NewInmemSnapshotStore()
	var fsm countFSM
	start := func() (*raft.Raft, *Store) {
		t.Helper()
		s, err := Open(DefaultOptions(dir))
		if err != nil {
			t.Fatal(err)
		}
		conf := raft.DefaultConfig()
		conf.LocalID = "n1"
		conf.LogOutput = io.Discard
		conf.HeartbeatTimeout, conf.ElectionTimeout = 50*time.Millisecond, 50*time.Millisecond
		conf.LeaderLeaseTimeout, conf.CommitTimeout = 50*time.Millisecond, 5*time.Millisecond
		conf.SnapshotThreshold = 40 // so the run compacts the log
		conf.TrailingLogs = 10
		conf.SnapshotInterval = 50 * time.Millisecond
		rs := NewRaftStore(s)
		addr, trans := raft.NewInmemTransport("n1")
		if ok, err := raft.HasExistingState(rs, rs, snaps); err != nil {
			t.Fatal(err)
		} else if !ok {
			cfg := raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: addr}}}
			if err := raft.BootstrapCluster(conf, rs, rs, snaps, trans, cfg); err != nil {
				t.Fatal(err)
			}
		}
		r, err := raft.NewRaft(conf, &fsm, rs, rs, snaps, trans)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for r.State() != raft.Leader {
			if time.Now().After(deadline) {
				t.Fatal("no leader after 5s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		return r, s
	}
	stop := func(r *raft.Raft, s *Store) {
		t.Helper()
		if err := r.Shutdown().Error(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	r, s := start()
	for i := range 100 {
		if err := r.Apply([]byte{byte(i)}, time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	stop(r, s)

	fsm.reset()
	r, s = start()
	defer stop(r, s)
	if err := r.Barrier(time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply([]byte{100}, time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if n := fsm.count(); n != 101 {
		t.Fatalf("FSM after restart applied %d commands, want 101", n)
	}
	rs := NewRaftStore(s)
	first, _ := rs.FirstIndex()
	if first <= 1 {
		t.Errorf("first index %d: the log was never compacted", first)
	}
}

// countFSM counts applied commands; its snapshot is the count.
type countFSM struct {
	mu sync.Mutex
	n  uint64
}

func (f *countFSM) Apply(*raft.Log) any { f.mu.Lock(); f.n++; f.mu.Unlock(); return nil }
func (f *countFSM) count() uint64       { f.mu.Lock(); defer f.mu.Unlock(); return f.n }
func (f *countFSM) reset()              { f.mu.Lock(); f.n = 0; f.mu.Unlock() }

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return countSnap(f.count()), nil }

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var n uint64
	if err := binary.Read(rc, binary.BigEndian, &n); err != nil {
		return err
	}
	f.mu.Lock()
	f.n = n
	f.mu.Unlock()
	return nil
}

type countSnap uint64

func (c countSnap) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(binary.BigEndian.AppendUint64(nil, uint64(c))); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countSnap) Release() {}

func TestRaftStoreConcurrent(t *testing.T) {
	s, _ := openTest(t)
	r := NewRaftStore(s)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				idx := uint64(w*1000 + i + 1)
				if err := r.StoreLog(testLog(idx, 1, "x")); err != nil {
					t.Error(err)
					return
				}
				var l raft.Log
				if err := r.GetLog(idx, &l); err != nil {
					t.Error(err)
					return
				}
				if _, err := r.LastIndex(); err != nil {
					t.Error(err)
					return
				}
				if err := r.SetUint64([]byte("CurrentTerm"), idx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	wantIndexes(t, r, 1, 3050)
}

func FuzzDecodeRaftLog(f *testing.F) {
	f.Add(encodeRaftLog(testLog(1, 1, "seed")))
	f.Add(encodeRaftLog(&raft.Log{}))
	f.Add([]byte{raftLogVersion, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeRaftLog(b, &l); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		var again raft.Log
		if err := decodeRaftLog(encodeRaftLog(&l), &again); err != nil || !sameLog(&l, &again) {
			t.Fatalf("re-encoding %+v gave %+v, %v", l, again, err)
		}
	})
}

// BenchmarkStoreLogs appends batches of 64 entries of 512 bytes to a
// durable store: what Raft does per replication round under load.
func BenchmarkStoreLogs(b *testing.B) {
	s, _ := openTest(b)
	r := NewRaftStore(s)
	const batch = 64
	data := bytes.Repeat([]byte{'x'}, 512)
	logs := make([]*raft.Log, batch)
	next := uint64(1)
	for b.Loop() {
		for i := range logs {
			logs[i] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
			next++
		}
		if err := r.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(next-1)/b.Elapsed().Seconds(), "logs/s")
}
