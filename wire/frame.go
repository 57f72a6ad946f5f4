package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"
)

// A frame is a 4-byte big-endian length, then that many bytes: one byte of
// Kind, an 8-byte big-endian request id, and the msgpack body. Replies echo
// the id of their request; id 0 is the handshake.
const (
	headerLen = 4
	prefixLen = 1 + 8
	// MaxFrame bounds one frame on an authenticated connection. The
	// largest message is the output of a console command sent back to
	// `appnode rpc`: local_players on a node holding tens of thousands of
	// players is a few hundred KB. Every other message is under 10 KB
	// (an Adopt with 256 remembered requests). 1 MiB leaves room and
	// caps what one connection's read buffer can grow to.
	MaxFrame = 1 << 20
	// MaxHandshakeFrame bounds the frames of the handshake, which come
	// from peers not yet authenticated: a Hello is two names of at most
	// MaxNodeName bytes and a nonce, under 700 bytes.
	MaxHandshakeFrame = 2 << 10
)

var (
	ErrFrameTooLarge = errors.New("frame exceeds the size limit")
	ErrFrameTooShort = errors.New("frame shorter than its header")
	ErrUnknownKind   = errors.New("unknown message kind")
)

// FrameWriter encodes messages into frames, reusing its buffer. It is not
// safe for concurrent use: a connection's write side has one owner at a
// time (its writer goroutine, or a caller writing its own frame).
type FrameWriter struct {
	w   io.Writer
	buf bytes.Buffer
	enc *msgpack.Encoder
}

func NewFrameWriter(w io.Writer) *FrameWriter {
	fw := &FrameWriter{w: w}
	fw.enc = newEncoder(&fw.buf)
	return fw
}

// newEncoder returns the reflective encoder every frame body was encoded
// with before fastcodec.go, and that still encodes the messages it does
// not cover. Its bytes are the protocol: the hand-written encoders are
// tested against it.
func newEncoder(w io.Writer) *msgpack.Encoder {
	enc := msgpack.NewEncoder(w)
	enc.UseCompactInts(true)
	return enc
}

// Append encodes one frame into the pending buffer without writing it, so a
// writer can batch many frames into one write. A message that breaks a
// limit (limits.go) or a frame over MaxFrame is refused here, where the
// caller gets an error and the connection survives, rather than by the
// peer, which would close it.
func (fw *FrameWriter) Append(id uint64, m Msg) error {
	start := fw.buf.Len()
	var hdr [headerLen + prefixLen]byte
	hdr[headerLen] = byte(m.Kind())
	binary.BigEndian.PutUint64(hdr[headerLen+1:], id)
	if err := Validate(m); err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	fw.buf.Write(hdr[:])
	if body, ok := appendFast(fw.buf.AvailableBuffer(), m); ok {
		fw.buf.Write(body)
	} else if err := fw.enc.Encode(m); err != nil {
		fw.buf.Truncate(start)
		return fmt.Errorf("encode %s: %w", m.Kind(), err)
	}
	n := fw.buf.Len() - start - headerLen
	if n > MaxFrame {
		fw.buf.Truncate(start)
		return fmt.Errorf("encode %s of %d bytes (limit %d): %w", m.Kind(), n, MaxFrame, ErrFrameTooLarge)
	}
	binary.BigEndian.PutUint32(fw.buf.Bytes()[start:], uint32(n))
	return nil
}

// Pending reports how many encoded bytes wait for Flush.
func (fw *FrameWriter) Pending() int { return fw.buf.Len() }

// Flush writes every appended frame in one call. If the write fails, the
// bytes it did not write stay pending: a write cut by a deadline leaves the
// stream mid-frame, and a later Flush (under a later deadline) can still
// finish it.
func (fw *FrameWriter) Flush() error {
	if fw.buf.Len() == 0 {
		return nil
	}
	n, err := fw.w.Write(fw.buf.Bytes())
	if err != nil {
		fw.buf.Next(n)
		return err
	}
	fw.buf.Reset()
	return nil
}

