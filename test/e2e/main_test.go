// Package e2e drives the real crivm daemon through k8s.io/cri-client, the
// kubelet's own CRI client. Each test reads as numbered steps.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/crivm/crivm/test/framework"
)

func TestMain(m *testing.M) {
	if _, err := framework.BinDir(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
