// Package appconn is the sidecar's HTTP/1.1 client to its app: one
// persistent keep-alive connection owned by one delivery worker.
//
// net/http's Transport runs a read and a write goroutine per connection and
// hands every request and response across channels; on a small shared CPU
// those wake-ups cost more than the loopback round trip itself. Here the
// worker writes the request and parses the response on its own goroutine,
// with buffers reused from one event to the next. It speaks only what the
// sidecar needs: POST with a known length; responses with Content-Length,
// chunked bodies or read-to-close, 1xx interim responses, Connection: close.
//
// Like net/http's client it keeps a response tied to its one request: a
// connection with anything unasked to read, or closed by the app, is never
// reused (checked, without blocking, before every request); a body cut
// short, a malformed length or header fails the exchange and drops the
// connection; an answer the app gives while the request body is still being
// written is read as it comes; and a request that meets a connection the
// app closed while idle is sent again once, on a new one.
package appconn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrAborted is returned by Post after Abort.
var ErrAborted = errors.New("delivery cancelled")

// ErrBodyTooLarge is returned by Post when a body to be read exceeds its limit.
var ErrBodyTooLarge = errors.New("response body too large")

// ErrBadResponse is wrapped by the errors of a response that is not valid
// HTTP/1.1 (the app answered, wrongly), as opposed to a connection failure.
var ErrBadResponse = errors.New("bad HTTP response")

// maxHeaderBytes bounds a response's header block, as net/http's default
// MaxResponseHeaderBytes does.
const maxHeaderBytes = 1 << 20

// ErrorBodyBytes is how much of a non-2xx answer's body is kept
// (Response.ErrorBody): enough for the start of an error message.
const ErrorBodyBytes = 256

// inlineBody is the largest request body written before the response is
// read; a larger one is written while the response is read, so an early
// answer (413) is not lost behind a write the app stopped reading.
const inlineBody = 64 << 10

// Conn is one connection to the app, dialled on first use and again after
// any error. Post must not be called concurrently; Abort may be.
type Conn struct {
	addr        string // host:port
	dialTimeout time.Duration
	reqLine     []byte // scratch: request line and Host header

	mu      sync.Mutex
	nc      net.Conn
	aborted bool

	peek    *peeker
	br      *bufio.Reader
	bw      *bufio.Writer
	lr      io.LimitedReader
	line    []byte // scratch: one header line being assembled
	errBody []byte // the start of the last non-2xx body; made on the first one
	resp    Response
}

// New returns a Conn to addr ("127.0.0.1:8080"); nothing is dialled yet.
func New(addr string, dialTimeout time.Duration) *Conn {
	return &Conn{addr: addr, dialTimeout: dialTimeout}
}

// Response is the app's answer. It and its Body are valid until the next Post.
type Response struct {
	Status int
	Body   []byte // only when Post was asked to read it
	// ErrorBody is the start (up to ErrorBodyBytes) of a non-2xx answer's
	// body, as it came; ErrorText makes it printable.
	ErrorBody []byte
	errMore   bool // the body went on after ErrorBody

	hbuf   []byte  // the header block, copied
	fields []field // offsets into hbuf
	proto1 bool    // HTTP/1.0
}

type field struct{ k0, k1, v0, v1 int }

// Get returns the first value of the named header (case-insensitive), or "".
func (r *Response) Get(name string) string {
	for _, f := range r.fields {
		if asciiEqualFold(r.hbuf[f.k0:f.k1], name) {
			return string(r.hbuf[f.v0:f.v1])
		}
	}
	return ""
}

// VisitHeaders calls fn for every header line in order.
func (r *Response) VisitHeaders(fn func(key, value string)) {
	for _, f := range r.fields {
		fn(string(r.hbuf[f.k0:f.k1]), string(r.hbuf[f.v0:f.v1]))
	}
}

// Abort makes a Post in progress, and every later one, fail with ErrAborted
// at once (shutdown cannot wait any longer).
func (c *Conn) Abort() {
	c.mu.Lock()
	c.aborted = true
	if c.nc != nil {
		_ = c.nc.SetDeadline(time.Unix(1, 0))
	}
	c.mu.Unlock()
}

// Close closes the connection.
func (c *Conn) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked()
}

func (c *Conn) closeLocked() {
	if c.nc != nil {
		_ = c.nc.Close()
		c.nc = nil
	}
}

func (c *Conn) drop() {
	c.mu.Lock()
	c.closeLocked()
	c.mu.Unlock()
}

