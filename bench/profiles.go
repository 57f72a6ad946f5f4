package bench

// --profile: CPU and heap profiles of the spawned nodes, fetched from
// their net/http/pprof endpoint (APPNODE_PPROF).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// startProfiles fetches a CPU profile from every spawned node while the
// load runs; the returned function waits for them and saves them.
func (b *bench) startProfiles(ctx context.Context) (wait func() error) {
	if b.cfg.profileDir == "" {
		return func() error { return nil }
	}
	if err := os.MkdirAll(b.cfg.profileDir, 0o755); err != nil {
		return func() error { return fmt.Errorf("profiles: %w", err) }
	}
	secs := max(1, int(b.cfg.duration/time.Second))
	errs := make([]error, len(b.nodes))
	var wg sync.WaitGroup
	for i := range b.nodes {
		wg.Go(func() {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.pprof[i], secs)
			errs[i] = fetchTo(ctx, url, filepath.Join(b.cfg.profileDir, nodeFile(b.targets[i].name)+".cpu.pprof"), time.Duration(secs+15)*time.Second)
		})
	}
	return func() error {
		wg.Wait()
		if err := b.saveHeapProfiles(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("profiles: %w", err)
		}
		b.say("CPU and heap profiles of each node saved in %s (go tool pprof -top %s)", b.cfg.profileDir, filepath.Join(b.cfg.profileDir, "*.cpu.pprof"))
		return nil
	}
}

func (b *bench) saveHeapProfiles(ctx context.Context) error {
	if err := os.MkdirAll(b.cfg.profileDir, 0o755); err != nil {
		return fmt.Errorf("profiles: %w", err)
	}
	var errs []error
	for i := range b.nodes {
		if b.nodes[i].Exited() {
			continue
		}
		url := fmt.Sprintf("http://%s/debug/pprof/heap", b.pprof[i])
		errs = append(errs, fetchTo(ctx, url, filepath.Join(b.cfg.profileDir, nodeFile(b.targets[i].name)+".heap.pprof"), 30*time.Second))
	}
	return errors.Join(errs...)
}

func nodeFile(name string) string { return strings.ReplaceAll(name, "@", "_") }

func fetchTo(ctx context.Context, url, path string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	return f.Close()
}
