package replica

import (
	"fmt"
	"sort"
	"strings"
)

// DebugCopies describes the keeper copies held here, for failing tests.
func (s *Store) DebugCopies() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for p, c := range s.copies {
		out = append(out, fmt.Sprintf("%s{owner %s/%d alive %v epoch %d seq %d total %d flight %v}", p, c.owner.Name, c.owner.Boot, s.isAliveLocked(c.owner), c.epoch, c.seq, c.total, s.flights[p] != nil))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}
