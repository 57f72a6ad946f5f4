package wire

import (
	"encoding/binary"
	"math"
)

// Hand-written msgpack for the messages every reward sends (Reward and its
// RewardReply, Replicate and its Ack, Error) and for Where and WhereReply.
// A CPU profile of a loaded cluster spent about a tenth of its time in
// msgpack's reflection (decodeStruct, reflect.Value.Field, Unmarshal's
// pools) and a few percent more encoding.
//
// The encoders append exactly the bytes FrameWriter's reflective encoder
// (newEncoder) produces for the same value: keys in field order, the same
// omitempty rules (a zero NodeID is one with no name, as its IsZero says),
// the most compact integer forms. The tests compare the two byte for byte,
// so the protocol does not change and old and new nodes interoperate.
//
// The decoders take what a peer's encoder may send: keys in any order,
// unknown keys, any integer width, nil for a field. On anything else (a
// struct encoded as an array, a wrong type, a truncated body) they give up
// and Decode falls back to msgpack.Unmarshal, which decides. The fuzz tests
// check that whatever they accept decodes to what msgpack would produce.

// appendFast appends m's body to b, and reports false for a message it does
// not encode by hand (nil pointers included).
func appendFast(b []byte, m Msg) ([]byte, bool) {
	switch m := m.(type) {
	case *Reward:
		if m != nil {
			return appendReward(b, m), true
		}
	case *RewardReply:
		if m != nil {
			return appendRewardReply(b, m), true
		}
	case *Replicate:
		if m != nil {
			return appendReplicate(b, m), true
		}
	case *Ack:
		if m != nil {
			return append(b, 0x80), true
		}
	case *Error:
		if m != nil {
			return appendError(b, m), true
		}
	case *Where:
		if m != nil {
			return appendStr(appendKey(append(b, 0x81), "p"), m.Player), true
		}
	case *WhereReply:
		if m != nil {
			return appendWhereReply(b, m), true
		}
	}
	return b, false
}

func appendReward(b []byte, m *Reward) []byte {
	n := 2
	if m.NotInt != "" {
		n++
	}
	if !m.ID.IsZero() {
		n++
	}
	if m.Age != 0 {
		n++
	}
	b = appendMapLen(b, n)
	b = appendStr(appendKey(b, "p"), m.Player)
	b = appendInt(appendKey(b, "pts"), m.Points)
	if m.NotInt != "" {
		b = appendStr(appendKey(b, "bad"), m.NotInt)
	}
	if !m.ID.IsZero() {
		b = appendReqID(appendKey(b, "id"), m.ID)
	}
	if m.Age != 0 {
		b = appendInt(appendKey(b, "age"), m.Age)
	}
	return b
}

func appendRewardReply(b []byte, m *RewardReply) []byte {
	n := 1
	if !m.Owner.IsZero() {
		n++
	}
	if !m.Keeper.IsZero() {
		n++
	}
	b = appendMapLen(b, n)
	b = appendInt(appendKey(b, "t"), m.Total)
	if !m.Owner.IsZero() {
		b = appendNodeID(appendKey(b, "o"), m.Owner)
	}
	if !m.Keeper.IsZero() {
		b = appendNodeID(appendKey(b, "k"), m.Keeper)
	}
	return b
}

func appendReplicate(b []byte, m *Replicate) []byte {
	n := 4
	if !m.ID.IsZero() {
		n++
	}
	if m.Prev != 0 {
		n++
	}
	if m.Placement != 0 {
		n++
	}
	b = appendMapLen(b, n)
	b = appendStr(appendKey(b, "p"), m.Player)
	b = appendUint(appendKey(b, "e"), m.Epoch)
	b = appendUint(appendKey(b, "s"), m.Seq)
	b = appendInt(appendKey(b, "t"), m.Total)
	if !m.ID.IsZero() {
		b = appendReqID(appendKey(b, "id"), m.ID)
	}
	if m.Prev != 0 {
		b = appendUint(appendKey(b, "pv"), m.Prev)
	}
	if m.Placement != 0 {
		b = appendUint(appendKey(b, "pl"), m.Placement)
	}
	return b
}

