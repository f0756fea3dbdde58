package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/smile-vplm/smile/api/smilepb"
)

var validID = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidID checks a vPLM id or tenant name: 1 to 64 characters of
// [a-z0-9._-], starting with a letter or digit (ErrBadID otherwise).
func ValidID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("%w: %q must be 1 to 64 of [a-z0-9._-], starting with a letter or digit", ErrBadID, id)
	}
	return nil
}

// Catalog is the table of vPLMs, tenants (with their usage), API keys and
// cluster nodes. Every change goes through a CatalogCommand, so that the
// same commands applied in the same order give the same catalog on every
// node: it is the state machine the Raft log replicates. ApplyEntries is
// the Raft FSM's entry point (deterministic, records the applied log
// position); Apply and ApplyBatch serve direct, single-node callers and
// additionally check that params blobs are stored locally and fill in zero
// times from the clock.
type Catalog struct {
	s *Store
}

// NewCatalog is the catalog kept in s.
func NewCatalog(s *Store) *Catalog { return &Catalog{s: s} }

// Apply applies one command in one transaction and returns the vPLM it made
// or changed (for a delete, the entry as it was; for PutTenant, nil).
//
//   - Create: ErrExists if the id is taken; ErrMissingBlob unless the params
//     blob is stored; the version is set to 1; created and updated times are
//     filled in only when zero.
//   - Delete: ErrNotFound; the params blob is handed to GC (a pending
//     marker) when no other vPLM uses it.
//   - NewVersion: ErrNotFound; ErrConflict unless version is the current one
//     plus one; ErrMissingBlob unless the new blob is stored.
//   - PutTenant: creates or replaces the tenant (quotas are checked at the
//     next create or new version; a lowered quota removes nothing).
//   - PutAPIKey: creates or replaces the key with that id (ErrBadID for a
//     bad id or tenant, ErrInvalid unless hash is 64 lowercase hex digits);
//     a zero created time is filled in.
//   - DeleteAPIKey: ErrNotFound.
//   - PutNode: creates or replaces the node (ErrBadID for a bad id,
//     ErrInvalid for an empty raft or API address).
//
// Create and NewVersion keep the tenant's usage (vPLMs, params bytes) and
// fail with ErrQuotaExceeded beyond the tenant's max_vplms or max_bytes;
// Delete gives usage back. Malformed commands fail with ErrInvalid,
// ErrBadID or ErrBadDigest.
func (c *Catalog) Apply(cmd *smilepb.CatalogCommand) (*smilepb.VPLM, error) {
	out, errs := c.ApplyBatch([]*smilepb.CatalogCommand{cmd})
	return out[0], errs[0]
}

// ApplyBatch applies cmds in order, each seeing the effects of those before
// it, and commits them together; results and errors are per command, as
// Apply's. A failed command changes nothing. A batch too big for one Badger
// transaction is committed in several, in order. Only a storage failure
// fails more than one command.
func (c *Catalog) ApplyBatch(cmds []*smilepb.CatalogCommand) ([]*smilepb.VPLM, []error) {
	out := make([]*smilepb.VPLM, len(cmds))
	errs := make([]error, len(cmds))
	c.s.mu.RLock()
	defer c.s.mu.RUnlock()
	if c.s.closed {
		for i := range errs {
			errs[i] = ErrClosed
		}
		return out, errs
	}
	c.s.applyMu.Lock()
	defer c.s.applyMu.Unlock()
	steps := make([]step, len(cmds))
	for i, cmd := range cmds {
		steps[i] = step{cmd: cmd, out: &out[i], err: &errs[i]}
	}
	c.applySteps(steps, applyOpts{local: true, now: c.s.now()})
	return out, errs
}

// applyOpts says how commands are applied. local (Apply, ApplyBatch) checks
// that params blobs are stored and fills zero times with now; without it
// (ApplyEntries) the outcome depends only on the catalog and the command.
type applyOpts struct {
	local bool
	now   time.Time
	// track writes the position of the last step of each transaction
	// under keyApplied, in that transaction.
	track bool
}

// A step is one command and where its result goes; a step without a
// command (an empty Raft entry) only moves the applied position.
type step struct {
	cmd *smilepb.CatalogCommand
	out **smilepb.VPLM
	err *error
	pos appliedPos
}

