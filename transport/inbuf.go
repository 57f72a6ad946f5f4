package transport

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/appnode/appnode/wire"
)

// Frame layout, as wire.FrameWriter writes it: a 4-byte big-endian length,
// then that many bytes: the Kind, an 8-byte id, the msgpack body.
const (
	frameHeaderLen = 4
	framePrefixLen = 1 + 8
)

// inbuf is the read side of a dialer's connection: bytes read from the
// socket, handed out a whole frame at a time. Unlike wire.FrameReader it
// consumes nothing until a frame is complete, so a read cut short by a
// deadline loses nothing: the caller reading for its own reply (see
// clientConn.readFor) may give up at its deadline and the next reader
// resumes where it stopped. The buffer grows to hold the largest frame
// announced (at most wire.MaxFrame) and shrinks back after it.
type inbuf struct {
	buf  []byte
	r, w int // buf[r:w] is unread
}

// next returns the next frame if it is buffered whole; its body is valid
// until the next call to fill. A length outside the limits is an error, as
// in wire.FrameReader: the connection cannot be read further.
func (b *inbuf) next() (k wire.Kind, id uint64, body []byte, ok bool, err error) {
	if b.w-b.r < frameHeaderLen {
		return 0, 0, nil, false, nil
	}
	n := int(binary.BigEndian.Uint32(b.buf[b.r:]))
	if n > wire.MaxFrame {
		return 0, 0, nil, false, fmt.Errorf("read frame of %d bytes (limit %d): %w", n, wire.MaxFrame, wire.ErrFrameTooLarge)
	}
	if n < framePrefixLen {
		return 0, 0, nil, false, fmt.Errorf("read frame of %d bytes: %w", n, wire.ErrFrameTooShort)
	}
	if b.w-b.r < frameHeaderLen+n {
		return 0, 0, nil, false, nil
	}
	f := b.buf[b.r+frameHeaderLen : b.r+frameHeaderLen+n]
	b.r += frameHeaderLen + n
	return wire.Kind(f[0]), binary.BigEndian.Uint64(f[1:framePrefixLen]), f[framePrefixLen:], true, nil
}

// fill reads once from rd into the free space, making room for the frame
// that is partly buffered. Whatever was read is kept, even with an error.
func (b *inbuf) fill(rd io.Reader) error {
	if b.r == b.w {
		b.r, b.w = 0, 0
		if len(b.buf) > readBufSize {
			b.buf = nil // a large frame has gone: give its memory back
		}
	}
	if b.buf == nil {
		b.buf = make([]byte, readBufSize)
	}
	need := frameHeaderLen
	if b.w-b.r >= frameHeaderLen {
		// next has checked the length against the limit already.
		need = frameHeaderLen + int(binary.BigEndian.Uint32(b.buf[b.r:]))
	}
	if len(b.buf)-b.r < need {
		if need > len(b.buf) {
			nb := make([]byte, need)
			b.w = copy(nb, b.buf[b.r:b.w])
			b.buf = nb
		} else {
			b.w = copy(b.buf, b.buf[b.r:b.w])
		}
		b.r = 0
	} else if b.w == len(b.buf) {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	n, err := rd.Read(b.buf[b.w:])
	b.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// load takes the bytes a handshake's reader buffered beyond the handshake.
func (b *inbuf) load(p []byte) {
	if len(p) > 0 {
		b.buf = make([]byte, max(readBufSize, len(p)))
		b.r, b.w = 0, copy(b.buf, p)
	}
}
