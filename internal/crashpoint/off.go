//go:build !crivm_crashpoints

package crashpoint

// After does nothing outside test builds.
func After(string) {}

// OnDrop does nothing outside test builds.
func OnDrop(func()) {}
