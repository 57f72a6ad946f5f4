package transport

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"

	"github.com/appnode/appnode/wire"
)

// The handshake's proofs (see wire.Hello for the exchange). Each proof is
// HMAC-SHA256, keyed with the cookie's transport key, over a transcript of
// everything both ends said that matters: the role of the prover, the
// protocol version, both nonces, the dialer's incarnation, the name it
// expects, whether it is a client, the acceptor's incarnation and, in the
// acceptor's proof, its verdict. Every field is length-prefixed, so no two
// transcripts encode alike.
//
// What that buys:
//   - neither end sends the cookie or anything from which it can be
//     computed except by guessing it;
//   - a proof is good for one connection: both nonces are fresh;
//   - a proof is good in one direction: the role is in the transcript, so
//     an acceptor's proof reflected back at it as a dialer's fails;
//   - the dialer proves first, and the acceptor sends nothing keyed until
//     the dialer's proof checks out, so a stranger who connects gets
//     nothing to test cookie guesses against offline;
//   - the acceptor's verdict (fenced or not) is authenticated: a man in
//     the middle cannot make a node believe it was declared failed.
//
// Proofs are compared with hmac.Equal, in constant time.
//
// What it does not buy: the frames after the handshake are neither
// encrypted nor authenticated, as in Erlang's distribution without TLS.
// Someone who can read the network sees player names and totals, and
// someone who can rewrite TCP streams on the path can inject frames into
// an established connection. On a network that is not trusted, carry the
// nodes' traffic over a VPN (or add TLS to this package).
const (
	roleDialer   = "appnode transport: dialer proof"
	roleAcceptor = "appnode transport: acceptor proof"
)

// ErrAuth means the other end of a connection did not prove that it knows
// the cookie, or refused this end's proof: the two do not share a cookie,
// or the other end is not an appnode node at all.
var ErrAuth = errors.New("cookie mismatch (or not an appnode node)")

// Reasons an acceptor gives up on a handshake, for its counters.
var (
	errBadProof = errors.New("its proof of the cookie is wrong")
	errRefused  = errors.New("hello refused")
	errDropped  = errors.New("connection dropped")
	errFenced   = errors.New("dialer fenced")
)

func proof(key []byte, role string, h *wire.Hello, ch *wire.Challenge, fenced bool) []byte {
	mac := hmac.New(sha256.New, key)
	putBytes(mac, []byte(role))
	putUint(mac, uint64(wire.Version))
	putBytes(mac, h.Nonce)
	putBytes(mac, ch.Nonce)
	putBytes(mac, []byte(h.From.Name))
	putUint(mac, h.From.Boot)
	putBytes(mac, []byte(h.To))
	putBool(mac, h.Client)
	putBytes(mac, []byte(ch.Node.Name))
	putUint(mac, ch.Node.Boot)
	if role == roleAcceptor {
		putBool(mac, fenced)
	}
	return mac.Sum(nil)
}

func putBytes(h hash.Hash, b []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	h.Write(n[:])
	h.Write(b)
}

func putUint(h hash.Hash, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	h.Write(b[:])
}

func putBool(h hash.Hash, v bool) {
	b := []byte{0}
	if v {
		b[0] = 1
	}
	h.Write(b)
}

func nonce() []byte {
	b := make([]byte, wire.NonceLen)
	_, _ = rand.Read(b) // never fails (crypto/rand crashes the process instead)
	return b
}

// acceptor runs the acceptor's side of one handshake. It is a plain
// function of its reader and writer, so that the fuzz test can feed it
// arbitrary bytes.
type acceptor struct {
	key  []byte
	self wire.NodeID
	// screen is asked about a Hello before its sender is authenticated;
	// a non-empty answer is sent as the refusal and ends the connection.
	// It must not depend on anything a stranger could abuse: the
	// version, the names, whether clients are taken.
	screen func(h *wire.Hello) (refusal string)
	// admit is asked once the dialer has proved it knows the cookie.
	// drop closes the connection without a word (the Block test hook);
	// fenced tells the dialer it was declared failed, then closes.
	admit func(h *wire.Hello) (fenced, drop bool)
}

// run reads the Hello, challenges, checks the proof and answers. On
// success it returns the authenticated Hello; otherwise the error says
// why, and the caller closes the connection.
func (a *acceptor) run(fr *wire.FrameReader, fw *wire.FrameWriter) (*wire.Hello, error) {
	m, err := readHandshake(fr, wire.KindHello)
	if err != nil {
		return nil, fmt.Errorf("reading hello: %w", err)
	}
	h := m.(*wire.Hello)
	reply := &wire.HelloReply{Version: wire.Version, Node: a.self}
	refuse := func(why error, reason string) error {
		reply.Refused = reason
		_ = fw.WriteFrame(0, reply) // best effort: the connection is closed next anyway
		return fmt.Errorf("%w: %s", why, reason)
	}
	if h.Version != wire.Version {
		return nil, refuse(errRefused, fmt.Sprintf("protocol version %d not supported, this node speaks %d", h.Version, wire.Version))
	}
	if len(h.Nonce) != wire.NonceLen {
		return nil, refuse(errRefused, fmt.Sprintf("hello carries a nonce of %d bytes, want %d", len(h.Nonce), wire.NonceLen))
	}
	if reason := a.screen(h); reason != "" {
		return nil, refuse(errRefused, reason)
	}
	ch := &wire.Challenge{Node: a.self, Nonce: nonce()}
	if err := fw.WriteFrame(0, ch); err != nil {
		return nil, fmt.Errorf("writing challenge: %w", err)
	}
	m, err = readHandshake(fr, wire.KindHelloProof)
	if err != nil {
		return nil, fmt.Errorf("reading proof: %w", err)
	}
	if !hmac.Equal(m.(*wire.HelloProof).Proof, proof(a.key, roleDialer, h, ch, false)) {
		reply.Refused = "authentication failed: the cookies differ"
		_ = fw.WriteFrame(0, reply) // unauthenticated, like any early refusal
		return nil, errBadProof
	}
	fenced, drop := a.admit(h)
	if drop {
		return nil, errDropped
	}
	reply.Fenced = fenced
	reply.Proof = proof(a.key, roleAcceptor, h, ch, fenced)
	if err := fw.WriteFrame(0, reply); err != nil {
		return nil, fmt.Errorf("writing hello reply: %w", err)
	}
	if fenced {
		return nil, errFenced
	}
	return h, nil
}

