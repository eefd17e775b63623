package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/crivm/crivm/internal/errdefs"
)

// Store holds the sandbox and container tables. Every write is one bbolt
// transaction (fsync'd), so a crash leaves either the old or the new record.
type Store struct {
	db         *bolt.DB
	Sandboxes  *Table[Sandbox]
	Containers *Table[Container]
	// PendingSandboxes are intents: a RunPodSandbox records its sandbox
	// here before its first side effect and deletes it once the sandbox
	// is in Sandboxes (or undone). What a crash leaves here, the next
	// daemon sweeps. Nothing CRI-facing reads it.
	PendingSandboxes *Table[Sandbox]
	// PendingContainers are CreateContainer's intents, as
	// PendingSandboxes are RunPodSandbox's.
	PendingContainers *Table[Container]
}

// Open opens (creating if needed) the store in dir and loads every record.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating store dir: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", filepath.Join(dir, "state.db"), err)
	}
	s := &Store{
		db: db,
		Sandboxes: &Table[Sandbox]{db: db, bucket: []byte("sandboxes"), kind: "sandbox",
			id: func(r *Sandbox) string { return r.ID }, name: func(r *Sandbox) string { return r.Name },
			clone: (*Sandbox).clone},
		Containers: &Table[Container]{db: db, bucket: []byte("containers"), kind: "container",
			id: func(r *Container) string { return r.ID }, name: func(r *Container) string { return r.Name },
			clone: (*Container).clone},
		PendingSandboxes: &Table[Sandbox]{db: db, bucket: []byte("sandbox-intents"), kind: "sandbox intent",
			id: func(r *Sandbox) string { return r.ID }, name: func(r *Sandbox) string { return r.Name },
			clone: (*Sandbox).clone},
		PendingContainers: &Table[Container]{db: db, bucket: []byte("container-intents"), kind: "container intent",
			id: func(r *Container) string { return r.ID }, name: func(r *Container) string { return r.Name },
			clone: (*Container).clone},
	}
	for _, load := range []func() error{s.Sandboxes.load, s.Containers.load, s.PendingSandboxes.load, s.PendingContainers.load} {
		if err := load(); err != nil {
			db.Close()
			return nil, err
		}
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Table is one kind of record, cached in memory and persisted in a bucket.
// Callers get and give copies; a record is never shared with the cache.
type Table[T any] struct {
	db     *bolt.DB
	bucket []byte
	kind   string
	id     func(*T) string
	name   func(*T) string
	clone  func(*T) *T

	// mu guards recs. Writers hold it across the bbolt write, so the cache
	// never differs from disk outside of mu.
	mu    sync.RWMutex
	recs  map[string]*T
	names *names
}

func (t *Table[T]) load() error {
	t.recs = map[string]*T{}
	t.names = newNames()
	return t.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(t.bucket)
		if err != nil {
			return fmt.Errorf("creating bucket %s: %w", t.bucket, err)
		}
		return b.ForEach(func(k, v []byte) error {
			r := new(T)
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("decoding %s %s: %w", t.kind, k, err)
			}
			t.recs[string(k)] = r
			return t.names.reserve(t.name(r), string(k))
		})
	})
}

// Reserve gives name to id before the record exists, so that two concurrent
// creates of the same name cannot both proceed.
func (t *Table[T]) Reserve(name, id string) error { return t.names.reserve(name, id) }

// Release frees a reservation made by Reserve for a record never added.
func (t *Table[T]) Release(name, id string) { t.names.release(name, id) }

// Add persists a new record. Its name must be free or reserved by its id.
func (t *Table[T]) Add(r *T) error {
	id := t.id(r)
	if err := t.names.reserve(t.name(r), id); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.recs[id]; ok {
		return errdefs.AlreadyExists("%s %s already exists", t.kind, id)
	}
	if err := t.put(r); err != nil {
		t.names.release(t.name(r), id)
		return err
	}
	t.recs[id] = t.clone(r)
	return nil
}

// Update applies fn to a copy of the record with id and persists the result.
// fn runs with the table locked: keep it short and free of I/O.
func (t *Table[T]) Update(id string, fn func(*T) error) (*T, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur, ok := t.recs[id]
	if !ok {
		return nil, errdefs.NotFound("%s %s not found", t.kind, id)
	}
	r := t.clone(cur)
	if err := fn(r); err != nil {
		return nil, err
	}
	if err := t.put(r); err != nil {
		return nil, err
	}
	t.recs[id] = r
	return t.clone(r), nil
}

// Delete removes the record with id and frees its name. Deleting a missing
// record is not an error.
func (t *Table[T]) Delete(id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.recs[id]
	if !ok {
		return nil
	}
	if err := t.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(t.bucket).Delete([]byte(id)) }); err != nil {
		return fmt.Errorf("deleting %s %s: %w", t.kind, id, err)
	}
	delete(t.recs, id)
	t.names.release(t.name(r), id)
	return nil
}

// Get returns the record whose id is idOrPrefix or uniquely starts with it.
func (t *Table[T]) Get(idOrPrefix string) (*T, error) {
	if idOrPrefix == "" {
		return nil, errdefs.InvalidArgument("%s id is empty", t.kind)
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if r, ok := t.recs[idOrPrefix]; ok {
		return t.clone(r), nil
	}
	var found *T
	for id, r := range t.recs {
		if len(id) >= len(idOrPrefix) && id[:len(idOrPrefix)] == idOrPrefix {
			if found != nil {
				return nil, errdefs.InvalidArgument("%s id prefix %q is ambiguous", t.kind, idOrPrefix)
			}
			found = r
		}
	}
	if found == nil {
		return nil, errdefs.NotFound("%s %q not found", t.kind, idOrPrefix)
	}
	return t.clone(found), nil
}

// List returns copies of the records for which keep returns true (all when
// keep is nil), ordered by id.
func (t *Table[T]) List(keep func(*T) bool) []*T {
	t.mu.RLock()
	out := make([]*T, 0, len(t.recs))
	for _, r := range t.recs {
		if keep == nil || keep(r) {
			out = append(out, t.clone(r))
		}
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return t.id(out[i]) < t.id(out[j]) })
	return out
}

// put writes r; the caller holds mu.
func (t *Table[T]) put(r *T) error {
	v, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", t.kind, err)
	}
	err = t.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(t.bucket).Put([]byte(t.id(r)), v) })
	if err != nil {
		return fmt.Errorf("persisting %s %s: %w", t.kind, t.id(r), err)
	}
	return nil
}

// ErrNotFound reports whether err is a missing-record error.
func ErrNotFound(err error) bool { return errors.Is(err, errdefs.ErrNotFound) }