// applySteps applies steps in as few transactions as fit; a storage
// failure fails the step it happened at and every later one.
func (c *Catalog) applySteps(steps []step, o applyOpts) {
	for i := 0; i < len(steps); {
		n, err := c.applyChunk(steps[i:], o)
		if err != nil {
			for _, st := range steps[i:] {
				if st.out != nil {
					*st.out, *st.err = nil, fmt.Errorf("storage: catalog: %w", err)
				}
			}
			return
		}
		i += n
	}
}

// applyChunk applies as many of steps as fit in one transaction, commits,
// and says how many it applied. A commit that loses a race (with a blob
// write or GC) is redone from the start.
func (c *Catalog) applyChunk(steps []step, o applyOpts) (int, error) {
	limit := len(steps)
	for attempt := 0; attempt < conflictRetries; attempt++ {
		txn := c.s.db.NewTransaction(true)
		n, tooBig := 0, false
		for ; n < limit; n++ {
			st := steps[n]
			if st.out == nil {
				continue
			}
			p, err := plan(txn, st.cmd, o)
			if err != nil {
				*st.out, *st.err = nil, err
				continue
			}
			err = p.write(txn)
			for _, pb := range p.pend {
				if err == nil {
					err = txn.Set(pendingKey(pb.d), encodePending(c.s.now(), pb.size))
				}
			}
			if err != nil {
				txn.Discard()
				if errors.Is(err, badger.ErrTxnTooBig) && n > 0 {
					// Command n's writes are half in: redo the ones before it alone.
					limit, tooBig = n, true
					break
				}
				return 0, err
			}
			*st.out, *st.err = p.vplm, nil
		}
		if !tooBig && o.track && n > 0 {
			if err := txn.Set(keyApplied, steps[n-1].pos.encode()); err != nil {
				txn.Discard()
				if !errors.Is(err, badger.ErrTxnTooBig) || n == 1 {
					return 0, err
				}
				limit, tooBig = n-1, true
			}
		}
		if tooBig {
			attempt--
			continue
		}
		err := txn.Commit()
		if errors.Is(err, badger.ErrConflict) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return n, nil
	}
	return 0, fmt.Errorf("%d conflicting retries: %w", conflictRetries, badger.ErrConflict)
}

// A change is what one command writes, worked out before anything is
// written so that a failed command leaves no trace in a shared transaction.
type change struct {
	sets []kv
	dels [][]byte
	vplm *smilepb.VPLM
	// pend are blobs left without references: they get GC's pending
	// marker, dated by the applying node (node-local, outside the
	// replicated keyspace).
	pend []pendingBlob
}

type pendingBlob struct {
	d    Digest
	size uint64
}

type kv struct{ k, v []byte }

func (ch *change) set(k, v []byte) { ch.sets = append(ch.sets, kv{k, v}) }
func (ch *change) del(k []byte)    { ch.dels = append(ch.dels, k) }

