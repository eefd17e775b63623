// Package envlist edits process environments in their exec form, a list of
// "KEY=value" strings.
package envlist

import "strings"

// Set returns env with kv ("KEY=value") replacing every KEY, or appended
// when there is none. env is not modified.
func Set(env []string, kv string) []string {
	key, _, _ := strings.Cut(kv, "=")
	out := make([]string, 0, len(env)+1)
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k != key {
			out = append(out, e)
		}
	}
	return append(out, kv)
}
