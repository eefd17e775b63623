// Package version holds crivm's version. Version is a semantic version:
// the kubelet parses the CRI's RuntimeVersion as one and shows a node's
// runtime as crivm://Unknown otherwise. Commit says which source a binary
// was built from; the Makefile sets it with
// -ldflags "-X github.com/crivm/crivm/internal/version.Commit=$(git describe --always --dirty)".
package version

// Version is crivm's release version, semver without a leading "v".
var Version = "0.1.0"

// Commit is the git description of the source built, "" when unknown.
var Commit = ""

// String is Version with the commit when known, for people:
// "0.1.0 (commit 607a1fe-dirty)".
func String() string {
	if Commit == "" {
		return Version
	}
	return Version + " (commit " + Commit + ")"
}
