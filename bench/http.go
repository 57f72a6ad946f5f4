package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/appnode/appnode/wire"
)

// frontDoors finds each target's HTTP front door (its `http` console
// command prints the URL) for `appnode bench --http`.
func (b *bench) frontDoors(ctx context.Context) error {
	for _, t := range b.targets {
		ctx, cancel := context.WithTimeout(ctx, commandLimit)
		rep, err := t.cl.Command(ctx, "http")
		cancel()
		if err != nil {
			return fmt.Errorf("ask %s for its HTTP address: %w", t.name, err)
		}
		if rep.Failed || !strings.HasPrefix(rep.Output, "http") {
			return fmt.Errorf("%s has no HTTP front door (it answered %q); start it with --http", t.name, rep.Output)
		}
		t.httpURL = strings.TrimRight(rep.Output, "/")
	}
	// One keep-alive connection per client and node, as a load balancer
	// or a game server would hold.
	b.httpClient = &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: b.cfg.clients,
		IdleConnTimeout:     time.Minute,
	}}
	return nil
}

// rewardHTTP sends one reward of one point to player through t's front
// door, as a client of the HTTP API would.
func (t *target) rewardHTTP(ctx context.Context, hc *http.Client, player string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.httpURL+"/players/"+url.PathEscape(player)+"/reward?points=1", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("reward %s at %s over HTTP: %w", player, t.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return fmt.Errorf("reward %s at %s over HTTP: read the answer: %w", player, t.name, err)
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return &wire.Error{Code: wire.CodeUnavailable, Msg: fmt.Sprintf("reward %s at %s over HTTP: %d %s: %s", player, t.name, resp.StatusCode, e.Error.Code, e.Error.Message)}
}
