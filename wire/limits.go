package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Limits on what a frame may carry. Every frame is checked against them
// before it is decoded (the msgpack structure) and after (field lengths),
// on both ends: a sender refuses to encode a message that breaks one, so a
// bug shows up as a local error rather than as a peer closing the link.
// They are far above what appnode sends, so only a broken or hostile peer
// meets them.
const (
	// MaxNodeName bounds a node name, the one limit everywhere
	// (names.ValidateName, the name service, the wire): 255 bytes, as
	// epmd allows.
	MaxNodeName = 255
	// MaxPlayer bounds a player name on the wire. The replica layer
	// applies its own, tighter limit (replica.MaxPlayerLen) with an error
	// a person can read; this one only keeps a peer from making a node
	// hold or log megabytes per name.
	MaxPlayer = 1024
	// MaxNotInt bounds the text of non-integer points, which the sender
	// already cuts to the player limit.
	MaxNotInt = 1024
	// MaxRecent bounds ClaimReply.Recent and Adopt.Recent, the applied
	// requests a player remembers: the replica keeps 256.
	MaxRecent = 256
	// MaxRoster bounds a roster's members and its dead: appnode is made
	// for clusters of a few to a few dozen nodes.
	MaxRoster = 256
	// MaxText bounds a console line (Command.Line) and an error message.
	MaxText = 64 << 10
	// MaxRefusal bounds HelloReply.Refused, which a stranger may send.
	MaxRefusal = 1024
	// NonceLen is the length of the handshake nonces, ProofLen that of
	// its proofs (HMAC-SHA256).
	NonceLen = 32
	ProofLen = 32

	// Structural limits, checked on the raw msgpack before decoding.
	// maxArray is the longest list any message has (Recent, a page of
	// players); maxMap
	// covers the widest struct with room for fields added later;
	// maxDepth covers the deepest nesting (Adopt > Recent > Applied >
	// ReqID is 4) with room to spare.
	maxArray = max(MaxRecent, MaxPage)
	maxMap   = 64
	maxDepth = 8
)

var (
	// ErrLimit: a message breaks one of the limits above.
	ErrLimit = errors.New("message exceeds a protocol limit")
	// ErrMalformed: a frame body is not well-formed msgpack within the
	// structural limits.
	ErrMalformed = errors.New("malformed message body")
)

// checkBody walks the msgpack in b without decoding or allocating, and
// refuses it unless it is exactly one value whose containers declare no
// more elements than maxArray/maxMap, than the bytes left could hold (each
// takes at least one), and nest no deeper than maxDepth. This has to come
// before msgpack.Unmarshal: vmihailenco/msgpack v5.4.1 sizes a slice from
// its declared length before reading any element (its alloc limit check is
// inverted in decodeSliceValue), so a 20-byte frame declaring 2^32 list
// entries would make a node try to allocate about 100 GB; and it skips
// unknown fields recursively, so a frame of nested one-element arrays costs
// a stack frame per byte.
func checkBody(b []byte) error {
	var stack [maxDepth + 1]int // values still to read at each depth
	sp := 0
	stack[0] = 1
	i := 0
	need := func(n int) error {
		if n < 0 || n > len(b)-i {
			return fmt.Errorf("%w: value at byte %d runs past the end", ErrMalformed, i)
		}
		return nil
	}
	for sp >= 0 {
		if stack[sp] == 0 {
			sp--
			continue
		}
		stack[sp]--
		if i >= len(b) {
			return fmt.Errorf("%w: truncated", ErrMalformed)
		}
		c := b[i]
		i++
		var skip, elems int // bytes to skip; elements of a container
		container := false
		switch {
		case c <= 0x7f || c >= 0xe0: // fixint
		case c <= 0x8f: // fixmap
			elems, container = 2*int(c&0x0f), true
		case c <= 0x9f: // fixarray
			elems, container = int(c&0x0f), true
		case c <= 0xbf: // fixstr
			skip = int(c & 0x1f)
		default:
			n, size, err := lengthOf(c, b[i:])
			if err != nil {
				return fmt.Errorf("%w at byte %d", err, i-1)
			}
			i += size
			switch c {
			case 0xdc, 0xdd: // array 16/32
				if n > maxArray {
					return fmt.Errorf("%w: list of %d entries, limit %d", ErrMalformed, n, maxArray)
				}
				elems, container = n, true
			case 0xde, 0xdf: // map 16/32
				if n > maxMap {
					return fmt.Errorf("%w: map of %d entries, limit %d", ErrMalformed, n, maxMap)
				}
				elems, container = 2*n, true
			default:
				skip = n
			}
		}
		if container {
			if err := need(elems); err != nil {
				return err
			}
			if elems > 0 {
				if sp+1 > maxDepth {
					return fmt.Errorf("%w: nested deeper than %d", ErrMalformed, maxDepth)
				}
				sp++
				stack[sp] = elems
			}
			continue
		}
		if err := need(skip); err != nil {
			return err
		}
		i += skip
	}
	if i != len(b) {
		return fmt.Errorf("%w: %d bytes after the message", ErrMalformed, len(b)-i)
	}
	return nil
}

