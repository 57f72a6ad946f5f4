package names

import (
	"fmt"
	"os"
	"strings"

	"github.com/appnode/appnode/wire"
)

// FullName turns a bare node name into NAME@<this host's short name>, as
// `erl -sname` does; a full name is returned as it is.
func FullName(name string) string {
	if strings.Contains(name, "@") {
		return name
	}
	return name + "@" + ShortHostname()
}

// ShortHostname is the host name up to its first dot, as Erlang uses.
func ShortHostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		h = h[:i]
	}
	return h
}

// ValidateName checks a full node name, NAME@HOST, before anything
// listens under it. The one length limit for a node name, here, in the
// name service and on the wire, is wire.MaxNodeName.
func ValidateName(full string) error {
	name, host, ok := strings.Cut(full, "@")
	if !ok || name == "" || host == "" || strings.Contains(host, "@") {
		return fmt.Errorf("node name %q must look like NAME@HOST", full)
	}
	for _, r := range name {
		if !(r == '_' || r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return fmt.Errorf("node name %q: use letters, digits, '_', '-' and '.' only", full)
		}
	}
	if len(full) > wire.MaxNodeName {
		return fmt.Errorf("node name %q is %d bytes long; the limit is %d", full, len(full), wire.MaxNodeName)
	}
	return nil
}
