// Package ratelog is a rate-limited front for a slog.Logger, for the lines
// that hostile or broken input can cause once per message: dropped
// messages, refused commands, failed replies. A burst of lines per second
// gets through; the rest are counted, and the next line that gets through
// reports how many were suppressed.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Burst is how many lines a Logger lets through per second.
const Burst = 20

// Logger logs through an slog.Logger at most Burst lines a second. The
// zero value is not usable; make one with New. It is safe for concurrent
// use.
type Logger struct {
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

// New returns a Logger writing to log, with attrs added to every line.
func New(log *slog.Logger, attrs ...any) *Logger {
	if len(attrs) > 0 {
		log = log.With(attrs...)
	}
	return &Logger{log: log, now: time.Now}
}

// Warn logs at warning level, if the rate allows.
func (l *Logger) Warn(msg string, args ...any) { l.Log(slog.LevelWarn, msg, args...) }

// Error logs at error level, if the rate allows.
func (l *Logger) Error(msg string, args ...any) { l.Log(slog.LevelError, msg, args...) }

// Log logs at level, if the rate allows.
func (l *Logger) Log(level slog.Level, msg string, args ...any) {
	ok, suppressed := l.allow()
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

func (l *Logger) allow() (ok bool, suppressed int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Second {
		l.window, l.n = now, 0
	}
	if l.n >= Burst {
		l.suppressed++
		return false, 0
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
