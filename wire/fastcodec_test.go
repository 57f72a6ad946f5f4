package wire

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// The hand-written codec (fastcodec.go) must be invisible on the wire: its
// bytes are those of the reflective encoder, and it decodes whatever a
// peer sends to what msgpack.Unmarshal would.

// reflectiveBody encodes m as frames were encoded before fastcodec.go.
func reflectiveBody(t testing.TB, m Msg) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := newEncoder(&buf).Encode(m); err != nil {
		t.Fatalf("encode %s: %v", m.Kind(), err)
	}
	return buf.Bytes()
}

// decodeReflective is Decode as it was before fastcodec.go.
func decodeReflective(k Kind, body []byte) (Msg, error) {
	m := New(k)
	if m == nil {
		return nil, ErrUnknownKind
	}
	if err := checkBody(body); err != nil {
		return nil, err
	}
	if err := msgpack.Unmarshal(body, m); err != nil {
		return nil, err
	}
	if err := Validate(m); err != nil {
		return nil, err
	}
	return m, nil
}

// randomHot returns n random messages of every kind fastcodec.go covers,
// the zero values and the boundaries of every msgpack form first.
func randomHot(rng *rand.Rand, n int) []Msg {
	out := []Msg{
		&Reward{}, &RewardReply{}, &Replicate{}, &Ack{}, &Error{}, &Where{}, &WhereReply{},
		// IsZero decides omitempty: a NodeID with a boot id but no name
		// is left out, a ReqID with either half set is not.
		&Error{Owner: NodeID{Boot: 5}},
		&Reward{ID: ReqID{Seq: 1}},
		&RewardReply{Owner: NodeID{Boot: 5}, Keeper: NodeID{Name: "k"}},
		&Reward{Age: math.MinInt64},
		&Replicate{ID: ReqID{Origin: math.MaxUint64}},
		&Replicate{Prev: math.MaxUint64},
		&Replicate{Placement: math.MaxUint64},
		&Error{Code: math.MaxUint8, Msg: strings.Repeat("m", MaxText), Owner: NodeID{Name: strings.Repeat("n", MaxNodeName), Boot: math.MaxUint64}},
		&WhereReply{Role: math.MaxUint8, Epoch: math.MaxUint64, Seq: math.MaxUint64, Placement: math.MaxUint64, Current: true, OwnerAlive: true, Absent: true},
		&WhereReply{Hint: NodeID{Name: strings.Repeat("h", MaxNodeName), Boot: math.MaxUint64}},
	}
	for range n {
		out = append(out,
			&Reward{Player: randStr(rng), Points: randInt(rng), NotInt: randStr(rng), ID: randReqID(rng), Age: randInt(rng)},
			&RewardReply{Total: randInt(rng), Owner: randNodeID(rng), Keeper: randNodeID(rng)},
			&Replicate{Player: randStr(rng), Epoch: randUint(rng), Seq: randUint(rng), Total: randInt(rng), ID: randReqID(rng), Prev: randUint(rng), Placement: randUint(rng)},
			&Error{Code: Code(randUint(rng)), Msg: randStr(rng), Owner: randNodeID(rng)},
			&Where{Player: randStr(rng)},
			&WhereReply{Role: Role(randUint(rng)), Owner: randNodeID(rng), Keeper: randNodeID(rng),
				Epoch: randUint(rng), Seq: randUint(rng), Placement: randUint(rng), Current: rng.IntN(2) == 0, OwnerAlive: rng.IntN(2) == 0, Absent: rng.IntN(2) == 0, Hint: randNodeID(rng)},
		)
	}
	return out
}

// Integers around every boundary between msgpack's integer forms.
var edgeInts = []int64{
	0, 1, -1, 31, 32, -32, -33, 127, 128, -127, -128, -129, 255, 256,
	math.MaxInt16, math.MaxInt16 + 1, math.MinInt16, math.MinInt16 - 1, math.MaxUint16, math.MaxUint16 + 1,
	math.MaxInt32, math.MaxInt32 + 1, math.MinInt32, math.MinInt32 - 1, math.MaxUint32, math.MaxUint32 + 1,
	math.MaxInt64, math.MinInt64, math.MinInt64 + 1,
}

func randInt(rng *rand.Rand) int64 {
	switch rng.IntN(3) {
	case 0:
		return edgeInts[rng.IntN(len(edgeInts))]
	case 1:
		return rng.Int64N(1000) - 500
	}
	return int64(rng.Uint64() >> rng.IntN(64))
}

func randUint(rng *rand.Rand) uint64 {
	switch rng.IntN(4) {
	case 0:
		return uint64(edgeInts[rng.IntN(len(edgeInts))]) // negatives become huge
	case 1:
		return math.MaxUint64 - uint64(rng.IntN(3))
	case 2:
		return uint64(rng.IntN(300))
	}
	return rng.Uint64() >> rng.IntN(64)
}

