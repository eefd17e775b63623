// Package log attaches a *slog.Logger to a context. Code below main never
// reaches for a global logger: it calls log.G(ctx).
package log

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

type loggerKey struct{}

// WithLogger returns ctx carrying l.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// G returns the logger in ctx, or slog.Default when there is none.
func G(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// With returns ctx whose logger carries the extra attributes.
func With(ctx context.Context, args ...any) context.Context {
	return WithLogger(ctx, G(ctx).With(args...))
}

// ParseLevel accepts the crio.conf spellings: trace, debug, info, warn,
// warning, error, fatal, panic. trace maps to debug-4.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "trace":
		return slog.LevelDebug - 4, nil
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "fatal", "panic":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want trace, debug, info, warn or error)", s)
}

// New returns a logger writing text or JSON lines to w at the level held in
// lv (info when lv is nil).
func New(w io.Writer, format string, lv *slog.LevelVar) *slog.Logger {
	if lv == nil {
		lv = new(slog.LevelVar)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
