package vmm

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestTrimLog: a log over the limit keeps its end in NAME.1 and starts
// again empty, and its writer, which appends, writes on at the new end; a
// log under the limit, a missing one and a symlink are left alone.
func TestTrimLog(t *testing.T) {
	const max, keep = 100, 30
	content := func(n int) []byte { return bytes.Repeat([]byte("0123456789"), n/10) }
	tests := []struct {
		name     string
		size     int  // -1: no log
		symlink  bool // the log is a symlink to a big file
		wantSize int64
		wantOld  []byte // NAME.1; nil: none
		wantErr  bool
	}{
		{"missing", -1, false, -1, nil, false},
		{"under the limit", 90, false, 90, nil, false},
		{"at the limit", 100, false, 100, nil, false},
		{"over the limit", 250, false, 0, content(250)[220:], false},
		{"a symlink", 0, true, -1, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, ConsoleLogName)
			var w *os.File
			switch {
			case tt.symlink:
				big := filepath.Join(dir, "elsewhere")
				os.WriteFile(big, content(500), 0o600)
				os.Symlink(big, path)
			case tt.size >= 0:
				var err error
				if w, err = createLog(path); err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				w.Write(content(tt.size))
			}
			err := trimLog(path, max, keep)
			if (err != nil) != tt.wantErr {
				t.Fatalf("trimLog: %v, want error %v", err, tt.wantErr)
			}
			if st, err := os.Lstat(path); tt.wantSize >= 0 && (err != nil || st.Size() != tt.wantSize) {
				t.Errorf("log after the trim: %v, %v; want %d bytes", st, err, tt.wantSize)
			}
			old, err := os.ReadFile(path + ".1")
			if tt.wantOld == nil && err == nil {
				t.Errorf("%s.1 made: %q", ConsoleLogName, old)
			}
			if tt.wantOld != nil && !bytes.Equal(old, tt.wantOld) {
				t.Errorf("%s.1 = %q, %v; want %q", ConsoleLogName, old, err, tt.wantOld)
			}
			if tt.symlink {
				if b, _ := os.ReadFile(filepath.Join(dir, "elsewhere")); len(b) != 500 {
					t.Errorf("the symlink's target was touched: %d bytes", len(b))
				}
			}
			if w != nil {
				// The writer appends at the end, wherever that is now.
				w.Write([]byte("next"))
				if b, _ := os.ReadFile(path); !bytes.HasSuffix(b, []byte("next")) || int64(len(b)) != tt.wantSize+4 {
					t.Errorf("after a write: %q, want the %d bytes it had and the write", b, tt.wantSize)
				}
			}
		})
	}
}