// WriteFrame appends one frame and flushes it.
func (fw *FrameWriter) WriteFrame(id uint64, m Msg) error {
	if err := fw.Append(id, m); err != nil {
		return err
	}
	return fw.Flush()
}

// FrameReader reads frames one at a time, reusing its buffer. The body it
// returns is valid until the next call.
type FrameReader struct {
	r     io.Reader
	hdr   [headerLen]byte
	buf   []byte
	limit int // 0: MaxFrame
}

func NewFrameReader(r io.Reader) *FrameReader { return &FrameReader{r: r} }

// SetLimit sets the largest frame ReadFrame accepts (0: MaxFrame); the
// transport lowers it to MaxHandshakeFrame until the peer has proved it
// knows the cookie.
func (fr *FrameReader) SetLimit(n int) { fr.limit = n }

// ReadFrame reads the next frame. A length over the limit is refused
// before anything is allocated for it.
func (fr *FrameReader) ReadFrame() (Kind, uint64, []byte, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return 0, 0, nil, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[:])
	limit := fr.limit
	if limit <= 0 {
		limit = MaxFrame
	}
	if n > uint32(limit) {
		return 0, 0, nil, fmt.Errorf("read frame of %d bytes (limit %d): %w", n, limit, ErrFrameTooLarge)
	}
	if n < prefixLen {
		return 0, 0, nil, fmt.Errorf("read frame of %d bytes: %w", n, ErrFrameTooShort)
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	b := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, nil, fmt.Errorf("read frame body: %w", err)
	}
	return Kind(b[0]), binary.BigEndian.Uint64(b[1:prefixLen]), b[prefixLen:], nil
}

// Ready reports whether the next frame is buffered whole, so that
// ReadFrame returns it without reading from the connection. A reader that
// is not a *bufio.Reader is never ready.
func (fr *FrameReader) Ready() bool {
	br, ok := fr.r.(*bufio.Reader)
	if !ok || br.Buffered() < headerLen {
		return false
	}
	hdr, err := br.Peek(headerLen)
	if err != nil {
		return false
	}
	return uint64(br.Buffered()) >= headerLen+uint64(binary.BigEndian.Uint32(hdr))
}

// ReadMsg reads and decodes the next frame.
func (fr *FrameReader) ReadMsg() (uint64, Msg, error) {
	k, id, body, err := fr.ReadFrame()
	if err != nil {
		return 0, nil, err
	}
	m, err := Decode(k, body)
	return id, m, err
}

// Decode decodes a frame body of kind k. Every decoded message is a pointer
// (*Reward, *Claim, ...); handlers switch on pointer types. The body is
// checked against the structural limits before decoding and the message
// against the field limits after (limits.go).
func Decode(k Kind, body []byte) (Msg, error) {
	m := New(k)
	if m == nil {
		return nil, fmt.Errorf("decode %s: %w", k, ErrUnknownKind)
	}
	if err := checkBody(body); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k, err)
	}
	if !decodeFast(body, m) {
		m = New(k) // decodeFast may have filled part of it
		if err := msgpack.Unmarshal(body, m); err != nil {
			return nil, fmt.Errorf("decode %s: %w: %w", k, ErrMalformed, err)
		}
	}
	if err := Validate(m); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return m, nil
}

// Roundtrip encodes and decodes m as the wire would. In-memory networks use
// it so tests exercise the same encoding as real connections.
func Roundtrip(m Msg) (Msg, error) {
	b, ok := appendFast(nil, m)
	if !ok {
		var buf bytes.Buffer
		if err := newEncoder(&buf).Encode(m); err != nil {
			return nil, fmt.Errorf("encode %s: %w", m.Kind(), err)
		}
		b = buf.Bytes()
	}
	return Decode(m.Kind(), b)
}