// randStr is often empty (omitted under omitempty) and crosses the
// fixstr, str8 and str16 lengths.
func randStr(rng *rand.Rand) string {
	lens := []int{0, 0, 1, 31, 32, 255, 256, MaxPlayer}
	n := rng.IntN(40)
	if rng.IntN(2) == 0 {
		n = lens[rng.IntN(len(lens))]
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256)) // not UTF-8: msgpack does not care
	}
	return string(b)
}

func randReqID(rng *rand.Rand) ReqID {
	if rng.IntN(3) == 0 {
		return ReqID{}
	}
	return ReqID{Origin: randUint(rng), Seq: randUint(rng)}
}

func randNodeID(rng *rand.Rand) NodeID {
	switch rng.IntN(4) {
	case 0:
		return NodeID{}
	case 1:
		return NodeID{Boot: randUint(rng)}
	}
	name := randStr(rng)
	return NodeID{Name: name[:min(len(name), MaxNodeName)], Boot: randUint(rng)}
}

// canonical is m as it comes back from its own encoding: omitempty drops
// a NodeID with no name whatever its boot id.
func canonical(m Msg) Msg {
	if e, ok := m.(*Error); ok && e.Owner.IsZero() {
		c := *e
		c.Owner = NodeID{}
		return &c
	}
	if r, ok := m.(*RewardReply); ok && (r.Owner.IsZero() || r.Keeper.IsZero()) {
		c := *r
		if c.Owner.IsZero() {
			c.Owner = NodeID{}
		}
		if c.Keeper.IsZero() {
			c.Keeper = NodeID{}
		}
		return &c
	}
	if w, ok := m.(*WhereReply); ok && w.Hint.IsZero() {
		c := *w
		c.Hint = NodeID{}
		return &c
	}
	return m
}

func TestFastEncodeIsTheReflectiveEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, m := range randomHot(rng, 3000) {
		want := reflectiveBody(t, m)
		got, ok := appendFast(nil, m)
		if !ok {
			t.Fatalf("%s: not encoded by hand", m.Kind())
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s:\nfast       %x\nreflective %x", m.Kind(), short(got), short(want))
		}
		// and so through a FrameWriter, after whatever it already holds
		var buf bytes.Buffer
		fw := NewFrameWriter(&buf)
		if err := fw.Append(1, &Ack{}); err != nil {
			t.Fatal(err)
		}
		if err := fw.WriteFrame(9, m); err != nil {
			t.Fatal(err)
		}
		wantFrames := append(frame(KindAck, 1, []byte{0x80}), frame(m.Kind(), 9, want)...)
		if !bytes.Equal(buf.Bytes(), wantFrames) {
			t.Fatalf("%s: frames differ:\n%x\n%x", m.Kind(), short(buf.Bytes()), short(wantFrames))
		}
	}
}

func TestFastEncodeLeavesOtherMessages(t *testing.T) {
	for _, m := range append(samples(), (*Reward)(nil), (*Ack)(nil), Reward{}) {
		_, ok := appendFast(nil, m)
		hot := false
		switch m := m.(type) {
		case *Reward:
			hot = m != nil
		case *RewardReply, *Replicate, *Error, *Where, *WhereReply:
			hot = true
		case *Ack:
			hot = m != nil
		}
		if ok != hot {
			t.Errorf("%T: encoded by hand %v, want %v", m, ok, hot)
		}
	}
}

// short cuts b for an error message: some test bodies are 64 KiB.
func short(b []byte) []byte { return b[:min(len(b), 200)] }

// fastDecode decodes body as Decode's fast path alone, or nil.
func fastDecode(k Kind, body []byte) Msg {
	m := New(k)
	if m == nil || !decodeFast(body, m) {
		return nil
	}
	return m
}

func TestFastDecodeReadsEveryEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, m := range randomHot(rng, 2000) {
		want := canonical(m)
		compact := reflectiveBody(t, m)
		wide, err := msgpack.Marshal(m) // a plain msgpack encoder: full-width ints
		if err != nil {
			t.Fatal(err)
		}
		for _, body := range [][]byte{compact, wide} {
			got := fastDecode(m.Kind(), body)
			if got == nil {
				t.Fatalf("%s: fast path refused %x", m.Kind(), short(body))
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s %x:\ngot  %#v\nwant %#v", m.Kind(), short(body), got, want)
			}
		}
	}
}

