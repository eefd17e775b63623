// Package errdefs holds the error classes that crivm's packages return and
// the single place where they become gRPC status codes.
//
// Packages return domain errors wrapped with %w. A package marks the class of
// an error by wrapping one of the sentinels below (directly or through New /
// Newf). Errors become gRPC statuses at two edges only, both through this
// package's one table: server/ answers the kubelet with ToGRPC, and the
// agent protocol carries a guest error as a status over ttrpc (the agent
// sends ToGRPC's status; agentproxy's client turns it back into its class
// with ClassOf). No other package imports grpc/status.
package errdefs

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel error classes. Compare with errors.Is.
var (
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnimplemented      = errors.New("not implemented")
	ErrUnavailable        = errors.New("unavailable")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrResourceExhausted  = errors.New("resource exhausted")
)

// classified carries a message and a class without repeating the class text
// in the message the user sees.
type classified struct {
	class error
	msg   string
}

func (e *classified) Error() string { return e.msg }
func (e *classified) Unwrap() error { return e.class }

// Newf returns an error of class with a formatted message. The class name is
// not appended to the message; %w verbs in format are honoured.
func Newf(class error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &classifiedWrap{classified: classified{class: class, msg: err.Error()}, inner: errors.Unwrap(err)}
}

// classifiedWrap additionally keeps a %w-wrapped cause so errors.Is/As see both.
type classifiedWrap struct {
	classified
	inner error
}

func (e *classifiedWrap) Unwrap() []error {
	if e.inner == nil {
		return []error{e.class}
	}
	return []error{e.class, e.inner}
}

// InvalidArgument, NotFound, AlreadyExists, FailedPrecondition and
// Unimplemented are shorthands for Newf with that class.
func InvalidArgument(format string, args ...any) error {
	return Newf(ErrInvalidArgument, format, args...)
}

func NotFound(format string, args ...any) error { return Newf(ErrNotFound, format, args...) }

func AlreadyExists(format string, args ...any) error {
	return Newf(ErrAlreadyExists, format, args...)
}

func FailedPrecondition(format string, args ...any) error {
	return Newf(ErrFailedPrecondition, format, args...)
}

func Unimplemented(format string, args ...any) error {
	return Newf(ErrUnimplemented, format, args...)
}

// IsClass reports whether err belongs to class (one of the sentinels).
func IsClass(err, class error) bool { return errors.Is(err, class) }

var classes = []struct {
	err  error
	code codes.Code
}{
	{ErrInvalidArgument, codes.InvalidArgument},
	{ErrNotFound, codes.NotFound},
	{ErrAlreadyExists, codes.AlreadyExists},
	{ErrFailedPrecondition, codes.FailedPrecondition},
	{ErrUnimplemented, codes.Unimplemented},
	{ErrUnavailable, codes.Unavailable},
	{ErrPermissionDenied, codes.PermissionDenied},
	{ErrResourceExhausted, codes.ResourceExhausted},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// ClassOf is the inverse of Code: the class (a sentinel, or context.Canceled
// or DeadlineExceeded) of a gRPC code, or false for codes without one.
func ClassOf(c codes.Code) (error, bool) {
	for _, cl := range classes {
		if cl.code == c {
			return cl.err, true
		}
	}
	return nil, false
}

// Code returns the gRPC code for err's class, codes.Unknown when it has none.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return codes.Unknown
}

// ToGRPC converts a domain error into a gRPC status error. Errors that already
// are status errors pass through unchanged.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(Code(err), err.Error())
}
