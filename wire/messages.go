// Package wire holds every message appnode nodes exchange, and the framing
// that carries them over TCP. Read this file top to bottom to know the whole
// protocol: a connection starts with the handshake (Hello, Challenge,
// HelloProof, HelloReply: both sides prove they know the cluster's cookie),
// then carries requests and replies matched by id. Each message is a plain struct with msgpack tags;
// fields are only ever added (never renumbered or retyped), and Version is
// bumped when a change is not backwards compatible.
package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Version is the protocol version a node speaks. A peer that announces a
// different version is refused in the handshake. Version 2 added the
// cookie proofs to the handshake and the keepalive frame; version 3 the
// agreed roster (Prepare to JoinReply), a keeper that refuses a Replicate
// not built on its copy (Prev, KeeperState) and the age of a re-sent
// reward; version 4 numbers keeper placements (Adopt, Replicate and
// WhereReply.Placement) and lets a keeper holding its owner's current copy
// take the player over alone (WhereReply.Current). The fields are
// compatible on the wire, but the rule is not: a version 3 node orders
// copies by update before placement and could restore a copy that a
// version 4 keeper has superseded alone, so the two do not mix.
const Version = 4

// Kind names the message carried by a frame. The numbers are part of the
// protocol: never reuse one.
type Kind uint8

const (
	KindHello      Kind = 1 // dialer -> acceptor, first frame on a connection
	KindHelloReply Kind = 2 // acceptor -> dialer: the verdict, last handshake frame (or an early refusal)
	KindError      Kind = 3 // reply: the request failed (*Error)
	KindChallenge  Kind = 4 // acceptor -> dialer: its nonce, second handshake frame
	KindHelloProof Kind = 5 // dialer -> acceptor: proof it knows the cookie, third handshake frame
	KindKeepalive  Kind = 6 // dialer -> acceptor, id 0, no reply: the idle link is still wanted

	KindReward      Kind = 10 // any node -> owner: apply points (RewardReply)
	KindRewardReply Kind = 11
	KindWhere       Kind = 12 // any node -> any node: what do you hold for a player (WhereReply)
	KindWhereReply  Kind = 13
	KindCreate      Kind = 14 // claimant -> arbiter: register a brand new player (ClaimReply)
	KindClaim       Kind = 15 // claimant -> keeper: take ownership of an existing player (ClaimReply)
	KindClaimReply  Kind = 16
	KindReplicate   Kind = 17 // owner -> keeper: new state, acknowledged before any answer (Ack)
	KindAdopt       Kind = 18 // owner -> node: become (or stay) this player's keeper (Ack)
	KindAck         Kind = 19
	KindHandoff     Kind = 20 // leaving owner -> keeper: take over as owner (Ack)
	KindKeeperGone  Kind = 21 // leaving keeper -> owner: place your keeper elsewhere (Ack)
	// 22 is reserved: a Release message was planned and never sent.
	KindPing         Kind = 23 // any -> any: are you the incarnation I think? (Ack)
	KindDeclaredDead Kind = 24 // majority node -> an incarnation it declared failed: rejoin clean (Ack)
	KindKeeperState  Kind = 29 // keeper -> owner: reply to a Replicate that does not build on the copy
	KindRegister     Kind = 32 // any node -> arbiter: these players exist; with Done, that is all of them (Ack)

	KindPlayersPage      Kind = 25 // any -> node: a page of the players whose primary runs there (PlayersPageReply)
	KindPlayersPageReply Kind = 26
	KindNodeInfo         Kind = 27 // any -> node: what it holds and how it sees the cluster (NodeInfoReply)
	KindNodeInfoReply    Kind = 28

	KindCommand      Kind = 30 // `appnode rpc` -> node: run one console line (CommandReply)
	KindCommandReply Kind = 31

	// The roster: the membership quorum is counted against, changed only
	// by agreement of a majority of the roster before the change (one
	// Paxos instance per change).
	KindPrepare    Kind = 40 // proposer -> roster member: promise ballot for the next change (Promise)
	KindPromise    Kind = 41
	KindAccept     Kind = 42 // proposer -> roster member: accept this next roster (Accepted)
	KindAccepted   Kind = 43
	KindDecided    Kind = 44 // proposer -> everyone: this roster was agreed (Ack)
	KindReach      Kind = 45 // proposer -> roster member: can you reach this node? (ReachReply)
	KindReachReply Kind = 46
	KindJoinAsk    Kind = 47 // node outside a roster -> a member: admit me, or (Probe) show me your roster (JoinReply)
	KindJoinReply  Kind = 48
)

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

