package front

// A node process's front door: its flags, its listener (opened before the
// node starts, so that its port goes into the name service's entry), and
// its server, started once the node is up.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/appnode/appnode/node"
)

// EnvHTTPToken is the environment variable that may hold the bearer token.
const EnvHTTPToken = "APPNODE_HTTP_TOKEN"

// DoorFlags are the command-line flags of a node's front door.
type DoorFlags struct {
	addr, token, tokenFile, cert, key string
	adminRemote                       bool
}

// AddDoorFlags defines the front door's flags on fs.
func AddDoorFlags(fs *flag.FlagSet) *DoorFlags {
	h := &DoorFlags{}
	fs.StringVar(&h.addr, "http", "", "HTTP front door address: HOST:PORT, PORT (on 127.0.0.1), or off; default 127.0.0.1 with the port this name used last time, else any free one")
	fs.StringVar(&h.token, "http-token", "", "bearer token the front door requires (except /livez and /readyz); env "+EnvHTTPToken+"; prefer --http-token-file, since other local users can see flags in ps")
	fs.StringVar(&h.tokenFile, "http-token-file", "", "file holding the bearer token (first line)")
	fs.StringVar(&h.cert, "http-cert", "", "TLS certificate (PEM) for the front door; with --http-key it serves HTTPS")
	fs.StringVar(&h.key, "http-key", "", "TLS private key (PEM) for --http-cert")
	fs.BoolVar(&h.adminRemote, "http-admin-remote", false, "serve the page, /cluster, /players and /admin/drain to other hosts too (by default only to this host)")
	return h
}

// Door is the front door of a node process: its listener from before the
// node starts, then its server.
type Door struct {
	ln      net.Listener // nil with --http off
	url     string
	port    int
	flags   *DoorFlags
	token   string
	metrics *Metrics
	front   *Front
	logf    func(string, ...any)
}

// URL is the front door's address, "" with --http off.
func (d *Door) URL() string { return d.url }

// Port is the front door's TCP port, 0 with --http off.
func (d *Door) Port() int { return d.port }

// Metrics is the front door's registry of metrics, for the node's
// observations (node.Config.Observer).
func (d *Door) Metrics() *Metrics { return d.metrics }

// ListenDoor opens the front door's listener as the flags say. With
// --http off it returns a door that serves nothing.
func ListenDoor(h *DoorFlags, full, stateDir string, logf func(string, ...any)) (*Door, error) {
	d := &Door{flags: h, metrics: NewMetrics(), logf: logf}
	if h.addr == "off" || h.addr == "none" {
		return d, nil
	}
	if (h.cert == "") != (h.key == "") {
		return nil, errors.New("--http-cert and --http-key go together")
	}
	token, err := doorToken(h)
	if err != nil {
		return nil, err
	}
	d.token = token
	host, port := "127.0.0.1", 0
	remembered := false
	switch {
	case h.addr == "":
		port, remembered = loadHTTPPort(stateDir, full), true
	case !strings.Contains(h.addr, ":"):
		port, err = strconv.Atoi(h.addr)
		if err != nil || port < 0 || port > 65535 {
			return nil, fmt.Errorf("--http %q: give HOST:PORT, PORT or off", h.addr)
		}
	default:
		var p string
		host, p, err = net.SplitHostPort(h.addr)
		if err == nil {
			port, err = strconv.Atoi(p)
		}
		if err != nil || port < 0 || port > 65535 {
			return nil, fmt.Errorf("--http %q: give HOST:PORT, PORT or off", h.addr)
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil && remembered && port != 0 {
		ln, err = net.Listen("tcp", net.JoinHostPort(host, "0")) // the remembered port is taken
	}
	if err != nil {
		return nil, fmt.Errorf("front door: %w", err)
	}
	d.ln = ln
	d.port = ln.Addr().(*net.TCPAddr).Port
	saveHTTPPort(stateDir, full, d.port)
	urlHost := host
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		urlHost = "127.0.0.1"
	}
	scheme := "http"
	if h.cert != "" {
		scheme = "https"
	}
	d.url = scheme + "://" + net.JoinHostPort(urlHost, strconv.Itoa(d.port))
	if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" && token == "" {
		fmt.Fprintf(os.Stderr, "appnode: warning: the HTTP front door listens on %s without a token: anyone who reaches it can reward players (give --http-token-file)\n", ln.Addr())
	}
	return d, nil
}

// doorToken reads the token from the flag, the environment or a file; it
// is never logged.
func doorToken(h *DoorFlags) (string, error) {
	if h.tokenFile != "" {
		b, err := os.ReadFile(h.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--http-token-file: %w", err)
		}
		t := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
		if t == "" {
			return "", fmt.Errorf("--http-token-file %s is empty", h.tokenFile)
		}
		return t, nil
	}
	if h.token != "" {
		return h.token, nil
	}
	return os.Getenv(EnvHTTPToken), nil
}

// Serve starts the front door for n. drain must start the graceful exit q
// does.
func (d *Door) Serve(n *node.Node, drain func()) error {
	if d.ln == nil {
		return nil
	}
	b := ForNode(n)
	d.metrics.Attach(b)
	f, err := New(Config{
		Backend:           b,
		Metrics:           d.metrics,
		Token:             d.token,
		AdminFromAnywhere: d.flags.adminRemote,
		Drain:             drain,
		Logf:              d.logf,
	})
	if err != nil {
		return err
	}
	d.front = f
	f.Serve(d.ln, d.flags.cert, d.flags.key)
	d.logf("front: serving %s", d.url)
	return nil
}

// Close stops the front door, giving requests under way a few seconds.
func (d *Door) Close() {
	if d.front != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.front.Close(ctx)
		return
	}
	if d.ln != nil {
		d.ln.Close()
	}
}

// Banner is the front door's part of the console's start-up line.
func (d *Door) Banner() string {
	if d.url == "" {
		return "no http"
	}
	return "http " + d.url
}

func httpPortFile(dir, name string) string {
	return filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+".http-port")
}

func loadHTTPPort(dir, name string) int {
	if dir == "" {
		return 0
	}
	b, err := os.ReadFile(httpPortFile(dir, name))
	if err != nil {
		return 0
	}
	p, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || p < 0 || p > 65535 {
		return 0
	}
	return p
}

func saveHTTPPort(dir, name string, port int) {
	if dir == "" || os.MkdirAll(dir, 0o700) != nil {
		return
	}
	_ = os.WriteFile(httpPortFile(dir, name), []byte(strconv.Itoa(port)+"\n"), 0o600)
}
