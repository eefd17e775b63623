package launch

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"reflect"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	"github.com/crivm/crivm/internal/errdefs"
)

// syncSeeds are reports a container init writes on its sync pipe (one
// JSON value per line, as Init's json.Encoder writes them), and broken
// ones.
var syncSeeds = []string{
	"",
	`{"ready":true,"phases":[{"name":"config","ms":0.041},{"name":"rootfs","ms":3.2},{"name":"lookup","ms":0.08}]}` + "\n",
	`{"ready":true,"phases":[{"name":"config","ms":0.041}]}` + "\n" + `{"error":"exec /bin/sh: permission denied","class":"precondition"}` + "\n",
	`{"error":"the launch config has no spec or process","class":"precondition"}` + "\n",
	`{"error":"making the init non-dumpable: operation not permitted"}` + "\n",
	`{"error":"mounting proc: invalid argument","class":"invalid"}` + "\n",
	`{"ready":true,"error":"both"}` + "\n",
	`{"ready":false}` + "\n",
	"null\n",
	"{}\n",
	`{"ready":"yes"}`,
	`{"phases":[{"name":"x","ms":1e308}]}`,
	`{"ready":true}{"ready":true}`,
	`{"ready":tr`,
	"\xff\xfe",
	`[1,2,3]`,
}

// checkReport asserts that readSync's answer to one report agrees with the
// report: an error report is an error with the child's text (for valid
// UTF-8; JSON replaces the rest), classified by its class ("precondition",
// "invalid", as syncMsg documents them); any other report is a success only
// when it is the ready report awaited (the exec's success is EOF, not a
// report).
func checkReport(t *testing.T, msg syncMsg, wantReady bool, err error) {
	t.Helper()
	switch {
	case msg.Error != "":
		if err == nil {
			t.Fatalf("report %+v (want ready %v): no error", msg, wantReady)
		}
		if utf8.ValidString(msg.Error) && err.Error() != msg.Error {
			t.Fatalf("report %+v: error %q, want the child's text", msg, err)
		}
		want := codes.Unknown
		switch msg.Class {
		case "precondition":
			want = codes.FailedPrecondition
		case "invalid":
			want = codes.InvalidArgument
		}
		if got := errdefs.Code(err); got != want {
			t.Fatalf("report %+v: error %v has code %v, want %v", msg, err, got, want)
		}
	case !msg.Ready || !wantReady:
		// Only the ready report is awaited; the exec's success is EOF.
		if err == nil {
			t.Fatalf("report %+v: accepted out of turn (want ready %v)", msg, wantReady)
		}
	case err != nil:
		t.Fatalf("report %+v (want ready %v): %v", msg, wantReady, err)
	}
}

// FuzzReadSync feeds the parent's reader of the sync pipe (readSync)
// arbitrary bytes, in the order Spawn and Start read it for a created
// container (ready, then EOF at the exec) and for an exec (EOF at the
// exec). It never panics, an exec is reported successful only on a clean
// EOF, and each answer agrees with the JSON value read (decoded on its
// own).
func FuzzReadSync(f *testing.F) {
	for _, s := range syncSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The reference: the JSON values in data, decoded as readSync
		// would decode them.
		ref := json.NewDecoder(bytes.NewReader(data))
		next := func() (syncMsg, error) {
			var m syncMsg
			err := ref.Decode(&m)
			return m, err
		}

		// Create: Spawn wants the ready report, Start then wants EOF.
		c := &Child{sync: json.NewDecoder(bytes.NewReader(data))}
		for _, wantReady := range []bool{true, false} {
			err := c.readSync(wantReady)
			m, derr := next()
			switch {
			case errors.Is(derr, io.EOF):
				if wantReady && err == nil {
					t.Fatal("a create succeeded on an empty sync pipe")
				}
				if !wantReady && err != nil {
					t.Fatalf("the exec's EOF is an error: %v", err)
				}
			case derr != nil:
				if err == nil {
					t.Fatalf("undecodable report (%v) accepted", derr)
				}
			default:
				if !wantReady && err == nil {
					t.Fatalf("a report after the exec (%+v) taken for the exec's success", m)
				}
				checkReport(t, m, wantReady, err)
			}
			if err != nil {
				break
			}
		}

		// Exec: the first thing on the pipe decides.
		ex := &Child{sync: json.NewDecoder(bytes.NewReader(data))}
		err := ex.readSync(false)
		if err == nil && len(bytes.TrimSpace(data)) != 0 {
			t.Fatalf("an exec succeeded with %q on the sync pipe", data)
		}
	})
}

// FuzzSyncRoundTrip writes a report as the container init does (Init and
// initChild encode a syncMsg with json.Encoder) and reads it back as the
// parent does. The parent sees the same report: its readiness, its error
// text and class, and its phases.
func FuzzSyncRoundTrip(f *testing.F) {
	f.Add(true, "", "", "rootfs", 3.25, false)
	f.Add(false, "exec /bin/sh: permission denied", "precondition", "", 0.0, false)
	f.Add(false, "mounting proc: invalid argument", "invalid", "", 0.0, false)
	f.Add(false, "reading the launch config: unexpected EOF", "", "config", 0.001, true)
	f.Add(true, "half ready", "precondition", "lookup", 1e-9, true)
	f.Add(false, "\xff\x00 \u2028 <&>", "unknown", "\"quoted\"\n", -0.0, false)
	f.Fuzz(func(t *testing.T, ready bool, errText, class, phase string, ms float64, wantReady bool) {
		if math.IsNaN(ms) || math.IsInf(ms, 0) {
			return // JSON has no such numbers; the child's durations are finite
		}
		msg := syncMsg{Ready: ready, Error: errText, Class: class}
		if phase != "" {
			msg.Phases = []Phase{{Name: phase, Ms: ms}}
		}
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(&msg); err != nil {
			t.Fatalf("encoding %+v: %v", msg, err)
		}
		c := &Child{sync: json.NewDecoder(&buf)}
		err := c.readSync(wantReady)
		checkReport(t, msg, wantReady, err)
		var wantPhases []Phase
		for _, p := range msg.Phases {
			if utf8.ValidString(p.Name) {
				wantPhases = append(wantPhases, p)
			} else {
				wantPhases = append(wantPhases, Phase{Name: string([]rune(p.Name)), Ms: p.Ms})
			}
		}
		if !reflect.DeepEqual(c.Phases, wantPhases) {
			t.Fatalf("phases %+v came back as %+v", wantPhases, c.Phases)
		}
		// After a report the pipe is at EOF: the exec's success.
		if err == nil {
			if err := c.readSync(false); err != nil {
				t.Fatalf("EOF after the report: %v", err)
			}
		}
	})
}