var kindNames = map[Kind]string{
	KindHello: "hello", KindHelloReply: "hello-reply", KindError: "error",
	KindChallenge: "challenge", KindHelloProof: "hello-proof", KindKeepalive: "keepalive",
	KindReward: "reward", KindRewardReply: "reward-reply",
	KindWhere: "where", KindWhereReply: "where-reply",
	KindCreate: "create", KindClaim: "claim", KindClaimReply: "claim-reply",
	KindReplicate: "replicate", KindAdopt: "adopt", KindAck: "ack",
	KindHandoff: "handoff", KindKeeperGone: "keeper-gone",
	KindPing: "ping", KindDeclaredDead: "declared-dead",
	KindPlayersPage: "players-page", KindPlayersPageReply: "players-page-reply",
	KindNodeInfo: "node-info", KindNodeInfoReply: "node-info-reply",
	KindKeeperState: "keeper-state", KindRegister: "register",
	KindCommand: "command", KindCommandReply: "command-reply",
	KindPrepare: "prepare", KindPromise: "promise", KindAccept: "accept", KindAccepted: "accepted",
	KindDecided: "decided", KindReach: "reach", KindReachReply: "reach-reply",
	KindJoinAsk: "join-ask", KindJoinReply: "join-reply",
}

// NodeID is one incarnation of a node: its name and the boot id it drew at
// start. A node restarted under the same name is a different NodeID, so
// everything addressed to the old incarnation fails rather than reaching a
// process that has lost its memory (Erlang's "creation").
type NodeID struct {
	Name string `msgpack:"n"`
	Boot uint64 `msgpack:"b"`
}

func (id NodeID) IsZero() bool   { return id.Name == "" }
func (id NodeID) String() string { return id.Name }

// Msg is any message that travels in a frame.
type Msg interface{ Kind() Kind }

// The handshake. Both ends prove they know the cluster's cookie without
// sending it, and the acceptor reads no request before the dialer's proof
// checks out:
//
//	dialer -> acceptor  Hello       version, names, dialer's nonce
//	acceptor -> dialer  Challenge   acceptor's incarnation and nonce
//	dialer -> acceptor  HelloProof  HMAC(key, "dialer", transcript)
//	acceptor -> dialer  HelloReply  verdict, HMAC(key, "acceptor", transcript, verdict)
//
// The transcript holds both nonces, both incarnations, the dialer's
// expected name and the client flag, so a proof is good for one connection
// and one direction only: replayed or reflected, it fails. The dialer
// proves first, so a stranger who connects learns nothing computed from
// the key. The acceptor may answer the Hello with a HelloReply instead of
// a Challenge to refuse at once (version, wrong name); such a refusal is
// not authenticated and only ever ends the connection. The key is derived
// from the cookie (package node/cookie); see node/transport for the exact
// transcript.

// Hello opens every connection. Client is set by `appnode rpc`, which is not
// a cluster member and must not be treated as one.
type Hello struct {
	Version int    `msgpack:"v"`
	From    NodeID `msgpack:"from"`
	To      string `msgpack:"to"` // the name the dialer expects; a mismatch is refused
	Client  bool   `msgpack:"client,omitempty"`
	Nonce   []byte `msgpack:"nonce,omitempty"` // NonceLen fresh random bytes
}

// Challenge answers a Hello the acceptor is willing to authenticate.
type Challenge struct {
	Node  NodeID `msgpack:"node"`
	Nonce []byte `msgpack:"nonce"` // NonceLen fresh random bytes
}

// HelloProof is the dialer's proof that it knows the cookie.
type HelloProof struct {
	Proof []byte `msgpack:"proof"`
}

// HelloReply accepts or refuses a connection. Fenced tells the dialer that
// the acceptor saw this incarnation declared failed: the dialer must drop
// everything it holds and come back as a new incarnation. Proof is the
// acceptor's proof that it knows the cookie; it covers Fenced. A reply
// without a valid proof is a refusal, whatever else it says.
type HelloReply struct {
	Version int    `msgpack:"v"`
	Node    NodeID `msgpack:"node"`
	Fenced  bool   `msgpack:"fenced,omitempty"`
	Refused string `msgpack:"refused,omitempty"`
	Proof   []byte `msgpack:"proof,omitempty"`
}

