package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// samples holds one message of every kind, with every field set, as the
// protocol's examples. The fuzz seeds are made from them too.
func samples() []Msg {
	id := NodeID{Name: "app_node1@host", Boot: 1767225600123456789}
	other := NodeID{Name: "app_node2@host", Boot: 1767225600987654321}
	recent := []Applied{{ID: ReqID{Origin: 7, Seq: 1}, Total: 5}, {ID: ReqID{Origin: 7, Seq: 2}, Total: 7}}
	nonce := bytes.Repeat([]byte{0xab}, NonceLen)
	roster := Roster{Cluster: 99, Epoch: 2, Members: []NodeID{id, other}, Dead: []NodeID{{Name: "gone@h", Boot: 5}}}
	return []Msg{
		&Hello{Version: Version, From: id, To: other.Name, Client: true, Nonce: nonce},
		&Challenge{Node: other, Nonce: nonce},
		&HelloProof{Proof: bytes.Repeat([]byte{0xcd}, ProofLen)},
		&HelloReply{Version: Version, Node: other, Fenced: true, Refused: "no", Proof: bytes.Repeat([]byte{0xef}, ProofLen)},
		&Keepalive{},
		&Error{Code: CodeNotOwner, Msg: "player1 is owned elsewhere", Owner: other},
		&Reward{Player: "player1", Points: -5, NotInt: "a", ID: ReqID{Origin: 7, Seq: 3}, Age: 1500000000},
		&RewardReply{Total: 12, Owner: id, Keeper: other},
		&Where{Player: "player1"},
		&WhereReply{Role: RoleKeeper, Owner: id, Keeper: other, Epoch: 3, Seq: 9, Placement: 2, Current: true, OwnerAlive: true},
		&WhereReply{Absent: true},
		&WhereReply{Hint: other},
		&Create{Player: "player1", Claimant: id},
		&Create{Player: "player1", Claimant: id, Fast: true, Epoch: 7},
		&Claim{Player: "player1", Claimant: id},
		&ClaimReply{Granted: true, Owner: id, Epoch: 4, Seq: 9, Total: 12, Recent: recent, Since: 3e9},
		&ClaimReply{AskAll: true},
		&Replicate{Player: "player1", Epoch: 4, Seq: 10, Total: 13, ID: ReqID{Origin: 7, Seq: 4}, Prev: 9, Placement: 2},
		&KeeperState{Seq: 10, Total: 13, Last: Applied{ID: ReqID{Origin: 7, Seq: 4}, Total: 13}},
		&Adopt{Player: "player1", Owner: id, Epoch: 4, Seq: 10, Total: 13, Recent: recent, Since: 3e9, Placement: 5},
		&Ack{},
		&Handoff{Player: "player1", Epoch: 4},
		&KeeperGone{Player: "player1", Epoch: 4},
		&Register{Epoch: 6, Players: []string{"player1", "player2"}, Done: true},
		&Register{Epoch: 6, Players: []string{"player1", "player2"}, Kept: []uint32{1}},
		&Ping{},
		&DeclaredDead{Target: id},
		&PlayersPage{Cursor: "player1", Limit: 50},
		&PlayersPageReply{Players: []PageEntry{{Player: "player2", Total: 7, Keeper: other.Name}}, Next: "player2"},
		&NodeInfo{},
		&NodeInfoReply{Node: id, Primaries: 3, Copies: 2, Members: 3, Quorate: true, HTTP: "http://127.0.0.1:8080"},
		&Command{Line: "reward player1 5"},
		&CommandReply{Output: "5", Failed: true, Code: CodeUnknown, Outcome: OutcomeUnknown},
		&Prepare{Slot: 3, Ballot: Ballot{N: 2, Name: id.Name}, Base: roster},
		&Promise{OK: true, Promised: Ballot{N: 2, Name: id.Name}, Accepted: Ballot{N: 1, Name: other.Name}, Value: roster, Latest: roster},
		&Accept{Slot: 3, Ballot: Ballot{N: 2, Name: id.Name}, Value: roster, Base: roster},
		&Accepted{OK: true, Promised: Ballot{N: 2, Name: id.Name}, Latest: roster},
		&Decided{Roster: roster},
		&Reach{Target: other},
		&ReachReply{Reachable: true},
		&JoinAsk{Probe: true},
		&JoinReply{OK: true, Roster: roster, Why: "fresh"},
	}
}

