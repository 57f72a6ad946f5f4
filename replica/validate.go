package replica

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/appnode/appnode/wire"
)

// MaxPlayerLen bounds a player name: long enough for any id a game uses
// (UUIDs, emails), short enough that a million of them fit in memory.
const MaxPlayerLen = 128

// ValidatePlayer refuses names that would be unreadable on the console or
// unbounded in memory. It is applied at every entry: the console, and every
// message that names a player.
func ValidatePlayer(name string) error {
	switch {
	case name == "":
		return wire.Errorf(wire.CodeBadRequest, "player name is empty")
	case len(name) > MaxPlayerLen:
		return wire.Errorf(wire.CodeBadRequest, "player name is %d bytes long; the limit is %d", len(name), MaxPlayerLen)
	case !utf8.ValidString(name):
		return wire.Errorf(wire.CodeBadRequest, "player name is not valid UTF-8")
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return wire.Errorf(wire.CodeBadRequest, "player name %q contains a control character", name)
	}
	return nil
}

// ParsePoints reads points as a person typed them. An integer that does not
// fit in 64 bits is an error; anything that is not an integer at all is
// returned in notInt, for the primary to crash on, as the Erlang original's
// gen_server does when it adds a non-number.
func ParsePoints(text string) (n int64, notInt string, err error) {
	text = strings.TrimSpace(text)
	n, err = strconv.ParseInt(text, 10, 64)
	if err == nil {
		return n, "", nil
	}
	if errors.Is(err, strconv.ErrRange) {
		return 0, "", wire.Errorf(wire.CodeOverflow, "points %s do not fit in a 64-bit integer", text)
	}
	if text == "" {
		return 0, "", wire.Errorf(wire.CodeBadRequest, "points are missing")
	}
	if len(text) > MaxPlayerLen {
		text = strings.ToValidUTF8(text[:MaxPlayerLen], "")
	}
	return 0, text, nil
}

// addPoints adds without wrapping around.
func addPoints(total, points int64) (int64, bool) {
	if points > 0 && total > math.MaxInt64-points {
		return 0, false
	}
	if points < 0 && total < math.MinInt64-points {
		return 0, false
	}
	return total + points, true
}