// Keepalive is sent by the dialer on a link that carried nothing for a
// while, so that the acceptor can tell a quiet member from a dead or
// silent one (see transport's idle limit). It has no reply.
type Keepalive struct{}

// ReqID names one reward as its entry node sent it: Origin is that node's
// boot id, Seq counts its rewards. A reward re-sent after a broken link
// carries the same ReqID, and the primary answers it from its record of
// recently applied requests instead of applying it twice.
type ReqID struct {
	Origin uint64 `msgpack:"o"`
	Seq    uint64 `msgpack:"s"`
}

func (r ReqID) IsZero() bool { return r.Origin == 0 && r.Seq == 0 }

// clientOrigin marks the ids that clients name (ClientReqID). A node's own
// Origin is its boot id, a time in nanoseconds, which stays below 2^63.
const clientOrigin = 1 << 63

// ClientReqID names a request after a key its client chose (an HTTP
// Idempotency-Key, `appnode rpc --id`): the same key gives the same id on
// every node, so a client that retries after losing an answer, even through
// another node, is answered instead of rewarded twice. The key is hashed;
// ids of different keys collide with odds of about 2^-127.
func ClientReqID(key string) ReqID {
	h := sha256.Sum256([]byte("appnode client request\x00" + key))
	return ReqID{
		Origin: binary.BigEndian.Uint64(h[0:8]) | clientOrigin,
		Seq:    binary.BigEndian.Uint64(h[8:16]),
	}
}

// FromClient says whether r was named by a client (ClientReqID).
func (r ReqID) FromClient() bool { return r.Origin&clientOrigin != 0 }

// Applied records a request that was applied and the total it produced.
type Applied struct {
	ID    ReqID `msgpack:"id"`
	Total int64 `msgpack:"t"`
}

// Reward asks the owner of Player to add Points. NotInt carries the term a
// person typed when it was not an integer: the primary crashes on it, as the
// Erlang original does, and its supervisor restarts it.
//
// Age is zero on a request's first attempt; a re-send carries how long
// before it the entry node first sent it (nanoseconds, on the entry
// node's clock). The primary answers a re-send from its record of applied
// requests, and refuses it ("outcome unknown") when that record does not
// reach back to when it was first sent: the request may have been applied
// and forgotten since (see Applied and Adopt.Since).
type Reward struct {
	Player string `msgpack:"p"`
	Points int64  `msgpack:"pts"`
	NotInt string `msgpack:"bad,omitempty"`
	ID     ReqID  `msgpack:"id,omitempty"`
	Age    int64  `msgpack:"age,omitempty"`
}

// RewardReply is the new total. Owner and Keeper say where the player's
// primary and keeper were when it was applied (the HTTP front door answers
// with them); a node of an older build leaves them out.
type RewardReply struct {
	Total  int64  `msgpack:"t"`
	Owner  NodeID `msgpack:"o,omitempty"`
	Keeper NodeID `msgpack:"k,omitempty"`
}

// Where asks a node what it holds for Player. It is how a node with no
// route for a player finds its owner or its keeper.
type Where struct {
	Player string `msgpack:"p"`
}

// Role is what a node holds for one player.
type Role uint8

const (
	RoleNone    Role = 0
	RolePrimary Role = 1
	RoleKeeper  Role = 2
)

type WhereReply struct {
	Role   Role   `msgpack:"r"`
	Owner  NodeID `msgpack:"o"`
	Keeper NodeID `msgpack:"k"`
	Epoch  uint64 `msgpack:"e"`
	Seq    uint64 `msgpack:"s"`
	// Placement is the keeper copy's Adopt.Placement: of two copies at
	// the same epoch and sequence number, the later placement's is the
	// keeper.
	Placement uint64 `msgpack:"pl,omitempty"`
	// Current says the answering keeper holds its owner's current copy
	// (the owner replicated to it at its epoch and placement): should the
	// owner be gone, no other copy can be fresher, and a claim there needs
	// no survey of every member first. Never set by a node that predates it.
	Current bool `msgpack:"cur,omitempty"`
	// OwnerAlive is the answering keeper's view of its owner. A keeper
	// whose owner is dead is the place to claim the player.
	OwnerAlive bool `msgpack:"alive,omitempty"`
	// Absent, with Role None, is the player's arbiter vouching that no
	// member holds a copy: its directory has heard from every member of
	// its roster (Register) and does not list the player. A creator may
	// then create it without asking every member (Create.Fast).
	Absent bool `msgpack:"abs,omitempty"`
	// Hint, with Role None, is where the answering arbiter's directory
	// last heard that a copy of the player is kept (Register.Kept): the
	// node to ask next. Only that node's own answer is trusted.
	Hint NodeID `msgpack:"h,omitempty"`
}