func encodeFrame(t testing.TB, id uint64, m Msg) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := NewFrameWriter(&buf).WriteFrame(id, m); err != nil {
		t.Fatalf("encode %s: %v", m.Kind(), err)
	}
	return buf.Bytes()
}

func TestEveryKindRoundTrips(t *testing.T) {
	seen := map[Kind]bool{}
	for _, m := range samples() {
		seen[m.Kind()] = true
		fr := NewFrameReader(bytes.NewReader(encodeFrame(t, 42, m)))
		id, got, err := fr.ReadMsg()
		if err != nil {
			t.Fatalf("%s: %v", m.Kind(), err)
		}
		if id != 42 || !reflect.DeepEqual(got, m) {
			t.Fatalf("%s: got %d %+v, want %+v", m.Kind(), id, got, m)
		}
	}
	for k := range 256 {
		if New(Kind(k)) != nil && !seen[Kind(k)] {
			t.Errorf("no sample of %s", Kind(k))
		}
	}
}

func frame(k Kind, id uint64, body []byte) []byte {
	b := make([]byte, headerLen+prefixLen, headerLen+prefixLen+len(body))
	binary.BigEndian.PutUint32(b, uint32(prefixLen+len(body)))
	b[headerLen] = byte(k)
	binary.BigEndian.PutUint64(b[headerLen+1:], id)
	return append(b, body...)
}

