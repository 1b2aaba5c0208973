package main

import (
	"log/slog"
	"os"
)

// newLogger logs to stderr at $COFFRE_LOG (debug, info, warn, error; default warn).
func newLogger() *slog.Logger {
	var l slog.Level = slog.LevelWarn
	if s := os.Getenv("COFFRE_LOG"); s != "" {
		l.UnmarshalText([]byte(s))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