// Create asks the player's arbiter (the first live node in its placement
// order) to register a brand new player owned by Claimant. The arbiter
// becomes its keeper; two racing creators are serialised there.
//
// With Fast, the creator has not asked every member whether the player
// exists: the arbiter grants only if its directory vouches that it does not
// (see WhereReply.Absent) under roster Epoch, the creator's; else it
// answers AskAll.
type Create struct {
	Player   string `msgpack:"p"`
	Claimant NodeID `msgpack:"c"`
	Fast     bool   `msgpack:"f,omitempty"`
	Epoch    uint64 `msgpack:"re,omitempty"`
}

// Claim asks a keeper to make Claimant the player's owner. The keeper grants
// it only when its current owner is dead (or is Claimant itself, restarting
// a crashed primary); the epoch then goes up, which fences the old owner.
type Claim struct {
	Player   string `msgpack:"p"`
	Claimant NodeID `msgpack:"c"`
}

// ClaimReply either grants ownership with the state to start from, or names
// the live owner to forward to.
type ClaimReply struct {
	Granted bool      `msgpack:"g"`
	Owner   NodeID    `msgpack:"o"`
	Epoch   uint64    `msgpack:"e"`
	Seq     uint64    `msgpack:"s"`
	Total   int64     `msgpack:"t"`
	Recent  []Applied `msgpack:"rc,omitempty"`
	Since   int64     `msgpack:"since,omitempty"` // as Adopt.Since
	// AskAll answers a Create.Fast that the arbiter cannot vouch for: the
	// creator must ask every member first, then create as usual.
	AskAll bool `msgpack:"all,omitempty"`
}

// Replicate carries a primary's new state to its keeper. The keeper applies
// it only from its recorded owner at its recorded epoch, and only on top of
// the state it was computed from: Prev is the Seq of that state, the
// primary's last acknowledged one. A keeper whose copy is at another Seq
// (an earlier update reached it but its ack was lost) refuses it with a
// KeeperState, so that no update overwrites one the keeper holds and
// remembers the request of.
type Replicate struct {
	Player string `msgpack:"p"`
	Epoch  uint64 `msgpack:"e"`
	Seq    uint64 `msgpack:"s"`
	Total  int64  `msgpack:"t"`
	ID     ReqID  `msgpack:"id,omitempty"` // the reward this update applies
	Prev   uint64 `msgpack:"pv,omitempty"`
	// Placement is the primary's keeper placement (Adopt.Placement). A
	// keeper that receives its own copy's Placement knows it is the
	// owner's keeper, not a copy left behind: should the owner fail, it
	// may take the player over without asking every member first.
	Placement uint64 `msgpack:"pl,omitempty"`
}

// KeeperState answers a Replicate whose Prev is not the keeper copy's Seq:
// the copy's state, and the request that produced it. The primary takes
// it as its own (that request was applied: its ack was lost) and applies
// its reward again on top.
type KeeperState struct {
	Seq   uint64  `msgpack:"s"`
	Total int64   `msgpack:"t"`
	Last  Applied `msgpack:"l"`
}

// Adopt makes the receiver the keeper of Player for Owner at Epoch. Used
// when a player is created, when a keeper is lost with its node, and when a
// keeper moves.
//
// Placement numbers the owner's attempts to place a keeper within Epoch;
// an attempt whose reply was lost may have left a copy behind, holding an
// update the owner never applied, and the owner's next attempt, elsewhere,
// then builds on the state without it. The two copies can reach the same
// Seq with different totals; the later Placement is the owner's keeper.
// A copy is replaced by a later placement of its owner whatever its Seq.
//
// Recent is the player's record of the requests applied to it, oldest
// first. Since says how far back it is complete: every request applied
// less than Since nanoseconds before the message was sent is in it (zero:
// every request ever applied is). The receiver counts that from when it
// received the message, which only shortens it.
type Adopt struct {
	Player string    `msgpack:"p"`
	Owner  NodeID    `msgpack:"o"`
	Epoch  uint64    `msgpack:"e"`
	Seq    uint64    `msgpack:"s"`
	Total  int64     `msgpack:"t"`
	Recent []Applied `msgpack:"rc,omitempty"`
	Since  int64     `msgpack:"since,omitempty"`
	// Placement: see above. Zero from a node that predates it.
	Placement uint64 `msgpack:"pl,omitempty"`
}

