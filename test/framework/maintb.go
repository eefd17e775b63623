package framework

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// MainTB lets benchmark commands (package main) use the harness helpers that
// take a testing.TB. Fatal errors print and exit; cleanups run at Close.
type MainTB struct {
	testing.TB // nil: calling a method not overridden below panics
	mu         sync.Mutex
	cleanups   []func()
	dirs       []string
}

// NewMainTB returns a MainTB; call Close before exiting.
func NewMainTB() *MainTB { return &MainTB{} }

func (m *MainTB) Helper()                 {}
func (m *MainTB) Name() string            { return "bench" }
func (m *MainTB) Failed() bool            { return false }
func (m *MainTB) Logf(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
func (m *MainTB) Skipf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "skipped: "+f+"\n", a...)
	m.Close()
	os.Exit(0)
}
func (m *MainTB) Fatalf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, f+"\n", a...)
	m.Close()
	os.Exit(1)
}
func (m *MainTB) Fatal(a ...any)            { m.Fatalf("%s", fmt.Sprint(a...)) }
func (m *MainTB) Errorf(f string, a ...any) { m.Fatalf(f, a...) }
func (m *MainTB) Cleanup(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cleanups = append(m.cleanups, f)
}
func (m *MainTB) TempDir() string {
	d, err := os.MkdirTemp("", "crivm-bench-")
	if err != nil {
		m.Fatal(err)
	}
	m.mu.Lock()
	m.dirs = append(m.dirs, d)
	m.mu.Unlock()
	return d
}

// Close runs the cleanups, newest first, and removes temp dirs.
func (m *MainTB) Close() {
	m.mu.Lock()
	cs, ds := m.cleanups, m.dirs
	m.cleanups, m.dirs = nil, nil
	m.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
	for _, d := range ds {
		os.RemoveAll(d)
	}
}
