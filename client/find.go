package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/appnode/appnode/names"
)

// lookupLimit bounds one question to one name service. A name service
// answers in microseconds; an address that drops packets must not take the
// whole dial's time from the addresses after it.
const lookupLimit = 2 * time.Second

// Find returns the transport address ("IP:PORT") of the node named target
// (NAME@HOST), as its host's name service on namesPort knows it. A node's
// listeners and its host's name service are bound to the same address, so
// the node is reached where the name service answered.
//
// On this host (HOST is this host's short name or localhost) the name
// service is looked for on 127.0.0.1, then on every address of this host's
// interfaces: a node started with --bind 10.0.0.1 serves its names there,
// not on loopback. Elsewhere HOST is resolved and each of its addresses is
// asked in turn.
func Find(ctx context.Context, target string, namesPort int) (string, error) {
	_, host, ok := strings.Cut(target, "@")
	if !ok || host == "" {
		return "", fmt.Errorf("find %q: a node name looks like NAME@HOST", target)
	}
	ips, err := hostIPs(ctx, host)
	if err != nil {
		return "", fmt.Errorf("find %s: %w", target, err)
	}
	var notFound, noService []error
	var asked []string
	for _, ip := range ips {
		ns := net.JoinHostPort(ip, strconv.Itoa(namesPort))
		lctx, cancel := context.WithTimeout(ctx, lookupLimit)
		e, err := names.Lookup(lctx, ns, target)
		cancel()
		if err == nil {
			return net.JoinHostPort(ip, strconv.Itoa(e.TransportPort)), nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("find %s: asked the name service at %s: %w", target, strings.Join(append(asked, ns), ", "), ctx.Err())
		}
		asked = append(asked, ns)
		if errors.Is(err, names.ErrNotFound) {
			notFound = append(notFound, err)
		} else {
			noService = append(noService, err)
		}
	}
	switch {
	case len(ips) == 1 && len(notFound) == 1:
		return "", notFound[0]
	case len(ips) == 1:
		return "", noService[0]
	case len(notFound) > 0:
		return "", &findError{kind: notFound[0], msg: fmt.Sprintf(
			"no node named %s is registered with the name service on port %d at any address of its host (asked %s)",
			target, namesPort, strings.Join(asked, ", "))}
	}
	return "", &findError{kind: noService[0], msg: fmt.Sprintf(
		"no name service answering on port %d at any address of %s (asked %s): is an appnode node running on that host, and is the names port right?",
		namesPort, host, strings.Join(asked, ", "))}
}

// findError says what every name service asked answered, and matches what
// the first one did (names.ErrNotFound, names.ErrNoService) with errors.Is.
type findError struct {
	msg  string
	kind error
}

func (e *findError) Error() string { return e.msg }
func (e *findError) Unwrap() error { return e.kind }

// hostIPs lists where host's name service may listen, in the order to ask.
func hostIPs(ctx context.Context, host string) ([]string, error) {
	if host == "localhost" || host == names.ShortHostname() {
		return localIPs(), nil
	}
	if ip := net.ParseIP(host); ip != nil {
		return []string{host}, nil
	}
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("cannot resolve host %q: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("cannot resolve host %q: no address", host)
	}
	return addrs, nil
}

// localIPs is 127.0.0.1, then this host's other interface addresses
// (link-local ones left out: they need a zone, and nodes are not bound
// to them).
func localIPs() []string {
	ips := []string{"127.0.0.1"}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ips
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLinkLocalUnicast() || n.IP.Equal(net.IPv4(127, 0, 0, 1)) {
			continue
		}
		ips = append(ips, n.IP.String())
	}
	return ips
}