// Handoff is sent by an owner that is leaving gracefully to its keeper:
// become the owner (restoring from your own copy) and place a new keeper on
// a node other than Leaving.
type Handoff struct {
	Player string `msgpack:"p"`
	Epoch  uint64 `msgpack:"e"`
}

// KeeperGone is sent by a keeper that is leaving gracefully to the owner:
// place a new keeper on a node other than the sender.
type KeeperGone struct {
	Player string `msgpack:"p"`
	Epoch  uint64 `msgpack:"e"`
}

// Register tells a node which of the players the sender holds (a primary or
// a keeper copy) it arbitrates under roster Epoch: the first member in
// their placement order. Each node sends it to every member when it learns
// a roster, in pages of at most MaxRegister bytes of names, the last with
// Done. An arbiter that has a Done from every member of its roster, and
// records every player it lets be created, knows every player it
// arbitrates: of any other it can say that no member holds a copy
// (WhereReply.Absent), which makes a creation cost the same few messages
// however large the cluster (Orleans' grain directory, partitioned the
// same way). The answer is an Ack.
//
// Kept marks, by index into Players, those the sender keeps a copy of.
// The arbiter remembers where each copy is and names it when asked about
// the player (WhereReply.Hint): once the cluster has grown, a keeper may
// no longer be among the first two in its player's placement order, where
// a node looking for the player asks first. A node that adopts a copy
// outside those two sends its arbiter a one-player Register without Done.
// Older nodes send no Kept, and ignore it.
type Register struct {
	Epoch   uint64   `msgpack:"e"`
	Players []string `msgpack:"p,omitempty"`
	Done    bool     `msgpack:"d,omitempty"`
	Kept    []uint32 `msgpack:"k,omitempty"`
}

// MaxRegister bounds the bytes of player names in one Register, well under
// MaxFrame.
const MaxRegister = 256 << 10

// Ping checks that the receiver is the incarnation the sender addressed;
// the transport's handshake does the real work (wire.ErrGone otherwise).
type Ping struct{}

// DeclaredDead tells a process that the cluster declared its incarnation
// Target failed while it was paused or cut off, and that it must drop what
// it holds and rejoin. It is sent when such an incarnation shows up alive
// again in the gossip, so that it learns even if it never calls anyone.
type DeclaredDead struct {
	Target NodeID `msgpack:"t"`
}

type Ack struct{}

// Roster is the membership a cluster agreed on: quorum is counted against
// its Members, and only it says who is dead. Each change is decided by a
// majority of the roster before it (the Paxos instance for slot Epoch+1
// has the Members of the roster at Epoch as its acceptors), so two sides
// of a partition can never both change it.
type Roster struct {
	Cluster uint64   `msgpack:"c"` // drawn at random by the node that started the cluster
	Epoch   uint64   `msgpack:"e"` // how many changes were decided; 1 for a new cluster
	Members []NodeID `msgpack:"m"` // sorted by name, one incarnation per name
	// Dead holds, per name, the newest incarnation removed: that one and
	// every older boot of the name are fenced.
	Dead []NodeID `msgpack:"d,omitempty"`
}

// Ballot orders the proposals for one slot: N first, then the proposer's
// name, so no two proposers ever use the same ballot.
type Ballot struct {
	N    uint64 `msgpack:"n"`
	Name string `msgpack:"p"`
}

// Prepare asks a roster member to promise Ballot for slot Slot (the change
// after the roster at Slot-1, which it carries as Base, so that a member
// that missed that decision learns it).
type Prepare struct {
	Slot   uint64 `msgpack:"s"`
	Ballot Ballot `msgpack:"b"`
	Base   Roster `msgpack:"base"`
}

