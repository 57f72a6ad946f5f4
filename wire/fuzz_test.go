package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The fuzz targets run their seed corpus (testdata/fuzz/<target>) as part
// of the normal suite; scripts/fuzz.sh runs them for longer. Regenerate the
// seeds after a protocol change with:
//
//	APPNODE_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds ./wire

// FuzzFrameReader feeds arbitrary bytes to a connection's reader: every
// frame it returns respects the size limit, and the reader never panics
// nor returns an error other than the documented ones.
func FuzzFrameReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		fr := NewFrameReader(bytes.NewReader(in))
		limit := MaxFrame
		if len(in) > 0 && in[0]&1 == 1 {
			limit = MaxHandshakeFrame // exercise the lowered limit too
			fr.SetLimit(limit)
		}
		for {
			k, _, body, err := fr.ReadFrame()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
					!errors.Is(err, ErrFrameTooLarge) && !errors.Is(err, ErrFrameTooShort) {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if len(body)+prefixLen > limit {
				t.Fatalf("frame of %d bytes passed a limit of %d", len(body)+prefixLen, limit)
			}
			checkDecode(t, k, body)
		}
	})
}

// FuzzDecode decodes arbitrary bodies as every kind (the first byte picks
// the kind). Whatever decodes is within the limits and is a fixed point of
// encoding: encoded and decoded again, it encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		checkDecode(t, Kind(in[0]), in[1:])
	})
}

func checkDecode(t *testing.T, k Kind, body []byte) {
	m, err := Decode(k, body)
	// The hand-written decoders (fastcodec.go) must accept exactly what
	// msgpack does, and read it the same way.
	ref, refErr := decodeReflective(k, body)
	if (err == nil) != (refErr == nil) {
		t.Fatalf("decode %s %x: %v, but msgpack alone: %v", k, body, err, refErr)
	}
	if err == nil && !reflect.DeepEqual(m, ref) {
		t.Fatalf("decode %s %x:\ngot     %+v\nmsgpack %+v", k, body, m, ref)
	}
	if err != nil {
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrLimit) && !errors.Is(err, ErrUnknownKind) {
			t.Fatalf("decode %s: error outside the documented ones: %v", k, err)
		}
		return
	}
	if err := Validate(m); err != nil {
		t.Fatalf("decoded %s breaks a limit: %v", k, err)
	}
	enc := func(m Msg) []byte {
		var buf bytes.Buffer
		if err := NewFrameWriter(&buf).WriteFrame(1, m); err != nil {
			t.Fatalf("re-encode %s %+v: %v", k, m, err)
		}
		return buf.Bytes()
	}
	once := enc(m)
	_, m2, err := NewFrameReader(bytes.NewReader(once)).ReadMsg()
	if err != nil {
		t.Fatalf("%s re-encoded does not decode: %v", k, err)
	}
	if twice := enc(m2); !bytes.Equal(once, twice) {
		t.Fatalf("%s: encoding is not stable:\n%x\n%x", k, once, twice)
	}
}

// TestWriteFuzzSeeds writes the seed corpora of this package's fuzz
// targets; it runs only when asked (see above).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("APPNODE_WRITE_SEEDS") == "" {
		t.Skip("set APPNODE_WRITE_SEEDS=1 to rewrite testdata/fuzz")
	}
	var stream []byte
	for i, m := range samples() {
		body := mustMarshal(t, m)
		writeSeed(t, "FuzzDecode", fmt.Sprintf("kind-%s", m.Kind()), append([]byte{byte(m.Kind())}, body...))
		fr := encodeFrame(t, uint64(i+1), m)
		writeSeed(t, "FuzzFrameReader", fmt.Sprintf("frame-%s", m.Kind()), fr)
		stream = append(stream, fr...)
	}
	writeSeed(t, "FuzzFrameReader", "stream-of-every-kind", stream)
	hostile := map[string][]byte{
		"oversize-length":   {0x7f, 0xff, 0xff, 0xff, 1, 2, 3},
		"handshake-limit":   frame(KindHello, 0, make([]byte, MaxHandshakeFrame)),
		"short-frame":       {0, 0, 0, 2, 1, 0},
		"cut-body":          frame(KindAck, 1, []byte{0x80})[:10],
		"unknown-kind":      frame(99, 1, []byte{0x80}),
		"list-of-2^32":      frame(KindAdopt, 1, []byte{0x81, 0xa2, 'r', 'c', 0xdd, 0xff, 0xff, 0xff, 0xff}),
		"deep-nesting":      frame(KindPing, 1, append(append([]byte{0x81, 0xa1, 'z'}, bytes.Repeat([]byte{0x91}, 64)...), 0xc0)),
		"http-request":      []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"trailing-bytes":    frame(KindAck, 1, []byte{0x80, 0x80}),
		"ext-and-float":     frame(KindReward, 1, []byte{0x82, 0xa1, 'p', 0xd4, 0x01, 0x02, 0xa3, 'p', 't', 's', 0xcb, 0, 0, 0, 0, 0, 0, 0, 0}),
		"string-past-end":   frame(KindWhere, 1, []byte{0x81, 0xa1, 'p', 0xdb, 0x00, 0x10, 0x00, 0x00, 'x'}),
		"map-of-2^32":       frame(KindReward, 1, []byte{0xdf, 0xff, 0xff, 0xff, 0xff}),
		"zero-length-frame": {0, 0, 0, 0},
		// Forms another encoder may send, for the hand-written decoders:
		// keys out of order, an unknown key, a bin string, a wide int.
		"reward-reordered": frame(KindReward, 1, []byte{0x84,
			0xa2, 'i', 'd', 0x82, 0xa1, 's', 0x02, 0xa1, 'o', 0x01,
			0xa2, 'z', 'z', 0x92, 0x01, 0x81, 0xa1, 'a', 0xc0,
			0xa3, 'p', 't', 's', 0xd0, 0xfb,
			0xa1, 'p', 0xc4, 0x02, 'p', '1'}),
		"error-nil-owner": frame(KindError, 1, []byte{0x83,
			0xa1, 'o', 0xc0,
			0xa1, 'c', 0xcf, 0, 0, 0, 0, 0, 0, 0, 0x05,
			0xa1, 'm', 0xd9, 0x01, 'x'}),
		"replicate-as-array": frame(KindReplicate, 1, []byte{0x95, 0xa1, 'p', 0x01, 0x02, 0x03, 0xc0}),
	}
	for name, b := range hostile {
		writeSeed(t, "FuzzFrameReader", name, b)
		if len(b) > headerLen+prefixLen {
			writeSeed(t, "FuzzDecode", name, append([]byte{b[headerLen]}, b[headerLen+prefixLen:]...))
		}
	}
}

func writeSeed(t *testing.T, target, name string, b []byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