// Post sends one POST and reads the answer. header is a block of complete
// "Key: value\r\n" lines (see AppendHeader) without Host or Content-Length.
// With readBody > 0 a 2xx body up to that many bytes is returned in
// Response.Body (more is ErrBodyTooLarge); otherwise the body is discarded.
// The whole exchange, dialling included, must end before deadline, or Post
// fails with an error matching os.ErrDeadlineExceeded. After any error the
// connection is closed; the next Post dials again.
func (c *Conn) Post(deadline time.Time, path string, header, body []byte, readBody int64) (*Response, error) {
	nc, reused, err := c.conn(deadline)
	if err != nil {
		return nil, err
	}
	resp, keep, answered, err := c.exchange(nc, path, header, body, readBody)
	if err != nil && reused && !answered && !errors.Is(err, ErrBadResponse) && !isTimeout(err) && !c.isAborted() {
		// The app closed the connection while it was idle, after the check
		// in conn (a race with its close): nothing of an answer came, so the
		// request goes again once, on a new connection; it costs no attempt.
		c.drop()
		if nc, _, err = c.conn(deadline); err != nil {
			return nil, err
		}
		resp, keep, _, err = c.exchange(nc, path, header, body, readBody)
	}
	if err != nil || !keep {
		c.drop()
	}
	if err != nil {
		if c.isAborted() {
			return nil, ErrAborted
		}
		return nil, err
	}
	return resp, nil
}

func (c *Conn) isAborted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.aborted
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// conn returns a live connection with the deadline set, dialling if needed;
// reused says it carried a request before.
func (c *Conn) conn(deadline time.Time) (nc net.Conn, reused bool, err error) {
	c.mu.Lock()
	if c.aborted {
		c.mu.Unlock()
		return nil, false, ErrAborted
	}
	nc = c.nc
	c.mu.Unlock()
	if nc != nil && (c.br.Buffered() > 0 || !c.peek.alive()) {
		// The app closed it while idle, or sent something nobody asked
		// for (which would pass for the answer to this request): nothing
		// of this request was written yet, so a fresh connection is safe.
		c.drop()
		nc = nil
	}
	reused = nc != nil
	if nc == nil {
		d := net.Dialer{Deadline: deadline, Timeout: c.dialTimeout}
		if nc, err = d.Dial("tcp", c.addr); err != nil {
			return nil, false, err
		}
		c.peek = newPeeker(nc)
		if c.br == nil {
			c.br = bufio.NewReaderSize(nc, 4<<10)
			c.bw = bufio.NewWriterSize(nc, 4<<10)
		} else {
			c.br.Reset(nc)
			c.bw.Reset(nc)
		}
		c.mu.Lock()
		if c.aborted {
			c.mu.Unlock()
			_ = nc.Close()
			return nil, false, ErrAborted
		}
		c.nc = nc
		c.mu.Unlock()
	}
	if err := nc.SetDeadline(deadline); err != nil {
		c.drop()
		return nil, false, err
	}
	// An Abort between the check above and SetDeadline must still win.
	if c.isAborted() {
		c.drop()
		return nil, false, ErrAborted
	}
	return nc, reused, nil
}

// exchange writes the request and reads its answer; answered says some of
// an answer came (so the request cannot simply go again).
func (c *Conn) exchange(nc net.Conn, path string, header, body []byte, readBody int64) (resp *Response, keep, answered bool, err error) {
	c.reqLine = append(c.reqLine[:0], "POST "...)
	c.reqLine = append(c.reqLine, path...)
	c.reqLine = append(c.reqLine, " HTTP/1.1\r\nHost: "...)
	c.reqLine = append(c.reqLine, c.addr...)
	c.reqLine = append(c.reqLine, "\r\nUser-Agent: hottopic-sidecar\r\nContent-Length: "...)
	c.reqLine = strconv.AppendInt(c.reqLine, int64(len(body)), 10)
	c.reqLine = append(c.reqLine, "\r\n"...)
	w := c.bw
	_, _ = w.Write(c.reqLine)
	_, _ = w.Write(header)
	_, _ = w.WriteString("\r\n")
	if len(body) <= inlineBody {
		_, _ = w.Write(body)
		if err := w.Flush(); err != nil {
			return nil, false, false, err
		}
		return c.read(readBody)
	}
	// A large body is written while the answer is read: an app may answer
	// (413) before it has read it all, and stop reading.
	if err := w.Flush(); err != nil {
		return nil, false, false, err
	}
	written := make(chan error, 1)
	go func() {
		_, err := nc.Write(body)
		written <- err
	}()
	resp, keep, answered, err = c.read(readBody)
	// The write ends now: it is over, or the app answered without taking the
	// whole request (then the connection is done).
	_ = nc.SetWriteDeadline(time.Unix(1, 0))
	if werr := <-written; werr != nil {
		keep = false
	}
	return resp, keep, answered, err
}