func appendError(b []byte, m *Error) []byte {
	n := 2
	if !m.Owner.IsZero() {
		n++
	}
	b = appendMapLen(b, n)
	b = appendUint(appendKey(b, "c"), uint64(m.Code))
	b = appendStr(appendKey(b, "m"), m.Msg)
	if !m.Owner.IsZero() {
		b = appendNodeID(appendKey(b, "o"), m.Owner)
	}
	return b
}

func appendWhereReply(b []byte, m *WhereReply) []byte {
	n := 5
	if m.Placement != 0 {
		n++
	}
	if m.Current {
		n++
	}
	if m.OwnerAlive {
		n++
	}
	if m.Absent {
		n++
	}
	if !m.Hint.IsZero() {
		n++
	}
	b = appendMapLen(b, n)
	b = appendUint(appendKey(b, "r"), uint64(m.Role))
	b = appendNodeID(appendKey(b, "o"), m.Owner)
	b = appendNodeID(appendKey(b, "k"), m.Keeper)
	b = appendUint(appendKey(b, "e"), m.Epoch)
	b = appendUint(appendKey(b, "s"), m.Seq)
	if m.Placement != 0 {
		b = appendUint(appendKey(b, "pl"), m.Placement)
	}
	if m.Current {
		b = append(appendKey(b, "cur"), 0xc3)
	}
	if m.OwnerAlive {
		b = append(appendKey(b, "alive"), 0xc3)
	}
	if m.Absent {
		b = append(appendKey(b, "abs"), 0xc3)
	}
	if !m.Hint.IsZero() {
		b = appendNodeID(appendKey(b, "h"), m.Hint)
	}
	return b
}

func appendReqID(b []byte, id ReqID) []byte {
	b = append(b, 0x82)
	b = appendUint(appendKey(b, "o"), id.Origin)
	return appendUint(appendKey(b, "s"), id.Seq)
}

func appendNodeID(b []byte, id NodeID) []byte {
	b = append(b, 0x82)
	b = appendStr(appendKey(b, "n"), id.Name)
	return appendUint(appendKey(b, "b"), id.Boot)
}

// appendMapLen handles only the fixmap form: no message has 16 fields.
func appendMapLen(b []byte, n int) []byte { return append(b, 0x80|byte(n)) }

// appendKey writes a field name, which is always shorter than 32 bytes.
func appendKey(b []byte, k string) []byte { return append(append(b, 0xa0|byte(len(k))), k...) }

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

func appendUint(b []byte, n uint64) []byte {
	switch {
	case n <= math.MaxInt8:
		return append(b, byte(n))
	case n <= math.MaxUint8:
		return append(b, 0xcc, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), n)
}

func appendInt(b []byte, n int64) []byte {
	switch {
	case n >= 0:
		return appendUint(b, uint64(n))
	case n >= -32:
		return append(b, byte(n))
	case n >= math.MinInt8:
		return append(b, 0xd0, byte(n))
	case n >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(n))
	case n >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(n))
}

// decodeFast decodes body into m, a fresh message from New, and reports
// false for a kind it does not decode by hand or a body it does not handle;
// m may then be half filled and must be thrown away.
func decodeFast(body []byte, m Msg) bool {
	r := reader{b: body}
	switch m := m.(type) {
	case *Reward:
		r.reward(m)
	case *RewardReply:
		r.rewardReply(m)
	case *Replicate:
		r.replicate(m)
	case *Ack:
		r.ack(m)
	case *Error:
		r.error(m)
	case *Where:
		r.where(m)
	case *WhereReply:
		r.whereReply(m)
	default:
		return false
	}
	return !r.failed && r.i == len(r.b)
}

