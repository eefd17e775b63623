package handlers

import (
	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/errdefs"
)

// Entry is one configured handler: its name, its runtime_type and the
// implementation, or why there is none.
type Entry struct {
	Name string
	Type string // configs.RuntimeTypeOCI or configs.RuntimeTypeVM
	Handler
	// Unavailable explains a nil Handler.
	Unavailable error
}

// Registry maps configured handler names to implementations. It is built
// once at start-up and read-only afterwards.
type Registry map[string]*Entry

// Get returns the entry for a configured handler name (aliases are resolved
// by the trust classifier before this). A handler without an implementation
// is FailedPrecondition; a vm handler is never replaced by another.
func (r Registry) Get(name string) (*Entry, error) {
	e, ok := r[name]
	if !ok {
		return nil, errdefs.InvalidArgument("handler %q is not configured", name)
	}
	if e.Handler == nil {
		if e.Type == configs.RuntimeTypeVM {
			return nil, errdefs.FailedPrecondition("no vm handler available for handler %q: %w; a pod routed to a VM is never run outside one", name, e.Unavailable)
		}
		return nil, errdefs.FailedPrecondition("handler %q is not available: %w", name, e.Unavailable)
	}
	return e, nil
}