// read reads the answer: interim 1xx responses, then the final one.
func (c *Conn) read(readBody int64) (*Response, bool, bool, error) {
	r := &c.resp
	answered := false
	for {
		got, err := c.readHead(r)
		answered = answered || got
		if err != nil {
			return nil, false, answered, err
		}
		if r.Status >= 200 || r.Status == 101 {
			break
		}
		// 100 Continue, 103 Early Hints...: the answer is still to come.
	}
	resp, keep, err := c.readBody(r, readBody)
	return resp, keep, true, err
}

// readHead reads a status line and header block into r; got says some of
// it came.
func (c *Conn) readHead(r *Response) (got bool, err error) {
	r.Body, r.ErrorBody, r.errMore, r.fields, r.hbuf = nil, nil, false, r.fields[:0], r.hbuf[:0]
	if _, err := c.br.Peek(1); err != nil {
		if err == io.EOF { // nothing at all: the app closed the connection
			err = fmt.Errorf("connection closed with no answer: %w", io.ErrUnexpectedEOF)
		}
		return false, err
	}
	line, err := c.readLine()
	if err != nil {
		return true, err
	}
	// HTTP/1.1 200 OK
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return true, fmt.Errorf("%w: malformed status line %q", ErrBadResponse, truncate(line))
	}
	r.proto1 = line[7] == '0'
	code, ok := atoi3(line[9:12])
	if !ok || (len(line) > 12 && line[12] != ' ') {
		return true, fmt.Errorf("%w: malformed status line %q", ErrBadResponse, truncate(line))
	}
	r.Status = code
	size := len(line)
	for {
		line, err := c.readLine()
		if err != nil {
			return true, err
		}
		if len(line) == 0 {
			return true, nil
		}
		if size += len(line) + 2; size > maxHeaderBytes {
			return true, fmt.Errorf("%w: header larger than %d bytes", ErrBadResponse, maxHeaderBytes)
		}
		if line[0] == ' ' || line[0] == '\t' { // obsolete line folding
			if len(r.fields) == 0 {
				return true, fmt.Errorf("%w: header continuation first", ErrBadResponse)
			}
			// Values are the last bytes of hbuf: extend the last one.
			r.hbuf = append(r.hbuf, ' ')
			r.hbuf = append(r.hbuf, bytes.TrimSpace(line)...)
			r.fields[len(r.fields)-1].v1 = len(r.hbuf)
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validName(string(line[:colon])) {
			return true, fmt.Errorf("%w: malformed header %q", ErrBadResponse, truncate(line))
		}
		k0 := len(r.hbuf)
		r.hbuf = append(r.hbuf, line[:colon]...)
		k1 := len(r.hbuf)
		r.hbuf = append(r.hbuf, bytes.TrimSpace(line[colon+1:])...)
		r.fields = append(r.fields, field{k0, k1, k1, len(r.hbuf)})
	}
}

