package attachment

import (
	"context"
	"fmt"
	"sync"
)

// keyedMutex hands out one lock per key. Entries are reference-counted and
// removed when the last holder or waiter leaves, so the map holds only keys
// in use and never grows with the number of volumes ever seen.
type keyedMutex struct {
	mu      sync.Mutex
	entries map[string]*lockEntry
}

type lockEntry struct {
	ch   chan struct{} // buffered(1): a token means "locked"
	refs int
}

func newKeyedMutex() *keyedMutex { return &keyedMutex{entries: map[string]*lockEntry{}} }

// lock blocks until key is free or ctx is done.
func (k *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	e := k.entries[key]
	if e == nil {
		e = &lockEntry{ch: make(chan struct{}, 1)}
		k.entries[key] = e
	}
	e.refs++
	k.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
	case <-ctx.Done():
		k.release(key, e)
		return nil, fmt.Errorf("waiting for the lock of volume %s: %w", key, ctx.Err())
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-e.ch
			k.release(key, e)
		})
	}, nil
}

func (k *keyedMutex) release(key string, e *lockEntry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(k.entries, key)
	}
}

// size is the number of keys currently locked or waited for.
func (k *keyedMutex) size() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.entries)
}
