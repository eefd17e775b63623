package server

import "sync"

// keyedMutex hands out one mutex per key and forgets it when unused.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry // guarded by mu
}

type keyedEntry struct {
	sync.Mutex
	refs int // guarded by keyedMutex.mu
}

// lock locks key and returns its unlock.
func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.Lock()
	return func() {
		e.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
