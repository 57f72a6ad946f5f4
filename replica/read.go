package replica

import (
	"context"
	"fmt"

	"github.com/appnode/appnode/wire"
)

// RewardResult is what a reward (or a read) answered: the total and where
// the player lives, as its primary saw it when it answered.
type RewardResult struct {
	Total  int64
	Owner  wire.NodeID
	Keeper wire.NodeID
}

// RewardWhere is Reward (id zero) or RewardOnce (id from wire.ClientReqID)
// that also says where the player's primary and keeper are, without asking
// anyone more than the reward itself does: the owner names both in its
// reply. pointsText is as for Reward.
func (s *Store) RewardWhere(ctx context.Context, player, pointsText string, id wire.ReqID) (RewardResult, error) {
	if err := ValidatePlayer(player); err != nil {
		return RewardResult{}, err
	}
	if !id.IsZero() && !id.FromClient() {
		return RewardResult{}, wire.Errorf(wire.CodeBadRequest, "%s: a client's request id must come from wire.ClientReqID", player)
	}
	n, notInt, err := ParsePoints(pointsText)
	if err != nil {
		return RewardResult{}, fmt.Errorf("%s: %w", player, err)
	}
	return s.rewardAt(ctx, s.withID(&wire.Reward{Player: player, Points: n, NotInt: notInt, ID: id}), true)
}

// Read returns player's total, owner and keeper, linearizably: it is a
// reward of zero points through the player's primary, so the keeper must
// accept it from that primary at its epoch before it is answered. A primary
// that was paused or cut off and superseded meanwhile is fenced by its
// keeper and steps down instead of answering a total the cluster has moved
// past. Unlike a reward it never creates the player: one that no node
// holds is CodeNotFound. It carries no request id (applying it twice
// changes nothing), so it takes no room among those a player remembers.
//
// A read costs what a reward costs: a round trip to the keeper.
func (s *Store) Read(ctx context.Context, player string) (total int64, owner, keeper wire.NodeID, err error) {
	if err := ValidatePlayer(player); err != nil {
		return 0, owner, keeper, err
	}
	r, err := s.rewardAt(ctx, &wire.Reward{Player: player}, false)
	return r.Total, r.Owner, r.Keeper, err
}
