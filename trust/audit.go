package trust

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// AuditLog appends one JSON line per trust decision. A nil *AuditLog, or one
// opened with an empty path, records nothing.
type AuditLog struct {
	mu sync.Mutex
	f  *os.File
}

// Audit events other than trust decisions (whose lines have no event).
const (
	EventMountRefused  = "mount_refused"
	EventDeviceRefused = "device_refused"
)

// auditLine is the audit log's line format.
type auditLine struct {
	Time             string   `json:"time"`
	Event            string   `json:"event,omitempty"`
	PodUID           string   `json:"pod_uid"`
	Namespace        string   `json:"namespace"`
	Name             string   `json:"name"`
	HandlerRequested string   `json:"runtime_handler_requested"`
	Images           []string `json:"images,omitempty"`
	Handler          string   `json:"handler"`
	Trusted          bool     `json:"trusted"`
	Rule             string   `json:"rule,omitempty"`
	Reasons          []string `json:"reasons"`
	Refused          string   `json:"refused,omitempty"`
	// Mount and device refusals: the container, the CRI host_path, what it
	// resolved to and the mount policy's rule that refused it.
	Container string `json:"container,omitempty"`
	HostPath  string `json:"host_path,omitempty"`
	Resolved  string `json:"resolved,omitempty"`
	MountRule string `json:"mount_rule,omitempty"`
}

// NewAuditLog opens path for appending, creating its directory (0750) and
// the file (0640) when missing.
func NewAuditLog(path string) (*AuditLog, error) {
	if path == "" {
		return &AuditLog{}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("creating audit log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening audit log: %w", err)
	}
	return &AuditLog{f: f}, nil
}

// Record writes the decision for in: v, refused when err is not nil.
func (a *AuditLog) Record(_ context.Context, in PodInput, v Verdict, err error) error {
	if a == nil {
		return nil
	}
	return a.write(auditLineFor(in, v, err))
}

// RecordMount writes the mount policy's refusal d of a hostPath mount or
// device of container, in the pod in whose sandbox verdict is v: one line
// of event mount_refused or device_refused.
func (a *AuditLog) RecordMount(_ context.Context, in PodInput, v Verdict, container string, d MountDecision) error {
	if a == nil || d.Err == nil {
		return nil
	}
	l := auditLineFor(in, v, d.Err)
	l.Event = EventMountRefused
	if d.Device {
		l.Event = EventDeviceRefused
	}
	l.Container, l.HostPath, l.Resolved, l.MountRule = container, d.HostPath, d.Resolved, d.Rule
	return a.write(l)
}

func auditLineFor(in PodInput, v Verdict, err error) auditLine {
	l := auditLine{
		Time:             time.Now().UTC().Format(time.RFC3339Nano),
		PodUID:           in.UID,
		Namespace:        in.Namespace,
		Name:             in.Name,
		HandlerRequested: in.RuntimeHandler,
		Images:           in.Images,
		Handler:          v.Handler,
		Trusted:          v.Trusted,
		Rule:             v.Rule,
		Reasons:          v.Reasons,
	}
	if l.Reasons == nil {
		l.Reasons = []string{}
	}
	if err != nil {
		l.Refused = err.Error()
	}
	return l
}

func (a *AuditLog) write(l auditLine) error {
	b, merr := json.Marshal(l)
	if merr != nil {
		return fmt.Errorf("encoding audit line: %w", merr)
	}
	b = append(b, '\n')
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	if _, werr := a.f.Write(b); werr != nil {
		return fmt.Errorf("writing audit log: %w", werr)
	}
	return nil
}

// Close closes the file; later Records write nothing.
func (a *AuditLog) Close() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}