func (ch *change) write(txn *badger.Txn) error {
	for _, e := range ch.sets {
		if err := txn.Set(e.k, e.v); err != nil {
			return err
		}
	}
	for _, k := range ch.dels {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func plan(txn *badger.Txn, cmd *smilepb.CatalogCommand, o applyOpts) (*change, error) {
	switch c := cmd.GetCmd().(type) {
	case *smilepb.CatalogCommand_Create:
		return planCreate(txn, c.Create.GetVplm(), o)
	case *smilepb.CatalogCommand_Delete:
		return planDelete(txn, c.Delete.GetId())
	case *smilepb.CatalogCommand_NewVersion:
		return planNewVersion(txn, c.NewVersion, o)
	case *smilepb.CatalogCommand_PutTenant:
		return planPutTenant(c.PutTenant.GetTenant())
	case *smilepb.CatalogCommand_PutApiKey:
		return planPutAPIKey(c.PutApiKey.GetKey(), o)
	case *smilepb.CatalogCommand_DeleteApiKey:
		return planDeleteAPIKey(txn, c.DeleteApiKey.GetId())
	case *smilepb.CatalogCommand_PutNode:
		return planPutNode(c.PutNode.GetNode())
	}
	return nil, fmt.Errorf("%w: no command", ErrInvalid)
}

func planCreate(txn *badger.Txn, v *smilepb.VPLM, o applyOpts) (*change, error) {
	if v == nil {
		return nil, fmt.Errorf("%w: create without a vPLM", ErrInvalid)
	}
	if err := ValidID(v.GetId()); err != nil {
		return nil, err
	}
	if err := ValidID(v.GetTenant()); err != nil {
		return nil, fmt.Errorf("tenant: %w", err)
	}
	if err := checkShape(v); err != nil {
		return nil, err
	}
	d, err := paramsDigest(txn, v.GetParamsDigest(), o.local)
	if err != nil {
		return nil, err
	}
	if ok, err := has(txn, key(prefixVPLM, v.GetId())); err != nil {
		return nil, err
	} else if ok {
		return nil, fmt.Errorf("%w: vPLM %q", ErrExists, v.GetId())
	}
	u, err := chargeUsage(txn, v.GetTenant(), 1, 0, v.GetParamsBytes())
	if err != nil {
		return nil, err
	}
	nv := proto.CloneOf(v)
	nv.Version = 1
	if nv.CreatedUnixMs == 0 && o.local {
		nv.CreatedUnixMs = o.now.UnixMilli()
	}
	if nv.UpdatedUnixMs == 0 {
		nv.UpdatedUnixMs = nv.CreatedUnixMs
	}
	ch := &change{vplm: nv}
	if err := putVPLM(ch, nv); err != nil {
		return nil, err
	}
	ch.set(key(prefixIndex, nv.Tenant, nv.Id), nil)
	putUsage(ch, nv.Tenant, u)
	if err := addRef(txn, ch, d, +1, 0); err != nil {
		return nil, err
	}
	return ch, nil
}

// checkShape rejects entries no head could serve.
func checkShape(v *smilepb.VPLM) error {
	if v.GetBackbone() == "" {
		return fmt.Errorf("%w: vPLM %q has no backbone", ErrInvalid, v.GetId())
	}
	switch v.GetTask() {
	case smilepb.Task_TASK_CLASSIFY:
		if len(v.GetLabels()) < 2 {
			return fmt.Errorf("%w: classify vPLM %q needs at least 2 labels", ErrInvalid, v.GetId())
		}
		seen := make(map[string]bool, len(v.GetLabels()))
		for _, l := range v.GetLabels() {
			if l == "" || seen[l] {
				return fmt.Errorf("%w: vPLM %q: label %q is empty or repeated", ErrInvalid, v.GetId(), l)
			}
			seen[l] = true
		}
	case smilepb.Task_TASK_EMBED:
		if len(v.GetLabels()) != 0 {
			return fmt.Errorf("%w: embed vPLM %q has labels", ErrInvalid, v.GetId())
		}
	default:
		return fmt.Errorf("%w: vPLM %q has task %v", ErrInvalid, v.GetId(), v.GetTask())
	}
	switch v.GetMode() {
	case "", ModeFull:
		if v.GetTable() != "" {
			return fmt.Errorf("%w: vPLM %q runs in full mode but names PLOT table %q", ErrInvalid, v.GetId(), v.GetTable())
		}
	case ModePlot:
		if v.GetTable() == "" {
			return fmt.Errorf("%w: plot-mode vPLM %q names no PLOT table", ErrInvalid, v.GetId())
		}
	default:
		return fmt.Errorf("%w: vPLM %q has mode %q: want %q or %q", ErrInvalid, v.GetId(), v.GetMode(), ModeFull, ModePlot)
	}
	switch v.GetPrecision() {
	case "", PrecisionFP16, PrecisionInt8:
	default:
		return fmt.Errorf("%w: vPLM %q has precision %q: want %q or %q", ErrInvalid, v.GetId(), v.GetPrecision(), PrecisionFP16, PrecisionInt8)
	}
	return nil
}

// A vPLM's precisions (VPLM.precision): how its params blob stores adapter
// tensors; an empty precision reads as fp16.
const (
	PrecisionFP16 = "fp16"
	PrecisionInt8 = "int8"
)

// A vPLM's modes (VPLM.mode): its lower layers run on the backbone (full;
// an empty mode reads as full) or come from a PLOT table (plot).
const (
	ModeFull = "full"
	ModePlot = "plot"
)

func planDelete(txn *badger.Txn, id string) (*change, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	old, err := getVPLM(txn, id)
	if err != nil {
		return nil, err
	}
	u, err := getUsage(txn, old.Tenant)
	if err != nil {
		return nil, err
	}
	u.Vplms = satSub(u.Vplms, 1)
	u.Bytes = satSub(u.Bytes, old.ParamsBytes)
	ch := &change{vplm: old}
	ch.del(key(prefixVPLM, id))
	ch.del(key(prefixIndex, old.Tenant, id))
	putUsage(ch, old.Tenant, u)
	if d, err := ParseDigest(old.ParamsDigest); err == nil {
		if err := addRef(txn, ch, d, -1, old.ParamsBytes); err != nil {
			return nil, err
		}
	}
	return ch, nil
}

func planNewVersion(txn *badger.Txn, nv *smilepb.NewVersion, o applyOpts) (*change, error) {
	if err := ValidID(nv.GetId()); err != nil {
		return nil, err
	}
	old, err := getVPLM(txn, nv.GetId())
	if err != nil {
		return nil, err
	}
	if nv.GetVersion() != old.Version+1 {
		return nil, fmt.Errorf("%w: vPLM %q is at version %d, new version must be %d, not %d",
			ErrConflict, old.Id, old.Version, old.Version+1, nv.GetVersion())
	}
	d, err := paramsDigest(txn, nv.GetParamsDigest(), o.local)
	if err != nil {
		return nil, err
	}
	u, err := chargeUsage(txn, old.Tenant, 0, old.ParamsBytes, nv.GetParamsBytes())
	if err != nil {
		return nil, err
	}
	v := proto.CloneOf(old)
	v.Version = nv.GetVersion()
	v.ParamsDigest = string(d)
	v.ParamsBytes = nv.GetParamsBytes()
	v.UpdatedUnixMs = nv.GetUpdatedUnixMs()
	if v.UpdatedUnixMs == 0 && o.local {
		v.UpdatedUnixMs = o.now.UnixMilli()
	}
	ch := &change{vplm: v}
	if err := putVPLM(ch, v); err != nil {
		return nil, err
	}
	putUsage(ch, old.Tenant, u)
	if string(d) != old.ParamsDigest {
		if err := addRef(txn, ch, d, +1, 0); err != nil {
			return nil, err
		}
		if od, err := ParseDigest(old.ParamsDigest); err == nil {
			if err := addRef(txn, ch, od, -1, old.ParamsBytes); err != nil {
				return nil, err
			}
		}
	}
	return ch, nil
}

func planPutTenant(t *smilepb.Tenant) (*change, error) {
	if t == nil {
		return nil, fmt.Errorf("%w: put tenant without a tenant", ErrInvalid)
	}
	if err := ValidID(t.GetName()); err != nil {
		return nil, fmt.Errorf("tenant: %w", err)
	}
	for _, f := range []float64{t.GetWeight(), t.GetRatePerS()} {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return nil, fmt.Errorf("%w: tenant %q: weight and rate must be finite and >= 0", ErrInvalid, t.GetName())
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("%w: tenant %q: %w", ErrInvalid, t.GetName(), err)
	}
	ch := &change{}
	ch.set(key(prefixTenant, t.GetName()), b)
	return ch, nil
}

// paramsDigest checks that a command's params blob is named well and, with
// local, stored.
func paramsDigest(txn *badger.Txn, s string, local bool) (Digest, error) {
	if s == "" {
		return "", fmt.Errorf("%w: no params digest", ErrMissingBlob)
	}
	d, err := ParseDigest(s)
	if err != nil || !local {
		return d, err
	}
	ok, err := has(txn, blobKey(d))
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: params blob %s", ErrMissingBlob, d)
	}
	return d, nil
}

// addRef plans a change of blob d's reference count by delta; a count that
// reaches zero hands the blob to GC (a pending marker). Reads see earlier commands of the
// same transaction, not earlier refs of the same change, so a change
// touches each digest at most once.
func addRef(txn *badger.Txn, ch *change, d Digest, delta int64, size uint64) error {
	n, err := getCount(txn, refKey(d))
	if err != nil {
		return err
	}
	switch m := int64(n) + delta; {
	case m > 0:
		ch.set(refKey(d), binary.BigEndian.AppendUint64(nil, uint64(m)))
	default:
		// The blob is not deleted here but handed to GC (a pending marker,
		// node-local): a create of the same bytes may be on its way (a
		// vPLM deleted and created again with the same id has the same
		// initial params), its blob already replicated and this very
		// blob; deleting it now would commit that create without params.
		ch.del(refKey(d))
		ch.pend = append(ch.pend, pendingBlob{d, size})
	}
	return nil
}

func getCount(txn *badger.Txn, k []byte) (uint64, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: reference count %q is %d bytes", ErrCorrupt, k, len(v))
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, err
}

func putVPLM(ch *change, v *smilepb.VPLM) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: vPLM %q: %w", ErrInvalid, v.Id, err)
	}
	ch.set(key(prefixVPLM, v.Id), b)
	return nil
}

