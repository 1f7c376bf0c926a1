// Package logging builds the slog loggers of every role: a compact
// human-readable line by default, JSON with --log-json, and a Dynamic
// handler that stamps each line with live values such as the Lamport clock
// and the current coordinator.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Options selects the output format and level.
type Options struct {
	JSON  bool
	Level slog.Level
}

// New returns a logger writing to w.
func New(w io.Writer, opt Options) *slog.Logger {
	if opt.JSON {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: opt.Level}))
	}
	return slog.New(&textHandler{w: w, level: opt.Level, mu: &sync.Mutex{}})
}

// textHandler writes "15:04:05.000 INFO  message key=value ..." lines.
type textHandler struct {
	w      io.Writer
	level  slog.Level
	mu     *sync.Mutex
	attrs  string // pre-formatted attributes from With
	prefix string // group prefix from WithGroup
}

func (h *textHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *textHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	fmt.Fprintf(&b, "%s %-5s %s", t.Format("15:04:05.000"), r.Level.String(), r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, h.prefix, a)
		return true
	})
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *textHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	for _, a := range attrs {
		writeAttr(&b, h.prefix, a)
	}
	c := *h
	c.attrs += b.String()
	return &c
}

func (h *textHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.prefix += name + "."
	return &c
}

func writeAttr(b *strings.Builder, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			writeAttr(b, prefix+a.Key+".", g)
		}
		return
	}
	v := a.Value.String()
	if v == "" || strings.ContainsAny(v, " \t\n\"=") {
		v = fmt.Sprintf("%q", v)
	}
	fmt.Fprintf(b, " %s%s=%s", prefix, a.Key, v)
}

// Dynamic wraps a handler so that every record also carries the attributes
// fn returns at the moment it is logged (the Lamport clock, the
// coordinator...). fn must be safe for concurrent use.
func Dynamic(h slog.Handler, fn func() []slog.Attr) slog.Handler {
	return &dynamicHandler{inner: h, fn: fn}
}

type dynamicHandler struct {
	inner slog.Handler
	fn    func() []slog.Attr
}

func (d *dynamicHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return d.inner.Enabled(ctx, l)
}

func (d *dynamicHandler) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(d.fn()...)
	return d.inner.Handle(ctx, r)
}

func (d *dynamicHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &dynamicHandler{inner: d.inner.WithAttrs(attrs), fn: d.fn}
}

func (d *dynamicHandler) WithGroup(name string) slog.Handler {
	return &dynamicHandler{inner: d.inner.WithGroup(name), fn: d.fn}
}

// WithClock returns log with every record stamped "clock=" with the value
// of the Lamport clock c at the moment it is logged.
func WithClock(log *slog.Logger, c interface{ Now() uint64 }) *slog.Logger {
	return slog.New(Dynamic(log.Handler(), func() []slog.Attr {
		return []slog.Attr{slog.Uint64("clock", c.Now())}
	}))
}