func TestFrameReaderLimits(t *testing.T) {
	cases := []struct {
		name  string
		in    []byte
		limit int
		want  error
	}{
		{"length over MaxFrame", []byte{0x7f, 0xff, 0xff, 0xff}, 0, ErrFrameTooLarge},
		{"length over a lowered limit", frame(KindHello, 0, make([]byte, MaxHandshakeFrame)), MaxHandshakeFrame, ErrFrameTooLarge},
		{"shorter than its header", []byte{0, 0, 0, 3, 1, 2, 3}, 0, ErrFrameTooShort},
		{"cut in its body", frame(KindAck, 1, []byte{0x80})[:10], 0, io.ErrUnexpectedEOF},
		{"cut in its length", []byte{0, 0}, 0, io.ErrUnexpectedEOF},
		{"nothing", nil, 0, io.EOF},
	}
	for _, c := range cases {
		fr := NewFrameReader(bytes.NewReader(c.in))
		fr.SetLimit(c.limit)
		if _, _, _, err := fr.ReadFrame(); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestDecodeRefusesHostileBodies(t *testing.T) {
	deep := bytes.Repeat([]byte{0x91}, 10_000) // [[[[...]]]] as an unknown field
	deep = append(append([]byte{0x81, 0xa1, 'z'}, deep...), 0xc0)
	cases := []struct {
		name string
		kind Kind
		body []byte
		want error
	}{
		{"list declaring 2^32 entries", KindAdopt, []byte{0x81, 0xa2, 'r', 'c', 0xdd, 0xff, 0xff, 0xff, 0xff}, ErrMalformed},
		{"list declaring more entries than bytes", KindAdopt, []byte{0x81, 0xa2, 'r', 'c', 0xdc, 0x00, 0x10, 0x80}, ErrMalformed},
		{"list over MaxRecent", KindClaimReply, append([]byte{0x81, 0xa2, 'r', 'c', 0xdc, 0x01, 0x01}, bytes.Repeat([]byte{0x80}, 257)...), ErrMalformed},
		{"map declaring 2^32 entries", KindReward, []byte{0xdf, 0xff, 0xff, 0xff, 0xff}, ErrMalformed},
		{"string longer than the body", KindWhere, []byte{0x81, 0xa1, 'p', 0xdb, 0x00, 0x10, 0x00, 0x00, 'x'}, ErrMalformed},
		{"nesting deeper than the limit", KindPing, deep, ErrMalformed},
		{"trailing bytes", KindAck, []byte{0x80, 0x80}, ErrMalformed},
		{"empty", KindAck, nil, ErrMalformed},
		{"never-used type byte", KindAck, []byte{0xc1}, ErrMalformed},
		{"wrong type for a field", KindReward, []byte{0x81, 0xa1, 'p', 0x05}, ErrMalformed},
		{"player over MaxPlayer", KindWhere, mustMarshal(t, &Where{Player: strings.Repeat("p", MaxPlayer+1)}), ErrLimit},
		{"node name over MaxNodeName", KindDeclaredDead, mustMarshal(t, &DeclaredDead{Target: NodeID{Name: strings.Repeat("n", MaxNodeName+1)}}), ErrLimit},
		{"short nonce", KindChallenge, mustMarshal(t, &Challenge{Nonce: []byte{1}}), ErrLimit},
		{"short proof", KindHelloProof, mustMarshal(t, &HelloProof{Proof: []byte{1}}), ErrLimit},
		{"console line over MaxText", KindCommand, mustMarshal(t, &Command{Line: strings.Repeat("x", MaxText+1)}), ErrLimit},
		{"unknown kind", 99, []byte{0x80}, ErrUnknownKind},
	}
	for _, c := range cases {
		if _, err := Decode(c.kind, c.body); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// Unknown fields within the limits are skipped: a newer peer may add
	// fields.
	if _, err := Decode(KindAck, []byte{0x81, 0xa3, 'n', 'e', 'w', 0x92, 0x01, 0x02}); err != nil {
		t.Errorf("unknown field: %v", err)
	}
}

func mustMarshal(t *testing.T, m Msg) []byte {
	t.Helper()
	// Not through FrameWriter, which validates: these bodies are meant
	// to break the limits.
	b, err := msgpack.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWriterRefusesWhatReadersWould(t *testing.T) {
	fw := NewFrameWriter(io.Discard)
	if err := fw.WriteFrame(1, &Adopt{Player: "p", Recent: make([]Applied, MaxRecent+1)}); !errors.Is(err, ErrLimit) {
		t.Fatalf("oversize list: %v, want ErrLimit", err)
	}
	if err := fw.WriteFrame(1, &CommandReply{Output: strings.Repeat("x", MaxFrame)}); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("frame over the writer's limit: %v, want ErrFrameTooLarge", err)
	}
	if fw.Pending() != 0 {
		t.Fatal("a refused frame was left in the buffer")
	}
}

// Ready tells a read loop whether the next frame is already buffered
// whole, so that reading it cannot block: a partial frame is not ready.
func TestFrameReaderReady(t *testing.T) {
	var buf bytes.Buffer
	fw := NewFrameWriter(&buf)
	if err := fw.WriteFrame(1, &Ping{}); err != nil {
		t.Fatal(err)
	}
	if err := fw.WriteFrame(2, &Reward{Player: "p", Points: 5}); err != nil {
		t.Fatal(err)
	}
	stream := buf.Bytes()
	pr, pw := io.Pipe()
	fr := NewFrameReader(bufio.NewReader(pr))
	go func() {
		// All of the first frame and part of the second, then the rest.
		_, _ = pw.Write(stream[:len(stream)-3])
		_, _ = pw.Write(stream[len(stream)-3:])
		pw.Close()
	}()
	if fr.Ready() {
		t.Fatal("ready before anything was read")
	}
	if _, id, _, err := fr.ReadFrame(); err != nil || id != 1 {
		t.Fatalf("first frame: id %d, %v", id, err)
	}
	if fr.Ready() {
		t.Fatal("ready with only part of the second frame buffered")
	}
	if _, id, _, err := fr.ReadFrame(); err != nil || id != 2 {
		t.Fatalf("second frame: id %d, %v", id, err)
	}
	if NewFrameReader(bytes.NewReader(stream)).Ready() {
		t.Fatal("a reader without a buffer reported a frame ready")
	}
}

// shortWriter takes at most n bytes per write, failing after that.
type shortWriter struct {
	bytes.Buffer
	n int
}

func (w *shortWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		w.Buffer.Write(p[:w.n])
		return w.n, os.ErrDeadlineExceeded
	}
	return w.Buffer.Write(p)
}

// A write cut partway (a deadline) leaves the rest pending, so a later
// Flush completes the stream and the frames read back whole.
func TestFlushKeepsWhatAFailedWriteLeft(t *testing.T) {
	w := &shortWriter{n: 5}
	fw := NewFrameWriter(w)
	for id := uint64(1); id <= 3; id++ {
		if err := fw.Append(id, &Ping{}); err != nil {
			t.Fatal(err)
		}
	}
	total := fw.Pending()
	if err := fw.Flush(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Flush: %v, want the write's error", err)
	}
	if got := fw.Pending(); got != total-5 {
		t.Fatalf("%d bytes pending after a write that took 5 of %d", got, total)
	}
	w.n = 1 << 20
	if err := fw.Flush(); err != nil {
		t.Fatal(err)
	}
	fr := NewFrameReader(&w.Buffer)
	for want := uint64(1); want <= 3; want++ {
		k, id, _, err := fr.ReadFrame()
		if err != nil || k != KindPing || id != want {
			t.Fatalf("frame %d: got %s #%d, %v", want, k, id, err)
		}
	}
}
