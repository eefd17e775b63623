package netns

import (
	"context"
	"sync"
)

// keyedMutex is a set of mutexes, one per key, created on demand and freed
// when nobody holds or waits for them. The zero value is ready to use.
type keyedMutex struct {
	mu sync.Mutex          // guards m and every entry's waiters
	m  map[string]*keyLock // keys with a holder or a waiter
}

type keyLock struct {
	sem     chan struct{} // holds one token while the key is locked
	waiters int           // holders plus goroutines waiting in lock
}

// lock takes the mutex for key, waiting until it is free or ctx is done. The
// returned function releases it and must be called exactly once.
func (k *keyedMutex) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*keyLock)
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{sem: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.waiters++
	k.mu.Unlock()

	select {
	case l.sem <- struct{}{}:
		return func() {
			<-l.sem
			k.release(key, l)
		}, nil
	case <-ctx.Done():
		k.release(key, l)
		return nil, ctx.Err()
	}
}

// release drops one reference to l and forgets key when it was the last.
func (k *keyedMutex) release(key string, l *keyLock) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l.waiters--
	if l.waiters == 0 {
		delete(k.m, key)
	}
}