// lengthOf reads what follows type byte c (other than the fix* forms): it
// returns n, the payload length in bytes or, for arrays and maps, the
// number of entries, and size, the bytes of length (and ext type) read.
func lengthOf(c byte, b []byte) (n, size int, err error) {
	fixed := func(k int) (int, int, error) { return k, 0, nil }
	varLen := func(width, extra int) (int, int, error) {
		if len(b) < width+extra {
			return 0, 0, fmt.Errorf("%w: truncated length", ErrMalformed)
		}
		var v uint64
		switch width {
		case 1:
			v = uint64(b[0])
		case 2:
			v = uint64(binary.BigEndian.Uint16(b))
		case 4:
			v = uint64(binary.BigEndian.Uint32(b))
		}
		if v > uint64(MaxFrame) {
			return 0, 0, fmt.Errorf("%w: length %d", ErrMalformed, v)
		}
		return int(v), width + extra, nil
	}
	switch c {
	case 0xc0, 0xc2, 0xc3: // nil, false, true
		return fixed(0)
	case 0xcc, 0xd0: // uint8, int8
		return fixed(1)
	case 0xcd, 0xd1: // uint16, int16
		return fixed(2)
	case 0xca, 0xce, 0xd2: // float32, uint32, int32
		return fixed(4)
	case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
		return fixed(8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1..16: type byte + data
		return fixed(1 + 1<<(c-0xd4))
	case 0xc4, 0xd9: // bin8, str8
		return varLen(1, 0)
	case 0xc5, 0xda: // bin16, str16
		return varLen(2, 0)
	case 0xc6, 0xdb: // bin32, str32
		return varLen(4, 0)
	case 0xc7: // ext8: length, type
		return varLen(1, 1)
	case 0xc8:
		return varLen(2, 1)
	case 0xc9:
		return varLen(4, 1)
	case 0xdc, 0xde: // array16, map16
		return varLen(2, 0)
	case 0xdd, 0xdf: // array32, map32
		return varLen(4, 0)
	}
	return 0, 0, fmt.Errorf("%w: invalid type byte 0x%02x", ErrMalformed, c)
}

// Validate checks a message against the field limits above. Decode calls
// it on everything it returns, and FrameWriter on everything it sends.
//
// The checks are grouped by message family, one helper each, so that a
// family's limits read together; the limits value lives on this stack
// frame and is passed by pointer, so validating allocates nothing unless
// a limit is broken.
func Validate(m Msg) error {
	l := limits{m: m}
	switch m.(type) {
	case *Hello, *Challenge, *HelloProof, *HelloReply:
		l.handshake()
	case *Error, *Reward, *RewardReply, *Where, *WhereReply, *Create, *Claim, *ClaimReply,
		*Replicate, *Adopt, *Handoff, *KeeperGone:
		l.players()
	case *DeclaredDead, *Prepare, *Promise, *Accept, *Accepted, *Decided, *Reach, *JoinReply:
		l.membership()
	case *Command, *PlayersPage, *PlayersPageReply, *NodeInfoReply:
		l.admin()
	}
	return l.err
}

// limits collects the first limit a message breaks.
type limits struct {
	m   Msg
	err error
}

func (l *limits) check(field string, n, max int) {
	if l.err == nil && n > max {
		l.err = fmt.Errorf("%s: %s is %d long, limit %d: %w", l.m.Kind(), field, n, max, ErrLimit)
	}
}

func (l *limits) exact(field string, n, want int) {
	if l.err == nil && n != want {
		l.err = fmt.Errorf("%s: %s is %d bytes, want %d: %w", l.m.Kind(), field, n, want, ErrLimit)
	}
}

func (l *limits) node(field string, id NodeID) { l.check(field, len(id.Name), MaxNodeName) }

func (l *limits) player(p string) { l.check("player", len(p), MaxPlayer) }

func (l *limits) roster(field string, r Roster) {
	l.check(field+" members", len(r.Members), MaxRoster)
	l.check(field+" dead", len(r.Dead), MaxRoster)
	for _, id := range r.Members {
		l.node(field+" member", id)
	}
	for _, id := range r.Dead {
		l.node(field+" dead", id)
	}
}

// handshake checks the messages that open a connection.
func (l *limits) handshake() {
	switch m := l.m.(type) {
	case *Hello:
		l.node("from", m.From)
		l.check("to", len(m.To), MaxNodeName)
		// The nonce may be missing from a Hello of another version,
		// which is refused for its version, not for this.
		l.check("nonce", len(m.Nonce), NonceLen)
	case *Challenge:
		l.node("node", m.Node)
		l.exact("nonce", len(m.Nonce), NonceLen)
	case *HelloProof:
		l.exact("proof", len(m.Proof), ProofLen)
	case *HelloReply:
		l.node("node", m.Node)
		l.check("refusal", len(m.Refused), MaxRefusal)
		if len(m.Proof) != 0 {
			l.exact("proof", len(m.Proof), ProofLen)
		}
	}
}

// players checks the requests and replies about one player's total and
// its copies (and the error any request may get).
func (l *limits) players() {
	switch m := l.m.(type) {
	case *Error:
		l.check("message", len(m.Msg), MaxText)
		l.node("owner", m.Owner)
	case *Reward:
		l.player(m.Player)
		l.check("points text", len(m.NotInt), MaxNotInt)
	case *RewardReply:
		l.node("owner", m.Owner)
		l.node("keeper", m.Keeper)
	case *Where:
		l.player(m.Player)
	case *WhereReply:
		l.node("owner", m.Owner)
		l.node("keeper", m.Keeper)
		l.node("hint", m.Hint)
	case *Create:
		l.player(m.Player)
		l.node("claimant", m.Claimant)
	case *Claim:
		l.player(m.Player)
		l.node("claimant", m.Claimant)
	case *ClaimReply:
		l.node("owner", m.Owner)
		l.check("recent", len(m.Recent), MaxRecent)
	case *Replicate:
		l.player(m.Player)
	case *Adopt:
		l.player(m.Player)
		l.node("owner", m.Owner)
		l.check("recent", len(m.Recent), MaxRecent)
	case *Handoff:
		l.player(m.Player)
	case *KeeperGone:
		l.player(m.Player)
	}
}

// membership checks the messages that agree on and spread the roster.
func (l *limits) membership() {
	switch m := l.m.(type) {
	case *DeclaredDead:
		l.node("target", m.Target)
	case *Prepare:
		l.roster("base", m.Base)
		l.check("ballot", len(m.Ballot.Name), MaxNodeName)
	case *Promise:
		l.check("ballot", len(m.Promised.Name)+len(m.Accepted.Name), 2*MaxNodeName)
		l.roster("value", m.Value)
		l.roster("latest", m.Latest)
	case *Accept:
		l.check("ballot", len(m.Ballot.Name), MaxNodeName)
		l.roster("value", m.Value)
		l.roster("base", m.Base)
	case *Accepted:
		l.check("ballot", len(m.Promised.Name), MaxNodeName)
		l.roster("latest", m.Latest)
	case *Decided:
		l.roster("roster", m.Roster)
	case *Reach:
		l.node("target", m.Target)
	case *JoinReply:
		l.roster("roster", m.Roster)
		l.check("why", len(m.Why), MaxText)
	}
}

// admin checks the operator's messages: commands, listings, node info.
func (l *limits) admin() {
	switch m := l.m.(type) {
	case *Command:
		l.check("line", len(m.Line), MaxText)
	case *PlayersPage:
		l.player(m.Cursor)
		if l.err == nil && (m.Limit < 0 || m.Limit > MaxPage) {
			l.err = fmt.Errorf("%s: limit %d is outside 0..%d: %w", m.Kind(), m.Limit, MaxPage, ErrLimit)
		}
	case *PlayersPageReply:
		l.check("players", len(m.Players), MaxPage)
		l.player(m.Next)
		for _, e := range m.Players {
			l.player(e.Player)
			l.check("keeper", len(e.Keeper), MaxNodeName)
		}
	case *NodeInfoReply:
		l.node("node", m.Node)
		l.check("http", len(m.HTTP), MaxNodeName)
	}
}