// Promise answers a Prepare. OK: the member promised, and tells the value
// it accepted for the slot before, if any (Accepted non-zero). Not OK:
// Promised is the higher ballot it promised. Latest, if its Epoch is at
// least the slot, is a decided roster the proposer did not know.
type Promise struct {
	OK       bool   `msgpack:"ok,omitempty"`
	Promised Ballot `msgpack:"pr"`
	Accepted Ballot `msgpack:"ab"`
	Value    Roster `msgpack:"v"`
	Latest   Roster `msgpack:"l"`
}

// Accept asks a roster member to accept Value as the roster of slot Slot
// under Ballot.
type Accept struct {
	Slot   uint64 `msgpack:"s"`
	Ballot Ballot `msgpack:"b"`
	Value  Roster `msgpack:"v"`
	Base   Roster `msgpack:"base"`
}

// Accepted answers an Accept, as Promise answers a Prepare.
type Accepted struct {
	OK       bool   `msgpack:"ok,omitempty"`
	Promised Ballot `msgpack:"pr"`
	Latest   Roster `msgpack:"l"`
}

// Decided tells a node that Roster was agreed.
type Decided struct {
	Roster Roster `msgpack:"r"`
}

// Reach asks a roster member whether it can reach Target itself. A
// proposer gathers this before it proposes to remove a member it cannot
// reach: a refused or silent link is no proof of death (a firewall rule, a
// one-way fault), so a member leaves only when most of the roster cannot
// reach it.
type Reach struct {
	Target NodeID `msgpack:"t"`
}

type ReachReply struct {
	Reachable bool `msgpack:"r,omitempty"`
}

// JoinAsk is how a node gets into a cluster: a new node asks a member of
// the cluster it chose, a restarted one a member of the cluster it was in.
// The member answers with its roster and, unless Probe, proposes the
// asker's admission (OK) or says why not. A new node first probes the
// nodes it reaches, to choose: a cluster that already has members, else
// the new node with the smallest name, which takes the others in.
type JoinAsk struct {
	Probe bool `msgpack:"probe,omitempty"`
}

type JoinReply struct {
	OK     bool   `msgpack:"ok,omitempty"`
	Roster Roster `msgpack:"r"`
	Why    string `msgpack:"why,omitempty"`
}

// MaxPage bounds PlayersPage.Limit and the entries of a PlayersPageReply.
const MaxPage = 256

// PlayersPage asks a node for the players whose primary runs there, sorted
// by name, the first Limit of those after Cursor ("" for the first page).
type PlayersPage struct {
	Cursor string `msgpack:"c,omitempty"`
	Limit  int    `msgpack:"l"`
}

// PageEntry is one player in a PlayersPageReply, as its owner holds it.
type PageEntry struct {
	Player string `msgpack:"p"`
	Total  int64  `msgpack:"t"`
	Keeper string `msgpack:"k,omitempty"`
}

// PlayersPageReply is one page; Next is the cursor of the following page,
// "" after the last.
type PlayersPageReply struct {
	Players []PageEntry `msgpack:"ps,omitempty"`
	Next    string      `msgpack:"n,omitempty"`
}

// NodeInfo asks a node for a summary of itself (the front door's /cluster).
type NodeInfo struct{}

// NodeInfoReply summarises one node as it sees itself.
type NodeInfoReply struct {
	Node      NodeID `msgpack:"node"`
	Primaries int    `msgpack:"p"`
	Copies    int    `msgpack:"c"`
	Members   int    `msgpack:"m"` // live members it sees, itself included
	Quorate   bool   `msgpack:"q,omitempty"`
	HTTP      string `msgpack:"h,omitempty"` // its front door's URL, if it has one
}

// Command is one console line sent by `appnode rpc`.
type Command struct {
	Line string `msgpack:"line"`
}

// CommandReply is the console's answer. When Failed, Code and Outcome say
// what went wrong without parsing Output: Code as CodeFor, Outcome as
// OutcomeOf (for a reward, whether it may have been applied).
type CommandReply struct {
	Output  string  `msgpack:"out"`
	Failed  bool    `msgpack:"failed,omitempty"`
	Code    Code    `msgpack:"code,omitempty"`
	Outcome Outcome `msgpack:"outcome,omitempty"`
}

