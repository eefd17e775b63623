// Package steps runs a sequence of named steps and, when one fails, undoes
// the ones before it in reverse order. The daemon's start-up uses it, and so do
// sandbox and VM boots: every resource a step creates is released by the
// cleanup that step returns.
package steps

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/crivm/crivm/internal/crashpoint"
	"github.com/crivm/crivm/internal/log"
)

// Cleanup undoes one step. It must be safe to call after a partial failure
// of a later step; it is called at most once.
type Cleanup func(ctx context.Context) error

// Step is one named unit of work. Do returns the Cleanup for what it created
// (nil when it created nothing to undo).
type Step struct {
	Name string
	Do   func(ctx context.Context) (Cleanup, error)
	// Retain skips this step's cleanup when a later step's cleanup
	// failed: what it made (an intent record) is what lets a later sweep
	// finish releasing what that cleanup could not.
	Retain bool
}

// Undo holds the cleanups of the steps that have run, newest last.
type Undo struct {
	names    []string
	cleanups []Cleanup
	retain   []bool
}

// Run executes steps in order. On the first failure it runs the cleanups of
// the completed steps in reverse order and returns "NAME: err", joined with
// any cleanup errors. On success the caller owns the returned Undo and calls
// Undo.Run when the resources are to be released.
func Run(ctx context.Context, steps []Step) (*Undo, error) {
	u := &Undo{}
	for _, s := range steps {
		start := time.Now()
		c, err := s.Do(ctx)
		log.G(ctx).Debug("step", "step", s.Name, "took", time.Since(start), "ok", err == nil)
		if err != nil {
			err = fmt.Errorf("%s: %w", s.Name, err)
			if cerr := u.Run(context.WithoutCancel(ctx)); cerr != nil {
				return nil, errors.Join(err, cerr)
			}
			return nil, err
		}
		u.names = append(u.names, s.Name)
		u.cleanups = append(u.cleanups, c)
		u.retain = append(u.retain, s.Retain)
		crashpoint.After(s.Name)
	}
	return u, nil
}

// Run undoes the completed steps, newest first, and keeps going past errors.
func (u *Undo) Run(ctx context.Context) error {
	var errs []error
	for i := len(u.cleanups) - 1; i >= 0; i-- {
		if u.cleanups[i] == nil {
			continue
		}
		if u.retain[i] && len(errs) > 0 {
			log.G(ctx).Warn("kept for the next start's sweep: a later cleanup failed", "step", u.names[i])
			continue
		}
		if err := u.cleanups[i](ctx); err != nil {
			log.G(ctx).Warn("cleanup failed", "step", u.names[i], "err", err)
			errs = append(errs, fmt.Errorf("undoing %s: %w", u.names[i], err))
		}
	}
	u.names, u.cleanups, u.retain = nil, nil, nil
	return errors.Join(errs...)
}