// readLine returns one line without its CRLF (or LF); valid until the next read.
func (c *Conn) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// A long line: gather it, up to a sane bound.
		c.line = append(c.line[:0], line...)
		for err == bufio.ErrBufferFull && len(c.line) < 1<<20 {
			line, err = c.br.ReadSlice('\n')
			c.line = append(c.line, line...)
		}
		if err == bufio.ErrBufferFull {
			return nil, fmt.Errorf("%w: header line too long", ErrBadResponse)
		}
		line = c.line
	}
	if err != nil {
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// readBody reads or discards the body and says whether the connection can
// carry another request.
func (c *Conn) readBody(r *Response, readBody int64) (*Response, bool, error) {
	keep := !r.proto1
	var length int64 = -1
	chunked := false
	for _, f := range r.fields {
		k, v := r.hbuf[f.k0:f.k1], r.hbuf[f.v0:f.v1]
		switch {
		case asciiEqualFold(k, "Connection"):
			for _, tok := range bytes.Split(v, []byte(",")) {
				tok = bytes.TrimSpace(tok)
				if asciiEqualFold(tok, "close") {
					keep = false
				} else if r.proto1 && asciiEqualFold(tok, "keep-alive") {
					keep = true
				}
			}
		case asciiEqualFold(k, "Content-Length"):
			// 1*DIGIT (RFC 9112 §6.3): no sign, no space, no list.
			n, ok := parseLength(v)
			if !ok || (length >= 0 && n != length) {
				return nil, false, fmt.Errorf("%w: bad Content-Length %q", ErrBadResponse, truncate(v))
			}
			length = n
		case asciiEqualFold(k, "Transfer-Encoding"):
			if !asciiEqualFold(bytes.TrimSpace(v), "chunked") {
				return nil, false, fmt.Errorf("%w: unsupported Transfer-Encoding %q", ErrBadResponse, truncate(v))
			}
			chunked = true
		}
	}
	if chunked && length >= 0 { // RFC 9112 §6.3: a request smuggling sign
		return nil, false, fmt.Errorf("%w: both Transfer-Encoding and Content-Length", ErrBadResponse)
	}
	if r.Status == 101 || r.Status == 204 || r.Status == 304 {
		return r, keep && r.Status != 101, nil // no body, by definition
	}
	var body io.Reader
	switch {
	case chunked:
		body = httputil.NewChunkedReader(c.br)
		length = -1
	case length >= 0:
		c.lr = io.LimitedReader{R: c.br, N: length}
		body = &c.lr
	default:
		body, keep = c.br, false // the body ends when the app closes
	}
	// The whole body is read, always: an answer cut short is no answer.
	want := readBody > 0 && r.Status >= 200 && r.Status < 300
	if want {
		if length > readBody {
			return nil, false, ErrBodyTooLarge
		}
		b, err := readAll(body, readBody)
		if err != nil {
			return nil, false, err
		}
		r.Body = b
	} else if r.Status >= 300 {
		// The start of an error answer is kept for the reason of a failed
		// delivery; the 2xx path below never comes here.
		if c.errBody == nil {
			c.errBody = make([]byte, ErrorBodyBytes)
		}
		n, err := readPrefix(body, c.errBody)
		if err != nil {
			return nil, false, err
		}
		r.ErrorBody = c.errBody[:n]
		if n == len(c.errBody) {
			more, err := io.Copy(io.Discard, body)
			if err != nil {
				return nil, false, err
			}
			r.errMore = more > 0
		}
	} else if length >= 0 && length <= int64(c.br.Buffered()) {
		_, _ = c.br.Discard(int(length)) // the common case: no copy at all
		c.lr.N = 0
	} else if _, err := io.Copy(io.Discard, body); err != nil {
		return nil, false, err
	}
	if length >= 0 && !chunked && c.lr.N > 0 {
		return nil, false, fmt.Errorf("%w: incomplete body: %d of %d bytes, then %w", ErrBadResponse, length-c.lr.N, length, io.ErrUnexpectedEOF)
	}
	if chunked {
		if err := c.skipTrailers(); err != nil {
			return nil, false, err
		}
	}
	return r, keep, nil
}

// skipTrailers reads the trailer section after the last chunk.
func (c *Conn) skipTrailers() error {
	for {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
	}
}

// parseLength reads a Content-Length value: digits only.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, b := range v {
		if b < '0' || b > '9' {
			return 0, false
		}
		n = n*10 + int64(b-'0')
	}
	return n, true
}

// readPrefix fills buf from r, or reads r to its end (io.EOF) if shorter.
func readPrefix(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ErrorText is ErrorBody made fit for a log line or a header: valid UTF-8
// (an invalid byte, or a character cut at the end, as \xNN), control
// characters escaped (\n, \t, \xNN, \u0085), and "…" when the body went on.
func (r *Response) ErrorText() string {
	b := r.ErrorBody
	if len(b) == 0 {
		return ""
	}
	if r.errMore { // a character cut at the end of the prefix is dropped
		for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
			if utf8.RuneStart(b[i]) {
				if !utf8.FullRune(b[i:]) {
					b = b[:i]
				}
				break
			}
		}
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for len(b) > 0 {
		c, size := utf8.DecodeRune(b)
		switch {
		case c == utf8.RuneError && size == 1:
			fmt.Fprintf(&sb, "\\x%02x", b[0])
		case c == '\n':
			sb.WriteString("\\n")
		case c == '\r':
			sb.WriteString("\\r")
		case c == '\t':
			sb.WriteString("\\t")
		case c < ' ' || c == 0x7f:
			fmt.Fprintf(&sb, "\\x%02x", c)
		case unicode.IsControl(c) || c == 0x2028 || c == 0x2029:
			fmt.Fprintf(&sb, "\\u%04x", c)
		default:
			sb.WriteRune(c)
		}
		b = b[size:]
	}
	if r.errMore {
		sb.WriteString("…")
	}
	return sb.String()
}

func readAll(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, ErrBodyTooLarge
	}
	return b, nil
}

// AppendHeader appends "key: value\r\n" after the checks net/http makes: a
// field name must be a token, a value must hold no control characters.
func AppendHeader(dst []byte, key, value string) ([]byte, error) {
	if !validName(key) {
		return dst, fmt.Errorf("invalid header field name %q", key)
	}
	for i := 0; i < len(value); i++ {
		if b := value[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return dst, fmt.Errorf("invalid header field value for %q", key)
		}
	}
	dst = append(dst, key...)
	dst = append(dst, ": "...)
	dst = append(dst, trimOWS(value)...)
	return append(dst, "\r\n"...), nil
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	switch b {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func atoi3(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n >= 100
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}
