package membership

import (
	"bytes"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

var (
	key1 = bytes.Repeat([]byte{1}, 32)
	key2 = bytes.Repeat([]byte{2}, 32)
)

func startKeyed(t *testing.T, l *testLog, name string, key []byte) *Membership {
	t.Helper()
	m, err := Start(Config{Name: name, BindAddr: "127.0.0.1", Profile: ProfileLocal, SecretKey: key, Logf: l.logf(name)})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Errorf("shutdown %s: %v", name, err)
		}
	})
	return m
}

func addrOf(m *Membership) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port())) }

func names(m *Membership) []string {
	var out []string
	for _, a := range m.Alive() {
		out = append(out, a.Name)
	}
	return out
}

// Members with different keys, or one with a key and one without, never
// form a cluster, whoever joins whom; members with the same key do.
func TestGossipKeyKeepsClustersApart(t *testing.T) {
	checkGoroutines(t)
	l := newTestLog(t)
	a := startKeyed(t, l, "a@test", key1)
	b := startKeyed(t, l, "b@test", key1)
	other := startKeyed(t, l, "other@test", key2)
	plain := startKeyed(t, l, "plain@test", nil)

	if _, err := b.Join([]string{addrOf(a)}); err != nil {
		t.Fatalf("same key: %v", err)
	}
	waitFor(t, "a and b to see each other", func() bool {
		return slices.Equal(names(a), []string{"a@test", "b@test"}) && slices.Equal(names(b), []string{"a@test", "b@test"})
	})

	for _, c := range []struct {
		what     string
		from, to *Membership
	}{
		{"another key joining", other, a},
		{"joining another key", a, other},
		{"no key joining", plain, a},
		{"joining no key", a, plain},
	} {
		n, err := c.from.Join([]string{addrOf(c.to)})
		if !errors.Is(err, ErrGossipKey) || n != 0 {
			t.Fatalf("%s: join reached %d, err %v; want ErrGossipKey", c.what, n, err)
		}
		t.Logf("%s: %v", c.what, err)
	}
	// Serf would retry a failed member; these were never members.
	for _, m := range []*Membership{a, b} {
		if got := names(m); !slices.Equal(got, []string{"a@test", "b@test"}) {
			t.Fatalf("members %v after strangers tried to join", got)
		}
	}
	if got := names(other); !slices.Equal(got, []string{"other@test"}) {
		t.Fatalf("the member with another key sees %v", got)
	}
	if got := names(plain); !slices.Equal(got, []string{"plain@test"}) {
		t.Fatalf("the member without a key sees %v", got)
	}
}

// Strangers cannot make the gossip port hold more than maxGossipStreams
// streams, nor more than maxGossipStreamBytes per stream.
func TestGossipStreamLimits(t *testing.T) {
	checkGoroutines(t)
	l := newTestLog(t)
	a := startKeyed(t, l, "a@test", key1)
	b := startKeyed(t, l, "b@test", key1)

	// Silent streams: memberlist holds each until TCPTimeout.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range maxGossipStreams + 1 {
		c, err := net.Dial("tcp", addrOf(a))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitFor(t, "a stream over the cap to be refused", func() bool { return a.Stats().StreamsRefused >= 1 })
	for _, c := range conns {
		c.Close()
	}
	conns = nil

	// A stream announcing a 16 MiB encrypted push/pull and sending it. The
	// silent streams' slots are released as the node notices they closed,
	// so a stream opened before that is refused at once rather than cut:
	// open another until one is cut.
	var writers sync.WaitGroup
	defer writers.Wait()
	waitFor(t, "the oversized stream to be cut", func() bool {
		if a.Stats().StreamsTooLong >= 1 {
			return true
		}
		c, err := net.Dial("tcp", addrOf(a))
		if err != nil {
			return false
		}
		conns = append(conns, c)
		done := make(chan struct{})
		writers.Add(1)
		go func() {
			defer writers.Done()
			defer close(done)
			// Write until the node cuts the stream off (the write fails).
			_, _ = c.Write([]byte{10, 0x01, 0, 0, 0}) // encryptMsg, length 2^24
			chunk := make([]byte, 64<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.Close()
			<-done
		}
		return a.Stats().StreamsTooLong >= 1
	})

	// The member still joins once the slots are free.
	deadline := time.Now().Add(detectDeadline)
	for {
		if _, err := b.Join([]string{addrOf(a)}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("join after the strangers: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // retry interval, not synchronisation
	}
	waitFor(t, "a and b to see each other", func() bool { return len(names(a)) == 2 && len(names(b)) == 2 })
}
