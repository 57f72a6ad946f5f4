package main

import (
	"fmt"
	"os"

	"github.com/appnode/appnode/cookie"
)

// cookieUsage is the --cookie flag's help, for the node and for rpc.
const cookieUsage = "the cluster's cookie (default: env " + cookie.EnvCookie + ", else the file $" + cookie.EnvCookieFile +
	" or ~/" + cookie.DefaultFile + "); note that other local users can see a command line, not a private file"

// nodeCookie finds the cookie a node runs with, creating the cookie file
// when none is given and it does not exist yet. It says on stderr when it
// created one, and warns about a cookie short enough to guess. Neither the
// log nor stderr ever gets the cookie itself.
func nodeCookie(flagValue string, logf func(string, ...any)) (cookie.Cookie, error) {
	c, src, err := cookie.Resolve(flagValue, os.Getenv, true)
	if err != nil {
		return cookie.Cookie{}, err
	}
	logf("cookie: from %s", src)
	if src.Created {
		fmt.Fprintf(os.Stderr, "appnode: created %s with a new random cookie; nodes on other hosts need the same file (or --cookie)\n", src.Path)
	}
	if c.Weak() {
		fmt.Fprintf(os.Stderr, "appnode: warning: the cookie from %s is short; anyone who guesses it can join the cluster\n", src)
	}
	return c, nil
}
