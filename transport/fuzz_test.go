package transport

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/appnode/appnode/wire"
)

// FuzzAcceptorHandshake feeds arbitrary bytes to the acceptor's side of
// the handshake, as a stranger connecting to the transport port could. It
// must never panic, never accept (the acceptor's nonce is fresh, so no
// input can hold a valid proof), and never answer with anything keyed: no
// proof may leave before the dialer's checked out. The seed corpus is in
// testdata/fuzz; regenerate it with
//
//	APPNODE_WRITE_SEEDS=1 go test -run TestWriteHandshakeSeeds ./node/transport
func FuzzAcceptorHandshake(f *testing.F) {
	key := testCookie.TransportKey()
	self := wire.NodeID{Name: "b", Boot: 7}
	f.Fuzz(func(t *testing.T, in []byte) {
		fr := wire.NewFrameReader(bytes.NewReader(in))
		fr.SetLimit(wire.MaxHandshakeFrame)
		var out bytes.Buffer
		fw := wire.NewFrameWriter(&out)
		a := acceptor{
			key:    key,
			self:   self,
			screen: func(h *wire.Hello) string { return "" },
			admit:  func(h *wire.Hello) (bool, bool) { return false, false },
		}
		if h, err := a.run(fr, fw); err == nil {
			t.Fatalf("accepted a stranger's bytes as %+v", h)
		}
		// What the acceptor said: at most a challenge and a refusal,
		// neither with a proof.
		rd := wire.NewFrameReader(&out)
		for {
			_, m, err := rd.ReadMsg()
			if err != nil {
				break
			}
			if r, ok := m.(*wire.HelloReply); ok && len(r.Proof) != 0 {
				t.Fatalf("the acceptor sent a proof to an unauthenticated dialer: %+v", r)
			}
		}
	})
}

// TestWriteHandshakeSeeds writes FuzzAcceptorHandshake's seed corpus; it
// runs only when asked.
func TestWriteHandshakeSeeds(t *testing.T) {
	if os.Getenv("APPNODE_WRITE_SEEDS") == "" {
		t.Skip("set APPNODE_WRITE_SEEDS=1 to rewrite testdata/fuzz")
	}
	frame := func(id uint64, m wire.Msg) []byte {
		var buf bytes.Buffer
		if err := wire.NewFrameWriter(&buf).WriteFrame(id, m); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	nonce := bytes.Repeat([]byte{7}, wire.NonceLen)
	hello := frame(0, &wire.Hello{Version: wire.Version, From: wire.NodeID{Name: "a", Boot: 1}, To: "b", Nonce: nonce})
	client := frame(0, &wire.Hello{Version: wire.Version, From: wire.NodeID{Name: "rpc-1@host"}, Client: true, Nonce: nonce})
	proofFrame := frame(0, &wire.HelloProof{Proof: bytes.Repeat([]byte{9}, wire.ProofLen)})
	seeds := map[string][]byte{
		"hello":                  hello,
		"hello-and-proof":        append(append([]byte{}, hello...), proofFrame...),
		"client-hello-and-proof": append(append([]byte{}, client...), proofFrame...),
		"old-version":            frame(0, &wire.Hello{Version: 1, From: wire.NodeID{Name: "a", Boot: 1}, To: "b"}),
		"no-nonce":               frame(0, &wire.Hello{Version: wire.Version, From: wire.NodeID{Name: "a", Boot: 1}, To: "b"}),
		"request-first":          frame(1, &wire.Reward{Player: "p", Points: 1}),
		"proof-first":            proofFrame,
		"hello-then-request":     append(append([]byte{}, hello...), frame(1, &wire.Reward{Player: "p", Points: 1})...),
		"hello-then-keepalive":   append(append([]byte{}, hello...), frame(0, &wire.Keepalive{})...),
		"oversize-length":        {0x7f, 0xff, 0xff, 0xff},
		"http-request":           []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"truncated-hello":        hello[:len(hello)/2],
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzAcceptorHandshake")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