// Bodies another encoder might send for the same messages: keys shuffled,
// unknown keys, repeated keys, nil values, other integer, string and map
// forms. The fast path must take them all and agree with msgpack.
func TestFastDecodeAgreesOnRewrittenBodies(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, m := range randomHot(rng, 1000) {
		for range 5 {
			body := rewrite(t, rng, reflectiveBody(t, m), 0)
			want, err := decodeReflective(m.Kind(), body)
			if err != nil {
				t.Fatalf("%s %x: reflective decode: %v", m.Kind(), short(body), err)
			}
			got := fastDecode(m.Kind(), body)
			if got == nil {
				t.Fatalf("%s: fast path refused %x", m.Kind(), short(body))
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s %x:\nfast       %+v\nreflective %+v", m.Kind(), short(body), got, want)
			}
			if dec, err := Decode(m.Kind(), body); err != nil || !reflect.DeepEqual(dec, want) {
				t.Fatalf("%s %x: Decode gave %+v, %v; want %+v", m.Kind(), short(body), dec, err, want)
			}
		}
	}
}

// Forms the fast path leaves to msgpack still decode as they did.
func TestFastDecodeFallsBack(t *testing.T) {
	cases := []struct {
		name string
		kind Kind
		body []byte
	}{
		{"struct as array", KindRewardReply, []byte{0x91, 0x05}},
		{"empty array", KindAck, []byte{0x90}},
		{"nested struct as array", KindReward, []byte{0x82, 0xa1, 'p', 0xa1, 'x', 0xa2, 'i', 'd', 0x92, 0x01, 0x02}},
		{"float points", KindReward, []byte{0x81, 0xa3, 'p', 't', 's', 0xcb, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"int key", KindAck, []byte{0x81, 0x01, 0x02}},
		{"string for an int", KindRewardReply, []byte{0x81, 0xa1, 't', 0xa1, '5'}},
	}
	for _, c := range cases {
		if fastDecode(c.kind, c.body) != nil {
			t.Errorf("%s: taken by the fast path", c.name)
		}
		want, werr := decodeReflective(c.kind, c.body)
		got, err := Decode(c.kind, c.body)
		if (err == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Decode gave %+v, %v; msgpack %+v, %v", c.name, got, err, want, werr)
		}
	}
}

// rewrite re-encodes the msgpack value b as another encoder might: maps
// get their entries shuffled, unknown entries, repeated keys, nil values
// and a wider header; integers and strings another form (bin for str).
func rewrite(t *testing.T, rng *rand.Rand, b []byte, depth int) []byte {
	t.Helper()
	d := msgpack.NewDecoder(bytes.NewReader(b))
	c := b[0]
	switch {
	case c >= 0x80 && c <= 0x8f:
		return rewriteMap(t, rng, d, depth)
	case c >= 0xa0 && c <= 0xbf || c == 0xd9 || c == 0xda || c == 0xdb:
		return rewriteString(t, rng, d)
	case c == 0xcf: // over MaxInt64: msgpack reads an int64 of the same bits alike
		if rng.IntN(2) == 0 {
			return append([]byte{0xd3}, b[1:]...)
		}
		return b
	case c <= 0x7f || c >= 0xe0 || c >= 0xcc && c <= 0xd3:
		return rewriteInt(t, rng, d, b)
	}
	return b
}

// rewriteMap re-encodes the fixmap d reads: each entry rewritten, some
// repeated (msgpack keeps the last value) or with a nil value, a few
// unknown entries added, all shuffled, under a header of any width.
func rewriteMap(t *testing.T, rng *rand.Rand, d *msgpack.Decoder, depth int) []byte {
	t.Helper()
	n, err := d.DecodeMapLen()
	if err != nil {
		t.Fatal(err)
	}
	var entries [][2][]byte
	for range n {
		k, err := d.DecodeRaw()
		if err != nil {
			t.Fatal(err)
		}
		v, err := d.DecodeRaw()
		if err != nil {
			t.Fatal(err)
		}
		if rng.IntN(8) == 0 { // a repeated key: msgpack keeps the last value
			entries = append(entries, [2][]byte{k, rewrite(t, rng, v, depth+1)})
		}
		if rng.IntN(8) == 0 {
			v = []byte{0xc0}
		} else {
			v = rewrite(t, rng, v, depth+1)
		}
		entries = append(entries, [2][]byte{rewrite(t, rng, k, depth+1), v})
	}
	for range rng.IntN(3) {
		k := []byte{0xa3, 'z', 'z', byte('a' + rng.IntN(26))}
		entries = append(entries, [2][]byte{k, randValue(rng, 3)})
	}
	rng.Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
	var out []byte
	switch rng.IntN(3) {
	case 0:
		if len(entries) > 15 {
			// A fixmap holds at most 15 entries.
			out = binary.BigEndian.AppendUint16(append(out, 0xde), uint16(len(entries)))
			break
		}
		out = append(out, 0x80|byte(len(entries)))
	case 1:
		out = binary.BigEndian.AppendUint16(append(out, 0xde), uint16(len(entries)))
	default:
		out = binary.BigEndian.AppendUint32(append(out, 0xdf), uint32(len(entries)))
	}
	for _, e := range entries {
		out = append(append(out, e[0]...), e[1]...)
	}
	return out
}

// rewriteString re-encodes the string d reads as a str or a bin with a
// length of any width that fits it; an empty one may become nil.
func rewriteString(t *testing.T, rng *rand.Rand, d *msgpack.Decoder) []byte {
	t.Helper()
	s, err := d.DecodeString()
	if err != nil {
		t.Fatal(err)
	}
	if s == "" && rng.IntN(4) == 0 {
		return []byte{0xc0}
	}
	codes := [][2]byte{{0xd9, 0xc4}, {0xda, 0xc5}, {0xdb, 0xc6}} // str or bin, 8, 16 or 32 bits of length
	switch {
	case len(s) > math.MaxUint16:
		codes = codes[2:]
	case len(s) > math.MaxUint8:
		codes = codes[1:]
	}
	code := codes[rng.IntN(len(codes))][rng.IntN(2)]
	out := []byte{code}
	switch code {
	case 0xd9, 0xc4:
		out = append(out, byte(len(s)))
	case 0xda, 0xc5:
		out = binary.BigEndian.AppendUint16(out, uint16(len(s)))
	default:
		out = binary.BigEndian.AppendUint32(out, uint32(len(s)))
	}
	return append(out, s...)
}

// rewriteInt re-encodes the integer d reads (encoded as b) in any of the
// signed or unsigned forms that hold it, b's own included.
func rewriteInt(t *testing.T, rng *rand.Rand, d *msgpack.Decoder, b []byte) []byte {
	t.Helper()
	n, err := d.DecodeInt64()
	if err != nil {
		t.Fatal(err)
	}
	var forms [][]byte
	if n >= 0 && n <= math.MaxUint8 {
		forms = append(forms, []byte{0xcc, byte(n)})
	}
	if n >= math.MinInt8 && n <= math.MaxInt8 {
		forms = append(forms, []byte{0xd0, byte(n)})
	}
	if n >= 0 && n <= math.MaxUint16 {
		forms = append(forms, binary.BigEndian.AppendUint16([]byte{0xcd}, uint16(n)))
	}
	if n >= math.MinInt16 && n <= math.MaxInt16 {
		forms = append(forms, binary.BigEndian.AppendUint16([]byte{0xd1}, uint16(n)))
	}
	if n >= 0 && n <= math.MaxUint32 {
		forms = append(forms, binary.BigEndian.AppendUint32([]byte{0xce}, uint32(n)))
	}
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		forms = append(forms, binary.BigEndian.AppendUint32([]byte{0xd2}, uint32(n)))
	}
	if n >= 0 {
		forms = append(forms, binary.BigEndian.AppendUint64([]byte{0xcf}, uint64(n)))
	}
	forms = append(forms, binary.BigEndian.AppendUint64([]byte{0xd3}, uint64(n)), b)
	return forms[rng.IntN(len(forms))]
}

