// Package logging sets up the zerolog logger every command uses.
package logging

import (
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"
)

// New returns a logger for the named service writing to stderr: JSON, or
// human-readable lines when stderr is a terminal. LOG_LEVEL (debug, info,
// warn, error) sets the level; the default is info.
func New(service string) zerolog.Logger {
	return newLogger(os.Stderr, isTerminal(os.Stderr), service, os.Getenv("LOG_LEVEL"))
}

func newLogger(w io.Writer, terminal bool, service, level string) zerolog.Logger {
	if terminal {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(strings.TrimSpace(level)))
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	l := zerolog.New(w).Level(lvl).With().Timestamp().Str("service", service).Logger()
	if err != nil {
		l.Warn().Str("LOG_LEVEL", level).Msg("unknown log level; using info")
	}
	return l
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
