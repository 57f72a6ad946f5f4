// Package cookie holds the cluster's shared secret, as Erlang's magic
// cookie does: nodes that know the same cookie form a cluster, everyone else
// is a stranger. The cookie itself never travels and is never printed; what
// is used on the wire are keys derived from it with HKDF-SHA256, one per
// purpose, so that a key recovered from one protocol says nothing about the
// cookie or about the other keys.
//
// Where the cookie comes from, first match wins: the --cookie flag, the
// APPNODE_COOKIE environment variable, then the cookie file
// ($APPNODE_COOKIE_FILE, else ~/.appnode.cookie). A node creates the file
// with a random cookie and mode 0400 when it does not exist, as erl does for
// ~/.erlang.cookie, so that every node started by one user on one host
// shares a cookie with nothing configured. A file that other users may read
// or write is refused, as erl refuses one: anyone who can read the cookie
// can join the cluster and rewrite every total.
package cookie

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Environment variables read by FromEnvironment.
const (
	EnvCookie     = "APPNODE_COOKIE"
	EnvCookieFile = "APPNODE_COOKIE_FILE"
	// DefaultFile is the cookie file's name in the home directory.
	DefaultFile = ".appnode.cookie"
)

const (
	// MaxLen bounds a cookie. Erlang's limit is 255; a longer secret adds
	// nothing, and a bound keeps a mistaken path (a binary file) from
	// being read as one.
	MaxLen = 1024
	// shortLen: a cookie shorter than this is easy to guess or to
	// brute-force from recorded gossip; Warning says so. The generated
	// ones carry 256 random bits.
	shortLen = 16
	// generatedBytes of randomness go into a new cookie file.
	generatedBytes = 32
)

// HKDF parameters. The salt names the scheme, and each info string names
// one use; changing either changes every key, so they are versioned.
const (
	kdfSalt       = "appnode cluster cookie v1"
	infoGossip    = "appnode serf gossip: memberlist AES-256-GCM key"
	infoTransport = "appnode transport handshake: HMAC-SHA256 key"
	keyLen        = 32
)

// Cookie is the shared secret. Its zero value means "no cookie". It
// formats as "[cookie]" under every fmt verb, so that a careless log line
// or error cannot leak it.
type Cookie struct {
	secret []byte
}

// New makes a cookie from its text, as typed or read from a file.
// Surrounding white space is dropped (an editor's trailing newline must not
// make two nodes disagree).
func New(text string) (Cookie, error) {
	text = strings.TrimSpace(text)
	switch {
	case text == "":
		return Cookie{}, errors.New("the cookie is empty")
	case len(text) > MaxLen:
		return Cookie{}, fmt.Errorf("the cookie is %d bytes long; the limit is %d", len(text), MaxLen)
	}
	return Cookie{secret: []byte(text)}, nil
}

// IsZero reports whether c holds no cookie.
func (c Cookie) IsZero() bool { return len(c.secret) == 0 }

// Weak reports whether the cookie is short enough to be guessed. Nodes warn
// about it; they still run, as erl does with any cookie.
func (c Cookie) Weak() bool { return len(c.secret) < shortLen }

// Format prints "[cookie]" whatever the verb: never the secret.
func (c Cookie) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte("[cookie]")) }

// String returns "[cookie]".
func (c Cookie) String() string { return "[cookie]" }

// GoString returns "[cookie]", for %#v.
func (c Cookie) GoString() string { return "[cookie]" }

// GossipKey is memberlist's SecretKey: AES-256-GCM over every gossip
// packet and stream, authenticating and encrypting Serf's traffic.
func (c Cookie) GossipKey() []byte { return c.derive(infoGossip) }

// TransportKey keys the HMAC-SHA256 proofs of the transport's handshake.
func (c Cookie) TransportKey() []byte { return c.derive(infoTransport) }

func (c Cookie) derive(info string) []byte {
	if c.IsZero() {
		// A key derived from nothing would let every cookie-less
		// process in; callers check IsZero first.
		panic("cookie: deriving a key from the zero Cookie")
	}
	k, err := hkdf.Key(sha256.New, c.secret, []byte(kdfSalt), info, keyLen)
	if err != nil {
		// Only a keyLen beyond 255 hash lengths fails.
		panic("cookie: hkdf: " + err.Error())
	}
	return k
}

// Source says where a cookie came from, for messages: never the value.
type Source struct {
	What    string // "--cookie", "APPNODE_COOKIE" or "cookie file"
	Path    string // the file, when What is "cookie file"
	Created bool   // the file was created by this call
}

func (s Source) String() string {
	switch {
	case s.Path == "":
		return s.What
	case s.Created:
		return "new cookie file " + s.Path
	default:
		return "cookie file " + s.Path
	}
}

