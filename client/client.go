// Package client talks to a running appnode node from outside the
// cluster: `appnode rpc`, `appnode bench` and the process tests use it. It
// finds a node by its name through its host's name service, proves that
// it knows the cluster's cookie, and offers typed calls (Reward,
// RewardOnce, Where, Command) over one generic call. Every call has a
// deadline; a Client is safe for concurrent use and multiplexes calls
// over its one connection.
package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/names"
	"github.com/appnode/appnode/transport"
	"github.com/appnode/appnode/wire"
)

// EnvNamesPort names the environment variable that overrides the name
// service's port, for clients and nodes alike.
const EnvNamesPort = "APPNODE_NAMES_PORT"

// Timeouts used when Config leaves them zero.
const (
	DefaultDialTimeout = 5 * time.Second  // find the node and finish the handshake
	DefaultCallTimeout = 15 * time.Second // one call, when its context has no deadline
)

// DefaultNamesPort is $APPNODE_NAMES_PORT if it holds a port number, else
// names.DefaultPort.
func DefaultNamesPort() int {
	if v := os.Getenv(EnvNamesPort); v != "" {
		if p, err := strconv.Atoi(v); err == nil {
			return p
		}
	}
	return names.DefaultPort
}

// Config says how to reach nodes. The zero value works on a host whose
// nodes use the default port and cookie file.
type Config struct {
	// NamesPort is the port of the name service of the node's host; 0
	// means DefaultNamesPort().
	NamesPort int
	// Cookie is the cluster's cookie. If it is zero, it is read as a client
	// reads it ($APPNODE_COOKIE, else the cookie file, which is never
	// created), once the node has been found: with no node running, that
	// is the news, not a missing cookie file.
	Cookie cookie.Cookie
	// Self is the name this client announces to the node, for its logs;
	// "" means "client-PID@HOST".
	Self string
	// DialTimeout bounds finding the node and the handshake, within the
	// context given to Dial; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// CallTimeout bounds a call whose context has no deadline; 0 means
	// DefaultCallTimeout.
	CallTimeout time.Duration
}

