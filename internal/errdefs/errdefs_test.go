package errdefs

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestToGRPC(t *testing.T) {
	cause := errors.New("disk on fire")
	tests := []struct {
		name     string
		err      error
		wantCode codes.Code
		wantMsg  string
	}{
		{"not found", NotFound("sandbox %q", "abc"), codes.NotFound, `sandbox "abc"`},
		{"wrapped twice", fmt.Errorf("stopping: %w", AlreadyExists("name x reserved")), codes.AlreadyExists, "stopping: name x reserved"},
		{"sentinel wrapped", fmt.Errorf("thing: %w", ErrFailedPrecondition), codes.FailedPrecondition, "thing: failed precondition"},
		{"cause kept", InvalidArgument("parsing: %w", cause), codes.InvalidArgument, "parsing: disk on fire"},
		{"unclassified", cause, codes.Unknown, "disk on fire"},
		{"deadline", fmt.Errorf("waiting: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "waiting: context deadline exceeded"},
		{"status passes", status.Error(codes.Aborted, "x"), codes.Aborted, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := status.FromError(ToGRPC(tt.err))
			if got := s.Code(); got != tt.wantCode {
				t.Errorf("code: got %v, want %v", got, tt.wantCode)
			}
			if got := s.Message(); got != tt.wantMsg {
				t.Errorf("message: got %q, want %q", got, tt.wantMsg)
			}
		})
	}
}

func TestNewfKeepsCause(t *testing.T) {
	cause := errors.New("root cause")
	err := FailedPrecondition("starting: %w", cause)
	if !errors.Is(err, cause) || !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("errors.Is lost the cause or the class: %v", err)
	}
}

// ClassOf undoes Code for every class, and knows no class for other codes.
func TestClassOfRoundTrip(t *testing.T) {
	for _, cl := range classes {
		got, ok := ClassOf(Code(cl.err))
		if !ok || got != cl.err {
			t.Errorf("ClassOf(Code(%v)) = %v, %v", cl.err, got, ok)
		}
	}
	if _, ok := ClassOf(codes.Internal); ok {
		t.Error("ClassOf(Internal) has a class")
	}
}
