package envlist

import (
	"slices"
	"testing"
)

func TestSet(t *testing.T) {
	tests := []struct {
		env  []string
		kv   string
		want []string
	}{
		{nil, "TERM=xterm", []string{"TERM=xterm"}},
		{[]string{"A=1", "TERM=dumb", "B=2", "TERM=vt100"}, "TERM=xterm", []string{"A=1", "B=2", "TERM=xterm"}},
		{[]string{"TERMINAL=x"}, "TERM=xterm", []string{"TERMINAL=x", "TERM=xterm"}},
	}
	for _, tt := range tests {
		in := slices.Clone(tt.env)
		if got := Set(tt.env, tt.kv); !slices.Equal(got, tt.want) {
			t.Errorf("Set(%q, %q) = %q, want %q", tt.env, tt.kv, got, tt.want)
		}
		if !slices.Equal(in, tt.env) {
			t.Errorf("Set modified its input: %q", tt.env)
		}
	}
}
