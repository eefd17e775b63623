package bench

import (
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		header string
		want   string
	}{
		{"7f0000000000-7f0010000000 rw-p 00000000 00:00 0", "guest"},
		{"7f0000000000-7f0010000000 rw-p 00000000 00:01 1234 /memfd:crivm-template-ab (deleted)", "guest"},
		{"7f0000000000-7f0002000000 rwxp 00000000 00:00 0", "tcg"},
		{"55d000000000-55d000100000 r-xp 00000000 08:01 99 /usr/bin/qemu-system-x86_64", "code"},
		{"55d000000000-55d000100000 rw-p 00000000 00:00 0 [heap]", "other"},
	}
	for _, tt := range tests {
		var m MemoryParts
		p := classify(strings.Fields(tt.header), 256, &m)
		got := map[*int64]string{&m.GuestRAM: "guest", &m.TCGBuffer: "tcg", &m.Code: "code", &m.OtherAnon: "other"}[p]
		if got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.header, got, tt.want)
		}
	}
}
