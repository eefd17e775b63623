// Package version holds the build version, set with
// -ldflags "-X github.com/crivm/crivm/internal/version.Version=...".
package version

// Version is crivm's version.
var Version = "0.1.0-dev"
