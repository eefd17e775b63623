// Package crashpoint lets a test build of the daemon die at a named step,
// the way a power cut or an OOM kill would end it: the e2e crash tests
// build crivm with the crivm_crashpoints tag and set EnvVar to the name of
// a step (internal/steps); right after that step succeeds the process
// SIGKILLs itself. In a normal build After does nothing and the variable
// is never read.
package crashpoint

// EnvVar names the step after which a crivm_crashpoints build dies.
const EnvVar = "CRIVM_CRASH_AFTER"

// Marker is written to stderr (the daemon log) just before the kill.
const Marker = "crashpoint: killing the daemon after step"

// DropSignal makes a test build call the OnDrop hooks: the reconnect
// tests use it to break every agent connection without a restart.
const DropSignal = "SIGUSR2"