func (Hello) Kind() Kind            { return KindHello }
func (HelloReply) Kind() Kind       { return KindHelloReply }
func (Challenge) Kind() Kind        { return KindChallenge }
func (HelloProof) Kind() Kind       { return KindHelloProof }
func (Keepalive) Kind() Kind        { return KindKeepalive }
func (*Error) Kind() Kind           { return KindError }
func (Reward) Kind() Kind           { return KindReward }
func (RewardReply) Kind() Kind      { return KindRewardReply }
func (Where) Kind() Kind            { return KindWhere }
func (WhereReply) Kind() Kind       { return KindWhereReply }
func (Create) Kind() Kind           { return KindCreate }
func (Claim) Kind() Kind            { return KindClaim }
func (ClaimReply) Kind() Kind       { return KindClaimReply }
func (Replicate) Kind() Kind        { return KindReplicate }
func (Adopt) Kind() Kind            { return KindAdopt }
func (Ack) Kind() Kind              { return KindAck }
func (Handoff) Kind() Kind          { return KindHandoff }
func (KeeperGone) Kind() Kind       { return KindKeeperGone }
func (Ping) Kind() Kind             { return KindPing }
func (DeclaredDead) Kind() Kind     { return KindDeclaredDead }
func (PlayersPage) Kind() Kind      { return KindPlayersPage }
func (PlayersPageReply) Kind() Kind { return KindPlayersPageReply }
func (NodeInfo) Kind() Kind         { return KindNodeInfo }
func (NodeInfoReply) Kind() Kind    { return KindNodeInfoReply }
func (Command) Kind() Kind          { return KindCommand }
func (CommandReply) Kind() Kind     { return KindCommandReply }
func (Prepare) Kind() Kind          { return KindPrepare }
func (Promise) Kind() Kind          { return KindPromise }
func (Accept) Kind() Kind           { return KindAccept }
func (Accepted) Kind() Kind         { return KindAccepted }
func (Decided) Kind() Kind          { return KindDecided }
func (Reach) Kind() Kind            { return KindReach }
func (ReachReply) Kind() Kind       { return KindReachReply }
func (JoinAsk) Kind() Kind          { return KindJoinAsk }
func (JoinReply) Kind() Kind        { return KindJoinReply }
func (KeeperState) Kind() Kind      { return KindKeeperState }
func (Register) Kind() Kind         { return KindRegister }

// New returns an empty message of kind k to decode into, or nil for a kind
// this version does not know (the frame is then rejected).
func New(k Kind) Msg {
	switch k {
	case KindHello:
		return &Hello{}
	case KindHelloReply:
		return &HelloReply{}
	case KindError:
		return &Error{}
	case KindChallenge:
		return &Challenge{}
	case KindHelloProof:
		return &HelloProof{}
	case KindKeepalive:
		return &Keepalive{}
	case KindReward:
		return &Reward{}
	case KindRewardReply:
		return &RewardReply{}
	case KindWhere:
		return &Where{}
	case KindWhereReply:
		return &WhereReply{}
	case KindCreate:
		return &Create{}
	case KindClaim:
		return &Claim{}
	case KindClaimReply:
		return &ClaimReply{}
	case KindReplicate:
		return &Replicate{}
	case KindAdopt:
		return &Adopt{}
	case KindAck:
		return &Ack{}
	case KindHandoff:
		return &Handoff{}
	case KindKeeperGone:
		return &KeeperGone{}
	case KindPing:
		return &Ping{}
	case KindDeclaredDead:
		return &DeclaredDead{}
	case KindPlayersPage:
		return &PlayersPage{}
	case KindPlayersPageReply:
		return &PlayersPageReply{}
	case KindNodeInfo:
		return &NodeInfo{}
	case KindNodeInfoReply:
		return &NodeInfoReply{}
	case KindKeeperState:
		return &KeeperState{}
	case KindCommand:
		return &Command{}
	case KindCommandReply:
		return &CommandReply{}
	case KindPrepare:
		return &Prepare{}
	case KindPromise:
		return &Promise{}
	case KindAccept:
		return &Accept{}
	case KindAccepted:
		return &Accepted{}
	case KindDecided:
		return &Decided{}
	case KindReach:
		return &Reach{}
	case KindReachReply:
		return &ReachReply{}
	case KindJoinAsk:
		return &JoinAsk{}
	case KindJoinReply:
		return &JoinReply{}
	case KindRegister:
		return &Register{}
	}
	return nil
}