func (cfg Config) withDefaults() Config {
	if cfg.NamesPort == 0 {
		cfg.NamesPort = DefaultNamesPort()
	}
	if cfg.Self == "" {
		cfg.Self = fmt.Sprintf("client-%d@%s", os.Getpid(), names.ShortHostname())
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	return cfg
}

// Client is one connection to one node.
type Client struct {
	name        string // as dialled: the node's full name, or what DialAddr was told
	addr        string // its transport address
	tc          *transport.Client
	callTimeout time.Duration
}

// Dial finds the node named target ("NAME@HOST"; a bare NAME means this
// host) through its host's name service and connects to it. On this host
// the name service is looked for on loopback, then on every address of
// this host's interfaces, since it listens on the address its nodes were
// bound to.
func Dial(ctx context.Context, target string, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	target = FullName(target)
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	addr, err := Find(ctx, target, cfg.NamesPort)
	if err != nil {
		return nil, err
	}
	return dial(ctx, target, addr, cfg)
}

// DialAddr connects to the node (or any server of this project's
// transport) at addr, a transport "HOST:PORT", without asking a name
// service; name is what errors call it.
func DialAddr(ctx context.Context, name, addr string, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	return dial(ctx, name, addr, cfg)
}

func dial(ctx context.Context, name, addr string, cfg Config) (*Client, error) {
	secret := cfg.Cookie
	if secret.IsZero() {
		var err error
		if secret, _, err = cookie.Resolve("", os.Getenv, false); err != nil {
			return nil, err
		}
	}
	tc, err := transport.DialClient(ctx, addr, cfg.Self, secret)
	if err != nil {
		return nil, explainDial(name, addr, err)
	}
	return &Client{name: name, addr: addr, tc: tc, callTimeout: cfg.CallTimeout}, nil
}

// dialError is a failed handshake in words a person can act on; it still
// matches the transport's error (transport.ErrAuth) with errors.Is.
type dialError struct {
	msg string
	err error
}

func (e *dialError) Error() string { return e.msg }
func (e *dialError) Unwrap() error { return e.err }

func explainDial(name, addr string, err error) error {
	if errors.Is(err, transport.ErrAuth) {
		// The transport's own words add only the handshake's details.
		return &dialError{err: err, msg: fmt.Sprintf(
			"connect to %s: cookie mismatch: the node does not accept this cookie; give the cluster's cookie with --cookie or %s, or the node's ~/%s",
			name, cookie.EnvCookie, cookie.DefaultFile)}
	}
	return fmt.Errorf("connect to %s at %s: %w", name, addr, err)
}

// Name is the node's name as it was dialled.
func (c *Client) Name() string { return c.name }

// Addr is the node's transport address.
func (c *Client) Addr() string { return c.addr }

// Node is the incarnation (name and boot id) the client is connected to.
func (c *Client) Node() wire.NodeID { return c.tc.Node() }

// Close closes the connection; calls in flight fail with
// transport.ErrClosed.
func (c *Client) Close() error { return c.tc.Close() }

// call is the one generic call under the typed ones: it sends m and waits
// for the reply, within ctx's deadline or the client's CallTimeout. A
// node's refusal comes back as an error holding a *wire.Error.
func (c *Client) call(ctx context.Context, m wire.Msg) (wire.Msg, error) {
	return c.tc.CallWithin(ctx, m, c.callTimeout)
}

// Reward adds points to player's total, served as if typed at the node's
// console, and returns the new total. wire.OutcomeOf(err) says whether a
// failed reward may have been applied.
func (c *Client) Reward(ctx context.Context, player string, points int64) (int64, error) {
	return c.reward(ctx, &wire.Reward{Player: player, Points: points})
}

// RewardOnce is Reward with a request id named after key: a retry with the
// same key, at this node or another, is answered with the total it gave,
// never applied twice. points is the text a person typed; the node parses
// it as the console does (a non-integer crashes the player's primary).
func (c *Client) RewardOnce(ctx context.Context, player, points, key string) (int64, error) {
	if key == "" {
		return 0, fmt.Errorf("reward %s at %s: the request key is empty", player, c.name)
	}
	m := &wire.Reward{Player: player, ID: wire.ClientReqID(key)}
	if n, err := strconv.ParseInt(points, 10, 64); err == nil && strconv.FormatInt(n, 10) == points {
		m.Points = n
	} else {
		m.NotInt = points // the node parses it, and refuses it or crashes on it
	}
	return c.reward(ctx, m)
}

func (c *Client) reward(ctx context.Context, m *wire.Reward) (int64, error) {
	rep, err := c.call(ctx, m)
	if err != nil {
		return 0, fmt.Errorf("reward %s at %s: %w", m.Player, c.name, err)
	}
	r, ok := rep.(*wire.RewardReply)
	if !ok {
		return 0, fmt.Errorf("reward %s at %s: answered with %s", m.Player, c.name, rep.Kind())
	}
	return r.Total, nil
}

// Where asks the node what it holds for player: its role (owner, keeper
// or none) and where it believes the owner and the keeper are.
func (c *Client) Where(ctx context.Context, player string) (*wire.WhereReply, error) {
	rep, err := c.call(ctx, &wire.Where{Player: player})
	if err != nil {
		return nil, fmt.Errorf("where %s at %s: %w", player, c.name, err)
	}
	r, ok := rep.(*wire.WhereReply)
	if !ok {
		return nil, fmt.Errorf("where %s at %s: answered with %s", player, c.name, rep.Kind())
	}
	return r, nil
}

// Command runs one console line on the node, as if typed there. A command
// that failed is a reply with Failed set (its Code and Outcome say why);
// err is for a call that got no answer.
func (c *Client) Command(ctx context.Context, line string) (*wire.CommandReply, error) {
	rep, err := c.call(ctx, &wire.Command{Line: line})
	if err != nil {
		return nil, fmt.Errorf("%q at %s: %w", line, c.name, err)
	}
	r, ok := rep.(*wire.CommandReply)
	if !ok {
		return nil, fmt.Errorf("%q at %s: answered with %s", line, c.name, rep.Kind())
	}
	return r, nil
}

// FullName is names.FullName: a bare name gets this host's short name.
func FullName(name string) string { return names.FullName(name) }
