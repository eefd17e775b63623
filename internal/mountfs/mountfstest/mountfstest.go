// Package mountfstest gives tests a directory of their own on a private
// mount, for what they mount below it.
package mountfstest

import (
	"testing"

	"github.com/crivm/crivm/internal/mountfs"
	"github.com/crivm/crivm/test/testutil"
)

// PrivateDir (root only: the test skips otherwise) is a temporary
// directory made a private mount, so nothing mounted below it propagates;
// when the test ends everything below it is unmounted, and a failure to
// is the test's.
func PrivateDir(t *testing.T) string {
	t.Helper()
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	if err := mountfs.MakePrivateMount(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mountfs.UnmountAll(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}