func getVPLM(txn *badger.Txn, id string) (*smilepb.VPLM, error) {
	item, err := txn.Get(key(prefixVPLM, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: vPLM %q", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	return decodeVPLM(item)
}

func decodeVPLM(item *badger.Item) (*smilepb.VPLM, error) {
	v := new(smilepb.VPLM)
	err := item.Value(func(b []byte) error { return proto.Unmarshal(b, v) })
	if err != nil {
		return nil, fmt.Errorf("%w: vPLM record %q: %w", ErrCorrupt, item.Key(), err)
	}
	return v, nil
}

// Get returns the vPLM with that id (ErrNotFound, ErrBadID).
func (c *Catalog) Get(id string) (*smilepb.VPLM, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	var v *smilepb.VPLM
	err := c.s.catView(func(txn *badger.Txn) (err error) {
		v, err = getVPLM(txn, id)
		return err
	})
	return v, err
}

// List returns up to limit vPLMs (all when limit <= 0) whose ids sort after
// after, in id order; tenant "" lists every tenant's. The next page starts
// after the last id returned.
func (c *Catalog) List(tenant, after string, limit int) ([]*smilepb.VPLM, error) {
	if tenant != "" {
		if err := ValidID(tenant); err != nil {
			return nil, fmt.Errorf("tenant: %w", err)
		}
	}
	var out []*smilepb.VPLM
	err := c.s.catView(func(txn *badger.Txn) error {
		prefix := prefixVPLM
		if tenant != "" {
			prefix = key(prefixIndex, tenant, "")
		}
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		opts.PrefetchValues = tenant == ""
		it := txn.NewIterator(opts)
		defer it.Close()
		start := append(append([]byte(nil), prefix...), after...)
		for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			id := string(item.Key()[len(prefix):])
			if id <= after {
				continue
			}
			var v *smilepb.VPLM
			var err error
			if tenant == "" {
				v, err = decodeVPLM(item)
			} else {
				v, err = getVPLM(txn, id)
			}
			if err != nil {
				return err
			}
			out = append(out, v)
			if limit > 0 && len(out) == limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// Count is the number of vPLMs in the catalog.
func (c *Catalog) Count() (int, error) {
	n := 0
	err := c.s.catView(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefixVPLM
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// Tenant returns the named tenant and whether it is in the catalog.
func (c *Catalog) Tenant(name string) (*smilepb.Tenant, bool, error) {
	if err := ValidID(name); err != nil {
		return nil, false, fmt.Errorf("tenant: %w", err)
	}
	var t *smilepb.Tenant
	err := c.s.catView(func(txn *badger.Txn) error {
		item, err := txn.Get(key(prefixTenant, name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		t, err = decodeTenant(item)
		return err
	})
	return t, t != nil, err
}

// Tenants returns every tenant, in name order.
func (c *Catalog) Tenants() ([]*smilepb.Tenant, error) {
	var out []*smilepb.Tenant
	err := c.s.catView(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefixTenant
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			t, err := decodeTenant(it.Item())
			if err != nil {
				return err
			}
			out = append(out, t)
		}
		return nil
	})
	return out, err
}

func decodeTenant(item *badger.Item) (*smilepb.Tenant, error) {
	t := new(smilepb.Tenant)
	if err := item.Value(func(b []byte) error { return proto.Unmarshal(b, t) }); err != nil {
		return nil, fmt.Errorf("%w: tenant record %q: %w", ErrCorrupt, item.Key(), err)
	}
	return t, nil
}
