// Command crivm-agent is the in-guest agent: PID 1 of the guest initrd of a
// vm-handler pod. The agent's API, transports and container lifecycle land
// with the vm handler (issue 6); until then this binary only reports its
// version and refuses to run, so nothing mistakes it for a working agent.
package main

import (
	"fmt"
	"os"

	"github.com/crivm/crivm/internal/version"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		fmt.Printf("crivm-agent version %s\n", version.Version)
		return
	}
	fmt.Fprintln(os.Stderr, "crivm-agent: the guest agent is not implemented yet (it lands with the vm handler)")
	os.Exit(1)
}