// reader reads msgpack from b, from offset i on (an offset rather than a
// shrinking slice: advancing it writes no pointer, so no write barrier).
// The first value it cannot handle sets failed; every read after that
// returns zero values, so the decoders check failed once at the end rather
// than after every field.
type reader struct {
	b      []byte
	i      int
	failed bool
}

// The message decoders follow msgpack's decodeStruct: fields are set in the
// order their keys come, a repeated key overwrites (a nested struct is
// decoded into what is already there), and nil is the zero message.

func (r *reader) reward(m *Reward) {
	n := r.mapLen()
	if n < 0 {
		*m = Reward{}
	}
	for i := 0; i < n && !r.failed; i++ {
		switch string(r.key()) {
		case "p":
			m.Player = r.str()
		case "pts":
			m.Points = r.int()
		case "bad":
			m.NotInt = r.str()
		case "id":
			r.reqID(&m.ID)
		case "age":
			m.Age = r.int()
		default:
			r.skip()
		}
	}
}

func (r *reader) rewardReply(m *RewardReply) {
	n := r.mapLen()
	if n < 0 {
		*m = RewardReply{}
	}
	for i := 0; i < n && !r.failed; i++ {
		switch string(r.key()) {
		case "t":
			m.Total = r.int()
		case "o":
			r.nodeID(&m.Owner)
		case "k":
			r.nodeID(&m.Keeper)
		default:
			r.skip()
		}
	}
}

func (r *reader) replicate(m *Replicate) {
	n := r.mapLen()
	if n < 0 {
		*m = Replicate{}
	}
	for i := 0; i < n && !r.failed; i++ {
		switch string(r.key()) {
		case "p":
			m.Player = r.str()
		case "e":
			m.Epoch = r.uint()
		case "s":
			m.Seq = r.uint()
		case "t":
			m.Total = r.int()
		case "id":
			r.reqID(&m.ID)
		case "pv":
			m.Prev = r.uint()
		case "pl":
			m.Placement = r.uint()
		default:
			r.skip()
		}
	}
}

func (r *reader) ack(*Ack) {
	n := r.mapLen()
	for i := 0; i < n && !r.failed; i++ {
		r.key()
		r.skip()
	}
}

func (r *reader) error(m *Error) {
	n := r.mapLen()
	if n < 0 {
		*m = Error{}
	}
	for i := 0; i < n && !r.failed; i++ {
		switch string(r.key()) {
		case "c":
			m.Code = Code(r.uint()) // msgpack truncates to the field's width too
		case "m":
			m.Msg = r.str()
		case "o":
			r.nodeID(&m.Owner)
		default:
			r.skip()
		}
	}
}

func (r *reader) where(m *Where) {
	n := r.mapLen()
	if n < 0 {
		*m = Where{}
	}
	for i := 0; i < n && !r.failed; i++ {
		switch string(r.key()) {
		case "p":
			m.Player = r.str()
		default:
			r.skip()
		}
	}
}

func (r *reader) whereReply(m *WhereReply) {
	n := r.mapLen()
	if n < 0 {
		*m = WhereReply{}
	}
	for i := 0; i < n && !r.failed; i++ {
		switch string(r.key()) {
		case "r":
			m.Role = Role(r.uint())
		case "o":
			r.nodeID(&m.Owner)
		case "k":
			r.nodeID(&m.Keeper)
		case "e":
			m.Epoch = r.uint()
		case "s":
			m.Seq = r.uint()
		case "pl":
			m.Placement = r.uint()
		case "cur":
			m.Current = r.bool()
		case "alive":
			m.OwnerAlive = r.bool()
		case "abs":
			m.Absent = r.bool()
		case "h":
			r.nodeID(&m.Hint)
		default:
			r.skip()
		}
	}
}

func (r *reader) reqID(id *ReqID) {
	n := r.mapLen()
	if n < 0 {
		*id = ReqID{}
	}
	for i := 0; i < n && !r.failed; i++ {
		switch string(r.key()) {
		case "o":
			id.Origin = r.uint()
		case "s":
			id.Seq = r.uint()
		default:
			r.skip()
		}
	}
}