// isHandshake tells the kinds that belong to the handshake (and the
// keepalive), which never carry a request or a reply.
func isHandshake(k wire.Kind) bool {
	switch k {
	case wire.KindHello, wire.KindChallenge, wire.KindHelloProof, wire.KindHelloReply, wire.KindKeepalive:
		return true
	}
	return false
}

// readHandshake reads one handshake frame, which must be of kind want
// with id 0.
func readHandshake(fr *wire.FrameReader, want wire.Kind) (wire.Msg, error) {
	k, id, body, err := fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	if k != want || id != 0 {
		return nil, fmt.Errorf("got %s frame %d, want %s", k, id, want)
	}
	return wire.Decode(k, body)
}

// dialerHandshake runs the dialer's side: hello (its Nonce is filled in
// here) is sent, the challenge answered, the verdict checked. It returns
// the acceptor's verified reply, or, with an error, whatever reply it got
// (so that the caller can see a fenced verdict, which is authenticated
// like an acceptance). where names the peer in errors.
func dialerHandshake(fr *wire.FrameReader, fw *wire.FrameWriter, key []byte, hello *wire.Hello, where string) (*wire.HelloReply, error) {
	hello.Nonce = nonce()
	if err := fw.WriteFrame(0, hello); err != nil {
		return nil, fmt.Errorf("transport: handshake with %s: %w", where, err)
	}
	k, id, body, err := fr.ReadFrame()
	if err != nil {
		// Most often the peer died while accepting (a reset). Nothing was
		// sent yet, so asking again is safe: say so (ErrLinkLost).
		return nil, fmt.Errorf("transport: handshake with %s: no challenge: %w: %w", where, wire.ErrLinkLost, err)
	}
	if id != 0 || (k != wire.KindChallenge && k != wire.KindHelloReply) {
		return nil, fmt.Errorf("transport: handshake with %s: got %s frame %d, want challenge (not an appnode node?)", where, k, id)
	}
	m, err := wire.Decode(k, body)
	if err != nil {
		return nil, fmt.Errorf("transport: handshake with %s: %w", where, err)
	}
	if early, ok := m.(*wire.HelloReply); ok {
		// Refused before authentication: the words are the peer's and
		// unverified, so they are quoted, and nothing is acted on.
		switch {
		case early.Version != wire.Version:
			// Retrying cannot help until one side is upgraded.
			return nil, &wire.Error{Code: wire.CodeBadRequest, Msg: fmt.Sprintf(
				"transport: %s speaks protocol version %d, this node %d (%q)", where, early.Version, wire.Version, early.Refused)}
		case early.Refused != "":
			return nil, &wire.Error{Code: wire.CodeUnavailable, Msg: fmt.Sprintf(
				"transport: %s refused the connection: %q", where, early.Refused)}
		}
		return nil, fmt.Errorf("transport: handshake with %s: hello reply before any proof (not an appnode node?)", where)
	}
	ch := m.(*wire.Challenge)
	if hello.To != "" && ch.Node.Name != hello.To {
		return nil, &wire.Error{Code: wire.CodeUnavailable, Msg: fmt.Sprintf("transport: %s answers as %q, not %s", where, ch.Node.Name, hello.To)}
	}
	if err := fw.WriteFrame(0, &wire.HelloProof{Proof: proof(key, roleDialer, hello, ch, false)}); err != nil {
		return nil, fmt.Errorf("transport: handshake with %s: %w", where, err)
	}
	m, err = readHandshake(fr, wire.KindHelloReply)
	if err != nil {
		return nil, fmt.Errorf("transport: handshake with %s: no verdict on this node's proof (is it shutting down?): %w", where, err)
	}
	reply := m.(*wire.HelloReply)
	if len(reply.Proof) == 0 {
		detail := "it refused this node's proof"
		if reply.Refused != "" {
			detail = fmt.Sprintf("it refused this node's proof: %q", reply.Refused)
		}
		return nil, fmt.Errorf("transport: handshake with %s: %w: %s", where, ErrAuth, detail)
	}
	if !hmac.Equal(reply.Proof, proof(key, roleAcceptor, hello, ch, reply.Fenced)) {
		return nil, fmt.Errorf("transport: handshake with %s: %w: it could not prove it knows the cookie", where, ErrAuth)
	}
	if reply.Node != ch.Node {
		return nil, fmt.Errorf("transport: handshake with %s: it challenged as %s boot %d but answered as %s boot %d", where, ch.Node.Name, ch.Node.Boot, reply.Node.Name, reply.Node.Boot)
	}
	if reply.Fenced {
		return reply, &wire.Error{Code: wire.CodeFenced, Msg: fmt.Sprintf(
			"transport: %s says this incarnation (%s boot %d) was declared failed", reply.Node.Name, hello.From.Name, hello.From.Boot)}
	}
	return reply, nil
}
