package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/node"
)

// DefaultConfig is valid as it is; Start refuses a config with a part
// missing or out of range, says what is wrong, and starts nothing.
func TestConfigValidate(t *testing.T) {
	if err := node.DefaultConfig("a", testCookie).Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	for want, spoil := range map[string]func(*node.Config){
		"must look like NAME@HOST":   func(c *node.Config) { c.Name = "a@b@c" },
		"no cookie":                  func(c *node.Config) { c.Cookie = cookie.Cookie{} },
		"not an IP address":          func(c *node.Config) { c.BindAddr = "" },
		"must be TCP port numbers":   func(c *node.Config) { c.GossipPort = -1 },
		"name service port 0":        func(c *node.Config) { c.NamesPort = 0 },
		"LinkTimeout (0s) must be":   func(c *node.Config) { c.LinkTimeout = 0 },
		"CallTimeout (-1ns) and Lin": func(c *node.Config) { c.CallTimeout = -1 },
	} {
		cfg := node.DefaultConfig("a@testhost", testCookie)
		spoil(&cfg)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n, err := node.Start(ctx, cfg)
		cancel()
		if err == nil {
			n.Close()
			t.Errorf("Start accepted a config whose error should say %q", want)
		} else if !strings.Contains(err.Error(), want) {
			t.Errorf("Start: %v, want it to say %q", err, want)
		}
	}
}
