//go:build crivm_guestroot

package main

// guestExec is on in test builds (-tags crivm_guestroot), whose tests act
// as guest root to attack the VM boundary from inside.
const guestExec = true
