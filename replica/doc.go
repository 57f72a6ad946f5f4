// Package replica keeps players alive: one primary per player, serialising
// its updates, and a keeper (backup copy) on another node, written before
// any update is acknowledged. It knows nothing of Serf, TCP or the console:
// the node package feeds it the live membership (SetMembers, LinkDown),
// delivers peer messages to Handle, and carries its calls through Network,
// a one-method interface that tests fake (MemNetwork).
//
// Safety rests on these rules:
//   - ownership changes only through a keeper, which grants a claim only
//     when the current owner is dead (or is the claimant itself), and bumps
//     the player's epoch when it does; a keeper accepts writes only from its
//     recorded owner at its recorded epoch, so a superseded primary can
//     never have a write acknowledged;
//   - a player is created without asking every member only when its
//     arbiter has every member's list of players for the roster both
//     hold, and does not list it (directory.go);
//   - the copy restored when an owner is gone is the freshest (epoch, then
//     keeper placement, then update): the owner's current copy
//     (keeperCopy.current) is, so its keeper acts on it alone; any other
//     is chosen only after every member was asked (survey);
//   - an incarnation that the majority declared failed is tombstoned: every
//     node refuses its messages, and it must drop its state and come back
//     with a new boot id (Reset);
//   - a node that does not see a strict majority of the membership it last
//     agreed on serves nothing (View).
//
// The files, in the order a reward meets them:
//
//	route.go       a reward enters (Reward), finds its primary or owner, is forwarded
//	activate.go    a player with no known owner: find it, claim it from its keeper, or create it
//	primary.go     the actor: mailbox, workers, apply, replicate to the keeper
//	async.go       a reward answered on its keeper's or owner's reply, with no goroutine waiting (RewardAsync, HandleAsync)
//	supervisor.go  a primary that crashed is restarted from its keeper
//	keeper.go      the keeper's copy and its rules (Replicate, Adopt, Claim, Create, Handoff)
//	dispatch.go    a peer's message, validated and handed to the side it is for
//	view.go        membership and quorum, a plain value
//	membership.go  the Store acting on its View (SetMembers, confirm)
//	network.go     calls to peers, and what their failures prove
//	repair.go      restoring two copies after failures; leave.go, a graceful exit
//	placement.go   rendezvous hashing: who arbitrates a creation, who keeps a copy
//	directory.go   the arbiter's list of its players: a creation without asking everyone, and where each is kept
//
// Lock order: Store.mu, then primary.mu, then Store.spawnMu (a leaf: the
// Store starts every goroutine of its own through spawn, which takes it to
// start none once Close has begun). Nothing is called on the Network,
// and no primary's mailbox is waited on, with either held; Config.OnEvent
// may be called with Store.mu held and so must not block. A primary's
// state (primary.st) is read under primary.mu alone; dedup records
// (primary.applied) belong to the goroutine serving its mailbox.
package replica
