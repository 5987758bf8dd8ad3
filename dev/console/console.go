// Package console interleaves the dev runtime's output the way `cf logs`
// shows it: one line per log line, each with a CF-style source prefix
// (`[APP/PROC/WEB/0]`, `[APP/PROC/WEB/0/hottopic]`, `[HOTTOPIC/SCALER]`).
package console

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Console writes whole lines to one writer, never mixing two lines.
type Console struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
}

// New writes to w.
func New(w io.Writer) *Console { return &Console{w: w, now: time.Now} }

// Line prints text from source, e.g. Line("wordcount [APP/PROC/WEB/0] OUT", "hello").
func (c *Console) Line(source, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, "%s %s %s\n", c.now().Format("15:04:05.000"), source, text)
}

// Printf prints a formatted line from source.
func (c *Console) Printf(source, format string, args ...any) {
	c.Line(source, fmt.Sprintf(format, args...))
}

// Writer returns a writer that prints each line written to it from source
// (for a process's stdout or stderr). Close prints a last unterminated line.
func (c *Console) Writer(source string) io.WriteCloser {
	return &lineWriter{c: c, source: source}
}

type lineWriter struct {
	c      *Console
	source string
	mu     sync.Mutex
	buf    []byte
}

// maxLine bounds a line kept in memory; longer output is split.
const maxLine = 64 << 10

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) >= maxLine {
				w.c.Line(w.source, string(w.buf))
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.c.Line(w.source, strings.TrimSuffix(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
}

func (w *lineWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.c.Line(w.source, string(w.buf))
		w.buf = nil
	}
	return nil
}

// HandlerOption adjusts what a Handler prints.
type HandlerOption func(*handler)

// Hide leaves out attributes with these keys (identifiers that only add noise).
func Hide(keys ...string) HandlerOption {
	return func(h *handler) {
		for _, k := range keys {
			h.hide[k] = true
		}
	}
}

// Verbatim prints records whose message starts with prefix as the message
// alone: lines that already say everything.
func Verbatim(prefix string) HandlerOption {
	return func(h *handler) { h.verbatim = append(h.verbatim, prefix) }
}

// Handler is a slog.Handler printing records from source: the message as
// is, then its attributes as key=value. Debug records are dropped.
func (c *Console) Handler(source string, opts ...HandlerOption) slog.Handler {
	h := &handler{c: c, source: source, hide: map[string]bool{}}
	for _, o := range opts {
		o(h)
	}
	return h
}

type handler struct {
	c        *Console
	source   string
	attrs    string // preformatted, from WithAttrs
	group    string
	hide     map[string]bool
	verbatim []string
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	}
	b.WriteString(r.Message)
	for _, p := range h.verbatim {
		if strings.HasPrefix(r.Message, p) {
			h.c.Line(h.source, b.String())
			return nil
		}
	}
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		h.writeAttr(&b, h.group, a)
		return true
	})
	h.c.Line(h.source, b.String())
	return nil
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	for _, a := range as {
		h.writeAttr(&b, h.group, a)
	}
	n := *h
	n.attrs += b.String()
	return &n
}

func (h *handler) WithGroup(name string) slog.Handler {
	n := *h
	if name != "" {
		n.group += name + "."
	}
	return &n
}

func (h *handler) writeAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) || h.hide[group+a.Key] {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			h.writeAttr(b, group+a.Key+".", g)
		}
		return
	}
	v := a.Value.String()
	if v == "" || strings.ContainsAny(v, " \t\"=") {
		v = strconv.Quote(v)
	}
	fmt.Fprintf(b, " %s%s=%s", group, a.Key, v)
}