// randValue returns a random msgpack value of any type, nested at most
// depth deep, for the unknown fields a newer peer might add.
func randValue(rng *rand.Rand, depth int) []byte {
	kinds := 12
	if depth == 0 {
		kinds = 10
	}
	switch rng.IntN(kinds) {
	case 0:
		return []byte{0xc0}
	case 1:
		return []byte{0xc2 + byte(rng.IntN(2))}
	case 2:
		return appendInt(nil, randInt(rng))
	case 3:
		return binary.BigEndian.AppendUint64([]byte{0xcf}, rng.Uint64())
	case 4:
		return binary.BigEndian.AppendUint32([]byte{0xca}, rng.Uint32())
	case 5:
		return binary.BigEndian.AppendUint64([]byte{0xcb}, rng.Uint64())
	case 6:
		return appendStr(nil, randStr(rng))
	case 7:
		return append([]byte{0xc4, 3}, 1, 2, 3)
	case 8:
		return append([]byte{0xd5, byte(rng.IntN(256))}, 1, 2) // fixext 2
	case 9:
		return append([]byte{0xc7, 3, byte(rng.IntN(256))}, 1, 2, 3) // ext 8
	case 10:
		n := rng.IntN(4)
		out := []byte{0x90 | byte(n)}
		for range n {
			out = append(out, randValue(rng, depth-1)...)
		}
		return out
	}
	n := rng.IntN(3)
	out := []byte{0x80 | byte(n)}
	for range n {
		out = append(out, randValue(rng, depth-1)...)
		out = append(out, randValue(rng, depth-1)...)
	}
	return out
}
