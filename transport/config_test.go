package transport

import (
	"strings"
	"testing"

	"github.com/appnode/appnode/cookie"
)

// DefaultConfig is valid as it is; Listen refuses a config with a required
// part missing or a limit unset, and says which.
func TestConfigValidate(t *testing.T) {
	n := newTestNet(t)
	peers := &testNode{net: n, name: "a"}
	if err := DefaultConfig(testCookie, peers, handlerFuncs{handle: echo}).Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	for field, spoil := range map[string]func(*Config){
		"Cookie":         func(c *Config) { c.Cookie = cookie.Cookie{} },
		"Peers":          func(c *Config) { c.Peers = nil },
		"Handler":        func(c *Config) { c.Handler = nil },
		"Port":           func(c *Config) { c.Port = 70000 },
		"DialTimeout":    func(c *Config) { c.DialTimeout = 0 },
		"RequestTimeout": func(c *Config) { c.RequestTimeout = -1 },
		"MaxInflight":    func(c *Config) { c.MaxInflight = 0 },
		"MaxConns":       func(c *Config) { c.MaxConns = 0 },
		"IdleTimeout":    func(c *Config) { c.IdleTimeout = 0 },
	} {
		cfg := DefaultConfig(testCookie, peers, handlerFuncs{handle: echo})
		spoil(&cfg)
		tr, err := Listen(cfg)
		if err == nil {
			tr.Close()
			t.Errorf("a config without a valid %s was accepted", field)
		} else if !strings.Contains(err.Error(), field) {
			t.Errorf("without a valid %s: %v, which does not name it", field, err)
		}
	}
}
