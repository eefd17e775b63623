//go:build !crivm_guestroot

package main

// guestExec is off in release builds: the agent runs commands only inside
// containers.
const guestExec = false
