package names

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/appnode/appnode/wire"
	"github.com/vmihailenco/msgpack/v5"
)

// The protocol. A frame is a 4-byte big-endian length and that many bytes
// of msgpack: a request from the client, a reply from the service. Every
// request gets exactly one reply, except opNames, which is answered by one
// frame per entry (More set) and a final frame with More unset. The service
// never speaks first, so a holder that reads anything while idle knows the
// stream is corrupt.
const (
	protoVersion = 1
	frameHeader  = 4
	// maxFrame bounds every frame in both directions. An entry is a name of
	// at most maxNameLen bytes and three integers, so 4 KiB leaves room and
	// stops a forged length from costing more than that.
	maxFrame = 4 << 10
	// maxNameLen is epmd's limit on a node name.
	maxNameLen = wire.MaxNodeName
	// maxNames bounds a Names listing on the client side, so a broken or
	// hostile service cannot stream entries forever.
	maxNames = 4096
)

type op uint8

const (
	opRegister   op = 1 // Entry: hold Entry for as long as this connection lives
	opUnregister op = 2 // drop the entry this connection holds
	opLookup     op = 3 // Name
	opNames      op = 4
	opPing       op = 5 // holder keepalive
)

type status uint8

const (
	statusOK         status = 0
	statusNotFound   status = 1
	statusTaken      status = 2 // a live registration holds the name
	statusBadRequest status = 3 // Msg says why; retrying will not help
	statusRefused    status = 4 // registration from another host
)

type request struct {
	V     uint8  `msgpack:"v"`
	Op    op     `msgpack:"op"`
	Name  string `msgpack:"n,omitempty"`
	Entry *Entry `msgpack:"e,omitempty"`
}

type reply struct {
	Status status `msgpack:"s"`
	Msg    string `msgpack:"m,omitempty"`
	Entry  *Entry `msgpack:"e,omitempty"`
	More   bool   `msgpack:"more,omitempty"`
}

var (
	errFrameSize = errors.New("frame length out of bounds")
	// errChatter means the service sent bytes no request asked for.
	errChatter = errors.New("the name service sent data nobody asked for")
)

// Errors a caller can test for with errors.Is. The error values returned
// carry the address and name involved in their text.
var (
	// ErrNoService: nothing answers as a name service at the address.
	ErrNoService = errors.New("no name service answering")
	// ErrNotFound: the service answered, but no node of that name is
	// registered with it.
	ErrNotFound = errors.New("no node registered under that name")
	// ErrNameTaken: a live node already holds the name on this host.
	ErrNameTaken = errors.New("node name already registered")
)

// kindError gives a plain sentence of its own while still matching one of
// the sentinel errors above, so messages need not repeat themselves.
type kindError struct {
	kind  error
	text  string
	cause error
}

func (e *kindError) Error() string {
	if e.cause != nil {
		return e.text + ": " + e.cause.Error()
	}
	return e.text
}

func (e *kindError) Is(target error) bool { return target == e.kind }
func (e *kindError) Unwrap() error        { return e.cause }

func writeFrame(c net.Conn, timeout time.Duration, v any) error {
	body, err := msgpack.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode name service frame: %w", err)
	}
	if len(body) > maxFrame {
		return fmt.Errorf("encode name service frame of %d bytes: %w", len(body), errFrameSize)
	}
	buf := make([]byte, frameHeader+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[frameHeader:], body)
	if err := c.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err = c.Write(buf)
	return err
}

// readFrame reads one frame into v. The caller sets the read deadline. A
// length outside (0, maxFrame] is refused before anything is allocated.
func readFrame(r io.Reader, v any) error {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxFrame {
		return fmt.Errorf("read frame of %d bytes: %w", n, errFrameSize)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read frame body: %w", err)
	}
	if err := msgpack.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode frame: %w", err)
	}
	return nil
}

func validName(name string) error {
	if name == "" {
		return errors.New("node name is empty")
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("node name %.32q... is %d bytes long; the limit is %d", name, len(name), maxNameLen)
	}
	for _, r := range name {
		if r == utf8.RuneError || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("node name %q contains a space, a control character or invalid UTF-8", name)
		}
	}
	return nil
}

func (e Entry) validate() error {
	if err := validName(e.Name); err != nil {
		return err
	}
	if e.GossipPort < 1 || e.GossipPort > 65535 {
		return fmt.Errorf("node %s: gossip port %d is not a TCP port number", e.Name, e.GossipPort)
	}
	if e.TransportPort < 1 || e.TransportPort > 65535 {
		return fmt.Errorf("node %s: transport port %d is not a TCP port number", e.Name, e.TransportPort)
	}
	if e.HTTPPort < 0 || e.HTTPPort > 65535 {
		return fmt.Errorf("node %s: HTTP port %d is not a TCP port number", e.Name, e.HTTPPort)
	}
	return nil
}

// client is one connection to a name service. It is used by one goroutine
// at a time.
type client struct {
	c    net.Conn
	addr string
	t    *timing
}

func dial(ctx context.Context, addr string, t *timing) (*client, error) {
	d := net.Dialer{Timeout: t.dial}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &client{c: c, addr: addr, t: t}, nil
}

func (c *client) close() { c.c.Close() }

// call sends req and reads its reply, giving up after t.reply, or at the
// deadline of ctx if that comes first. Callers that want cancellation to cut
// a call short wrap it in bound.
func (c *client) call(ctx context.Context, req request) (reply, error) {
	if err := c.send(ctx, req); err != nil {
		return reply{}, err
	}
	var rep reply
	if err := c.read(ctx, &rep); err != nil {
		return reply{}, err
	}
	return rep, nil
}

func (c *client) send(ctx context.Context, req request) error {
	req.V = protoVersion
	return c.ctxErr(ctx, writeFrame(c.c, c.t.reply, req))
}

func (c *client) read(ctx context.Context, rep *reply) error {
	deadline := time.Now().Add(c.t.reply)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.c.SetReadDeadline(deadline); err != nil {
		return err
	}
	return c.ctxErr(ctx, readFrame(c.c, rep))
}

// bound makes a cancelled ctx interrupt any blocked read or write on the
// connection. The connection is useless afterwards; callers close it.
func (c *client) bound(ctx context.Context) (stop func() bool) {
	if ctx.Done() == nil {
		return func() bool { return true }
	}
	return context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })
}

// ctxErr reports a cancellation as such rather than as the I/O timeout it
// provoked.
func (c *client) ctxErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
