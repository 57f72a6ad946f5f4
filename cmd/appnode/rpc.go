package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/appnode/appnode/client"
	"github.com/appnode/appnode/cookie"
	"github.com/appnode/appnode/wire"
)

// rpc runs one console command on a running node, as erl_call does, and
// exits non-zero if it failed.
func rpc(args []string) int {
	fs := flag.NewFlagSet("appnode rpc", flag.ContinueOnError)
	namesPort := fs.Int("names-port", client.DefaultNamesPort(), "port of the target host's name service (env "+client.EnvNamesPort+")")
	timeout := fs.Duration("timeout", 15*time.Second, "how long to wait for the answer")
	cookieFlag := fs.String("cookie", "", cookieUsage)
	id := fs.String("id", "", "with `reward PLAYER POINTS`: name the request KEY; a retry with the same KEY, at any node, is answered with the total it gave, never applied twice")
	asJSON := fs.Bool("json", false, `print {"output":..., "failed":..., "code":..., "outcome":...} on stdout instead of the answer alone`)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: appnode rpc [flags] NAME@HOST COMMAND...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 2 {
		fs.Usage()
		return 2
	}
	target := client.FullName(fs.Arg(0))
	line := strings.Join(fs.Args()[1:], " ")
	words := strings.Fields(line)
	if *id != "" && (len(words) != 3 || words[0] != "reward") {
		fmt.Fprintf(os.Stderr, "appnode rpc: --id goes with `reward PLAYER POINTS`, not %q\n", line)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	rep, err := rpcCall(ctx, target, *namesPort, *cookieFlag, line, *id)
	if err != nil {
		fmt.Fprintf(os.Stderr, "appnode rpc: %v\n", err)
		return 1
	}
	if err := printReply(rep, *asJSON); err != nil {
		fmt.Fprintf(os.Stderr, "appnode rpc: %v\n", err)
		return 1
	}
	if rep.Failed {
		return 1
	}
	return 0
}

// rpcCall runs line on target, or with a key, the reward it names through
// client.RewardOnce. An error means no answer came.
func rpcCall(ctx context.Context, target string, namesPort int, cookieFlag, line, key string) (*wire.CommandReply, error) {
	var secret cookie.Cookie // zero: the client reads it once the node is found
	if cookieFlag != "" {
		var err error
		if secret, _, err = cookie.Resolve(cookieFlag, os.Getenv, false); err != nil {
			return nil, err
		}
	}
	c, err := client.Dial(ctx, target, client.Config{
		NamesPort: namesPort,
		Cookie:    secret,
		Self:      client.FullName(fmt.Sprintf("rpc-%d", os.Getpid())),
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if key == "" {
		return c.Command(ctx, line)
	}
	words := strings.Fields(line)
	total, err := c.RewardOnce(ctx, words[1], words[2], key)
	if err != nil {
		// Whatever went wrong, even a lost answer, is an answer here: its
		// outcome says whether retrying with the same key is needed.
		return &wire.CommandReply{Output: errorAnswer(err), Failed: true, Code: wire.CodeFor(err), Outcome: wire.OutcomeOf(err)}, nil
	}
	return &wire.CommandReply{Output: fmt.Sprint(total)}, nil
}

// errorAnswer prints a failed reward as the console does: a node's
// refusal in its own words, anything else with where it happened.
func errorAnswer(err error) string {
	msg := err.Error()
	var we *wire.Error
	if errors.As(err, &we) {
		msg = we.Msg
	}
	if we != nil && we.Code == wire.CodeCrashed {
		return "** crash: " + msg
	}
	return "** error: " + msg
}

// rpcJSON is what --json prints: the answer, and when it failed, the
// error's code (wire.Code's name) and the outcome of the request
// ("applied", "not applied" or "unknown"), so that scripts need not read
// the words.
type rpcJSON struct {
	Output  string  `json:"output"`
	Failed  bool    `json:"failed"`
	Code    *string `json:"code"` // null when it did not fail
	Outcome string  `json:"outcome"`
}

// printReply prints the answer: on stdout, or on stderr when the command
// failed; with asJSON, the JSON object on stdout either way.
func printReply(rep *wire.CommandReply, asJSON bool) error {
	if asJSON {
		out := rpcJSON{Output: rep.Output, Failed: rep.Failed, Outcome: rep.Outcome.String()}
		if rep.Failed {
			code := rep.Code.String()
			out.Code = &code
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(os.Stdout, "%s\n", b)
		return err
	}
	w := io.Writer(os.Stdout)
	if rep.Failed {
		w = os.Stderr
	}
	_, err := fmt.Fprintln(w, rep.Output)
	return err
}
