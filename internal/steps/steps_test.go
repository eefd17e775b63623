package steps

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name       string
		failAt     int // index of the step that fails; -1 for none
		wantUndone []string
		wantErr    string
	}{
		{"all succeed", -1, nil, ""},
		{"first fails", 0, nil, "s0: boom"},
		{"third fails", 2, []string{"s1", "s0"}, "s2: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var undone []string
			var ss []Step
			for i := 0; i < 3; i++ {
				name := "s" + string(rune('0'+i))
				ss = append(ss, Step{Name: name, Do: func(context.Context) (Cleanup, error) {
					if i == tt.failAt {
						return nil, boom
					}
					return func(context.Context) error { undone = append(undone, name); return nil }, nil
				}})
			}
			u, err := Run(context.Background(), ss)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				if err := u.Run(context.Background()); err != nil {
					t.Fatal(err)
				}
				if want := []string{"s2", "s1", "s0"}; !reflect.DeepEqual(undone, want) {
					t.Errorf("undo order: got %v, want %v", undone, want)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr || !errors.Is(err, boom) {
				t.Fatalf("err: got %v, want %q wrapping boom", err, tt.wantErr)
			}
			if !reflect.DeepEqual(undone, tt.wantUndone) {
				t.Errorf("undone: got %v, want %v", undone, tt.wantUndone)
			}
		})
	}
}

func TestCleanupErrorsAreJoined(t *testing.T) {
	ss := []Step{
		{Name: "a", Do: func(context.Context) (Cleanup, error) {
			return func(context.Context) error { return errors.New("stuck mount") }, nil
		}},
		{Name: "b", Do: func(context.Context) (Cleanup, error) { return nil, errors.New("boom") }},
	}
	_, err := Run(context.Background(), ss)
	if err == nil || !strings.Contains(err.Error(), "b: boom") || !strings.Contains(err.Error(), "undoing a: stuck mount") {
		t.Fatalf("got %v", err)
	}
}

// TestRetain: a Retain step's cleanup is skipped when a later cleanup
// failed, and runs when none did.
func TestRetain(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name         string
		laterUndoErr error
		wantUndone   []string
	}{
		{"later cleanups succeed", nil, []string{"later", "intent"}},
		{"a later cleanup fails", boom, []string{"later"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var undone []string
			mark := func(name string, err error) Cleanup {
				return func(context.Context) error { undone = append(undone, name); return err }
			}
			_, err := Run(context.Background(), []Step{
				{Name: "intent", Retain: true, Do: func(context.Context) (Cleanup, error) { return mark("intent", nil), nil }},
				{Name: "later", Do: func(context.Context) (Cleanup, error) { return mark("later", tt.laterUndoErr), nil }},
				{Name: "fails", Do: func(context.Context) (Cleanup, error) { return nil, boom }},
			})
			if err == nil {
				t.Fatal("Run succeeded, want the failing step's error")
			}
			if !reflect.DeepEqual(undone, tt.wantUndone) {
				t.Errorf("undone %v, want %v", undone, tt.wantUndone)
			}
		})
	}
}