func (r *reader) nodeID(id *NodeID) {
	n := r.mapLen()
	if n < 0 {
		*id = NodeID{}
	}
	for i := 0; i < n && !r.failed; i++ {
		switch string(r.key()) {
		case "n":
			id.Name = r.str()
		case "b":
			id.Boot = r.uint()
		default:
			r.skip()
		}
	}
}

func (r *reader) fail() { r.failed = true }

// take returns the next n bytes, or nil once the reader failed.
func (r *reader) take(n int) []byte {
	if r.failed || n < 0 || n > len(r.b)-r.i {
		r.fail()
		return nil
	}
	p := r.b[r.i : r.i+n : r.i+n]
	r.i += n
	return p
}

func (r *reader) code() byte {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if p := r.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

// mapLen reads a map header: its number of entries, or -1 for nil. A
// struct may also come as an array, which is left to msgpack.
func (r *reader) mapLen() int {
	switch c := r.code(); {
	case c == 0xc0:
		return -1
	case c >= 0x80 && c <= 0x8f:
		return int(c & 0x0f)
	case c == 0xde:
		return int(r.u16())
	case c == 0xdf:
		return int(r.u32())
	}
	r.fail()
	return 0
}

// bytes reads a str or bin value (msgpack takes either for a string and
// for a key); nil reads as empty.
func (r *reader) bytes() []byte {
	c := r.code()
	var n int
	switch {
	case c == 0xc0:
		return nil
	case c >= 0xa0 && c <= 0xbf:
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n = int(r.code())
	case c == 0xda || c == 0xc5:
		n = int(r.u16())
	case c == 0xdb || c == 0xc6:
		n = int(r.u32())
	default:
		r.fail()
		return nil
	}
	return r.take(n)
}

func (r *reader) key() []byte { return r.bytes() }

func (r *reader) str() string { return string(r.bytes()) }

// int reads any integer as msgpack's DecodeInt64 does: a uint64 over
// MaxInt64 wraps around; nil is 0.
func (r *reader) int() int64 {
	c := r.code()
	switch {
	case c <= 0x7f || c >= 0xe0:
		return int64(int8(c))
	case c == 0xc0:
		return 0
	}
	switch c {
	case 0xcc:
		return int64(r.code())
	case 0xcd:
		return int64(r.u16())
	case 0xce:
		return int64(r.u32())
	case 0xcf, 0xd3:
		return int64(r.u64())
	case 0xd0:
		return int64(int8(r.code()))
	case 0xd1:
		return int64(int16(r.u16()))
	case 0xd2:
		return int64(int32(r.u32()))
	}
	r.fail()
	return 0
}

// uint reads any integer as msgpack's DecodeUint64 does, which comes to
// the same bits as int: a negative number is converted, not refused.
func (r *reader) uint() uint64 { return uint64(r.int()) }

func (r *reader) bool() bool {
	switch r.code() {
	case 0xc0, 0xc2:
		return false
	case 0xc3:
		return true
	}
	r.fail()
	return false
}

// skip passes over one value of any type, as msgpack does for an unknown
// field. It counts the values still to pass rather than recursing.
func (r *reader) skip() {
	for pending := 1; pending > 0 && !r.failed; pending-- {
		c := r.code()
		switch {
		case c <= 0x7f || c >= 0xe0: // fixint
		case c <= 0x8f: // fixmap
			pending += 2 * int(c&0x0f)
		case c <= 0x9f: // fixarray
			pending += int(c & 0x0f)
		case c <= 0xbf: // fixstr
			r.take(int(c & 0x1f))
		default:
			n, size, err := lengthOf(c, r.b[r.i:])
			if err != nil {
				r.fail()
				return
			}
			r.take(size)
			switch c {
			case 0xdc, 0xdd:
				pending += n
			case 0xde, 0xdf:
				pending += 2 * n
			default:
				r.take(n)
			}
		}
	}
}