// DefaultPath is $APPNODE_COOKIE_FILE, else ~/.appnode.cookie.
func DefaultPath(getenv func(string) string) (string, error) {
	if p := getenv(EnvCookieFile); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no home directory to keep the cookie file in (%v): set %s or %s, or give --cookie", err, EnvCookie, EnvCookieFile)
	}
	return filepath.Join(home, DefaultFile), nil
}

// Resolve finds the cookie: flagValue (from --cookie) if not empty, else
// the APPNODE_COOKIE variable, else the cookie file. With create, a missing
// file is created with a random cookie (nodes do this); without, a missing
// file is an error that says what to do (clients, such as `appnode rpc`,
// must not invent a cookie no node knows).
func Resolve(flagValue string, getenv func(string) string, create bool) (Cookie, Source, error) {
	if strings.TrimSpace(flagValue) != "" {
		c, err := New(flagValue)
		if err != nil {
			return Cookie{}, Source{}, fmt.Errorf("--cookie: %w", err)
		}
		return c, Source{What: "--cookie"}, nil
	}
	if v := getenv(EnvCookie); strings.TrimSpace(v) != "" {
		c, err := New(v)
		if err != nil {
			return Cookie{}, Source{}, fmt.Errorf("%s: %w", EnvCookie, err)
		}
		return c, Source{What: EnvCookie}, nil
	}
	path, err := DefaultPath(getenv)
	if err != nil {
		return Cookie{}, Source{}, err
	}
	src := Source{What: "cookie file", Path: path}
	if create {
		c, created, err := LoadOrCreate(path)
		src.Created = created
		return c, src, err
	}
	c, err := Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Cookie{}, src, fmt.Errorf("no cookie: %s does not exist (a node creates it when it first starts); give the cluster's cookie with --cookie or %s", path, EnvCookie)
	}
	return c, src, err
}

// Load reads the cookie file at path. A file that is not private to its
// owner is refused, with the command that fixes it.
func Load(path string) (Cookie, error) {
	f, err := os.Open(path)
	if err != nil {
		return Cookie{}, fmt.Errorf("read the cookie file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Cookie{}, fmt.Errorf("read the cookie file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return Cookie{}, fmt.Errorf("the cookie file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return Cookie{}, fmt.Errorf("the cookie file %s may be read or written by other users (mode %04o), who could then join the cluster; make it private with: chmod 400 %s", path, perm, path)
	}
	if st.Size() > MaxLen+64 { // room for white space around a long cookie
		return Cookie{}, fmt.Errorf("the cookie file %s is %d bytes long; a cookie is at most %d", path, st.Size(), MaxLen)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxLen+64))
	if err != nil {
		return Cookie{}, fmt.Errorf("read the cookie file %s: %w", path, err)
	}
	c, err := New(string(b))
	if err != nil {
		return Cookie{}, fmt.Errorf("the cookie file %s: %w", path, err)
	}
	return c, nil
}

// LoadOrCreate reads the cookie file at path, creating it first with a
// random cookie and mode 0400 if it does not exist. Nodes started at once
// on one host race to create it; every one of them ends up with the same
// cookie, because the file appears (by a hard link) only once complete,
// and only the first link succeeds.
func LoadOrCreate(path string) (c Cookie, created bool, err error) {
	c, err = Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return c, false, err
	}
	created, err = create(path)
	if err != nil {
		return Cookie{}, false, err
	}
	c, err = Load(path)
	return c, created, err
}

// create writes a new random cookie at path unless a file is already
// there. It reports whether it was this call that created it.
func create(path string) (bool, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create the cookie file %s: %w", path, err)
	}
	var raw [generatedBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return false, fmt.Errorf("create the cookie file %s: no randomness: %w", path, err)
	}
	text := base64.RawURLEncoding.EncodeToString(raw[:])

	tmp, err := os.CreateTemp(dir, ".appnode.cookie.tmp*")
	if err != nil {
		return false, fmt.Errorf("create the cookie file %s: %w", path, err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath)
	_, werr := tmp.WriteString(text)
	if werr == nil {
		werr = tmp.Chmod(0o400)
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return false, fmt.Errorf("create the cookie file %s: %w", path, werr)
	}
	// A hard link publishes the complete file atomically and fails if the
	// name exists, so a racing node never reads a half-written cookie nor
	// overwrites another's.
	err = os.Link(tmpPath, path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	// Some file systems have no hard links: fall back to an exclusive
	// create, which is just as safe from overwriting, though a racing
	// reader could see the file before its content.
	f, ferr := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if errors.Is(ferr, fs.ErrExist) {
		return false, nil
	}
	if ferr != nil {
		return false, fmt.Errorf("create the cookie file %s: %w", path, ferr)
	}
	_, werr = f.WriteString(text)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return false, fmt.Errorf("create the cookie file %s: %w", path, werr)
	}
	return true, nil
}
