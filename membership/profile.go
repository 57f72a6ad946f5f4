package membership

import (
	"fmt"
	"log"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Profile selects the failure-detection timers. Faster detection means
// less tolerance for a member that stops answering for a moment (a GC
// pause, a CPU-starved test machine, a laptop waking up), so the choice is
// between failing over quickly and declaring live members dead.
type Profile int

const (
	// ProfileLocal is for nodes on one host or a quiet LAN: a member killed
	// with SIGKILL is reported failed in about 1-2 s, and a live member
	// must stall for about 1.2 s before it can be declared dead.
	ProfileLocal Profile = iota

	// ProfileLAN keeps memberlist's LAN timers, for real networks: a
	// killed member is reported failed after about 5-7 s on three nodes,
	// up to about 25 s on 4-9 nodes when peers cannot confirm the
	// suspicion.
	ProfileLAN
)

func (p Profile) String() string {
	switch p {
	case ProfileLocal:
		return "local"
	case ProfileLAN:
		return "lan"
	default:
		return fmt.Sprintf("Profile(%d)", int(p))
	}
}

// Timers of ProfileLocal.
//
// How long a SIGKILLed member takes to be reported failed on a cluster of
// N ≤ 9 nodes (memberlist scales by log10(N), which is 1 below ten nodes):
//
//	T ≈ Tprobe + ProbeInterval + Tsuspect + Tgossip
//
//	Tprobe   = wait until a live member probes the dead one. Each member
//	           probes its peers round-robin, one per ProbeInterval, from
//	           a random start, so this is within [0, (N-1)·ProbeInterval]
//	           for one prober, and less than one ProbeInterval on
//	           average for the earliest of the N-1 probers.
//	ProbeInterval: the failed probe itself. A probe only gives up at the
//	           end of its interval, after the direct UDP ping
//	           (ProbeTimeout), the indirect pings and the TCP fallback.
//	Tsuspect = SuspicionMult·ProbeInterval when there are too few peers
//	           to confirm the suspicion (N < SuspicionMult, so N ≤ 4
//	           here); otherwise the timer starts at
//	           SuspicionMaxTimeoutMult times that and shrinks to it as
//	           SuspicionMult-2 other members independently confirm.
//	           (N counts members memberlist still remembers, dead ones
//	           included.)
//	Tgossip  = a GossipInterval or two for the dead message to reach
//	           everyone.
//
// With the values below and N = 3: T ≈ 0.15 + 0.2 + 1.0 + 0.05 ≈ 1.4 s
// on average and 0.4 + 0.2 + 1.0 + 0.1 = 1.7 s at worst. For 5 ≤ N ≤ 9
// the suspicion lasts 1 s with three confirmations and up to 3 s with
// none.
//
// A live member is declared dead only if it answers nothing for a whole
// ProbeInterval and then fails to refute the suspicion (it hears of it on
// the next gossip or ping) before Tsuspect runs out: it has to stall for
// about ProbeInterval + Tsuspect ≈ 1.2 s. Memberlist's awareness
// (Lifeguard) stays on, at its default AwarenessMaxMultiplier of 8: a
// member whose probes fail without even the helpers' nacks coming back, or
// that has to refute accusations, concludes that it is the slow one and
// stretches its own probe interval (up to 1.6 s) instead of accusing
// healthy peers.
const (
	// localProbeInterval: how often each member probes one peer. The
	// main knob: detection time is about 7 of these. Lower detects
	// faster but tolerates shorter stalls and costs a UDP round trip per
	// member per interval (nothing on loopback).
	localProbeInterval = 200 * time.Millisecond

	// localProbeTimeout: how long the direct UDP ping waits before the
	// indirect pings and the TCP fallback are tried in the rest of the
	// interval. Must stay below localProbeInterval, or there is no time
	// left for them. A loopback round trip is well under a millisecond;
	// 100 ms absorbs scheduling delays of a loaded machine.
	localProbeTimeout = 100 * time.Millisecond

	// localSuspicionMult: the suspicion timeout in probe intervals (1 s).
	// This is the window a suspected member has to refute; it is most of
	// the detection time and most of the stall tolerance.
	localSuspicionMult = 5

	// localSuspicionMaxTimeoutMult bounds the suspicion timer (3 s) when
	// the cluster is big enough to expect confirmations and they do not
	// come, which is usually a sign that the suspecting member is the one
	// in trouble. Higher protects better against a sick member's
	// accusations; lower bounds detection in a degraded cluster.
	localSuspicionMaxTimeoutMult = 3

	// localGossipInterval: how often queued messages (suspect, dead,
	// alive, tag updates, Serf intents) go out to localGossipNodes random
	// peers without waiting for a probe to piggyback on. 50 ms spreads news
	// to a handful of nodes in one or two rounds; each round is one small
	// UDP packet per peer, and only when something is queued.
	localGossipInterval = 50 * time.Millisecond
	localGossipNodes    = 3

	// localGossipToTheDeadTime: how long a member declared dead still
	// receives gossip, which lets a falsely accused member (paused,
	// briefly cut off) learn it and refute at once. Memberlist also
	// forgets a dead member after this time. Serf keeps its own record
	// and reconnects (see localReconnectInterval), so a few seconds are
	// enough.
	localGossipToTheDeadTime = 5 * time.Second

	// localPushPullInterval: full state exchange with one random peer
	// over TCP, the anti-entropy that repairs gossip lost to dropped
	// packets. A few kilobytes per exchange at this cluster size; lower
	// converges faster after packet loss.
	localPushPullInterval = 5 * time.Second

	// localTCPTimeout: dial, read and write timeout of the TCP streams
	// (joins and push/pull). Loopback connects or refuses at once, so
	// this only matters for a peer that is stopped (kill -STOP): a Join
	// to it gives up after this long. Long enough that a merely slow
	// peer still completes a state exchange.
	localTCPTimeout = 2 * time.Second

	// localBroadcastTimeout: how long Leave and SetTags wait for their
	// message to be sent (not acknowledged) to enough peers. A few gossip
	// rounds suffice when peers are reachable; this caps the wait when
	// they are not.
	localBroadcastTimeout = 2 * time.Second

	// localLeavePropagateDelay: how long Leave keeps answering probes after
	// its leave message went out, so that no peer that has not heard of
	// the leave yet reports the member failed instead of left. Covers two
	// probe intervals and many gossip rounds.
	localLeavePropagateDelay = 500 * time.Millisecond

	// localReconnectInterval: how often Serf tries to rejoin members it
	// considers failed. This is what heals a partition once the network
	// is back (gossip and push/pull only talk to members believed alive),
	// and how a member restarted under the same address is picked up even
	// if it does not join by itself. An attempt at a member that is really
	// dead is one refused TCP connect.
	localReconnectInterval = 1 * time.Second

	// localQueryTimeoutMult: Serf's only query here is its internal name
	// conflict vote; its timeout is GossipInterval·QueryTimeoutMult = 2 s
	// below ten nodes. A longer window lets every reachable member's vote
	// be counted even on a loaded machine; the default (16) would give
	// 0.8 s with our short gossip interval.
	localQueryTimeoutMult = 40
)

// Settings shared by both profiles.
const (
	// deadNodeReclaimTime lets a new process take over the name of a
	// member memberlist has declared dead even from a different address
	// or port. Zero (memberlist's default) refuses such a newcomer until
	// the dead entry is forgotten; any positive value allows it as soon
	// as the old holder has been dead that long, so the smallest one
	// means "as soon as it is declared dead". A holder that is still
	// alive or only suspected keeps its name, and Serf's name conflict
	// resolution turns the newcomer away.
	deadNodeReclaimTime = time.Nanosecond

	// forgetAfter is both Serf's ReconnectTimeout (how long a failed
	// member is kept and retried) and its TombstoneTimeout (how long a
	// member that left is remembered, so that state exchanged with a
	// peer that missed the leave cannot bring it back). Serf's 24 h means
	// retrying a node killed for good all day, possibly at a port another
	// program has taken since. Half an hour outlasts any partition or
	// pause someone would wait out before intervening, which is what
	// automatic reconnection is for; after that, "connect" rejoins by
	// hand.
	forgetAfter = 30 * time.Minute

	// lanReconnectInterval: see localReconnectInterval; a third of Serf's
	// default, so a healed partition rejoins within seconds.
	lanReconnectInterval = 10 * time.Second
)

// serfConfig builds the Serf configuration for cfg: the profile's timers,
// no snapshot, and the given transport (already bound to port), logger and
// event channel.
func serfConfig(cfg *Config, tr memberlist.Transport, logger *log.Logger, events chan<- serf.Event, port int) (*serf.Config, error) {
	sc := serf.DefaultConfig()
	ml := memberlist.DefaultLANConfig()
	sc.MemberlistConfig = ml

	switch cfg.Profile {
	case ProfileLocal:
		ml.ProbeInterval = localProbeInterval
		ml.ProbeTimeout = localProbeTimeout
		ml.SuspicionMult = localSuspicionMult
		ml.SuspicionMaxTimeoutMult = localSuspicionMaxTimeoutMult
		ml.GossipInterval = localGossipInterval
		ml.GossipNodes = localGossipNodes
		ml.GossipToTheDeadTime = localGossipToTheDeadTime
		ml.PushPullInterval = localPushPullInterval
		ml.TCPTimeout = localTCPTimeout
		sc.BroadcastTimeout = localBroadcastTimeout
		sc.LeavePropagateDelay = localLeavePropagateDelay
		sc.ReconnectInterval = localReconnectInterval
		sc.QueryTimeoutMult = localQueryTimeoutMult
	case ProfileLAN:
		sc.ReconnectInterval = lanReconnectInterval
	default:
		return nil, fmt.Errorf("unknown profile %v", cfg.Profile)
	}
	if ml.ProbeTimeout >= ml.ProbeInterval {
		// Memberlist does not check this; with it, indirect and TCP
		// probes never get a chance and every lost packet is a suspicion.
		return nil, fmt.Errorf("profile %v: probe timeout %v must be below probe interval %v",
			cfg.Profile, ml.ProbeTimeout, ml.ProbeInterval)
	}

	// With a key, memberlist encrypts everything it sends and drops
	// everything it receives that does not decrypt with it
	// (GossipVerifyIncoming and GossipVerifyOutgoing stay at their
	// default, true).
	ml.SecretKey = cfg.SecretKey
	ml.DeadNodeReclaimTime = deadNodeReclaimTime
	ml.BindAddr = cfg.BindAddr
	ml.BindPort = port
	ml.AdvertisePort = port
	ml.Transport = tr
	ml.Logger = logger
	sc.Logger = logger

	sc.NodeName = cfg.Name
	sc.Tags = copyTags(cfg.Tags)
	sc.EventCh = events
	sc.ReconnectTimeout = forgetAfter
	sc.TombstoneTimeout = forgetAfter

	// No snapshot file: a restarted node joins through the name service,
	// and an old member list on disk would only bring back stale peers.
	sc.SnapshotPath = ""
	// Network coordinates (RTT estimates) are not used; leaving them off
	// keeps pings small.
	sc.DisableCoordinates = true
	// Serf's name validation allows only [A-Za-z0-9.-]; node names are
	// "name@host" and commonly contain '_'.
	sc.ValidateNodeNames = false
	// Two live processes must never share a name. When a newcomer claims
	// the name of a member that is alive at another address, Serf asks
	// the cluster which address owns it and the loser shuts its Serf
	// down; ShutdownCh reports that.
	sc.EnableNameConflictResolution = true
	return sc, nil
}
