package bench

// The bare wire of `appnode bench --floor`: the same forward-and-ack as the
// floor, written as plainly as Go allows and with none of this project's
// transport (no handshake, deadlines per call, multiplexing machinery or
// handler goroutines): one connection, a read loop, a write per frame,
// msgpack. It is the equivalent, inside the bench, of ../shared/peers'
// mpbench, so that every report shows what the transport costs over it.
// `appnode bench serve-bare` is one server: bare-a answers a client's
// request only after forwarding it to bare-b (--backup) and getting its
// ack; bare-b answers at once.
//
// The bare mesh is the same servers in the cluster's shape: as many as
// the cluster has nodes (--owners lists them, --self is this one), each
// the owner of the players that hash to it and forwarding each of their
// rewards to the one of the others that the player hashes to (--backup
// lists them), as a node replicates to a player's keeper. A reward that
// reaches a server other than its player's owner is passed to the owner,
// and its answer back, as a node forwards a reward.
//
// Frames are a 4-byte big-endian length and a msgpack body:
// bareReq{ID, Player, Points, Keep} and bareResp{ID, Total}. Keep marks a
// forwarded copy, answered at once.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

type bareReq struct {
	ID     uint64
	Player string
	Points int64
	Keep   bool `msgpack:",omitempty"`
}

type bareResp struct {
	ID    uint64
	Total int64
}

const (
	bareBuf      = 64 << 10
	bareMaxFrame = 1 << 20
)

func bareWrite(bw *bufio.Writer, v any) error {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return err
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := bw.Write(hdr[:]); err != nil {
		return err
	}
	_, err = bw.Write(b)
	return err
}

func bareRead(br *bufio.Reader, buf *[]byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n > bareMaxFrame {
		return nil, errors.New("frame too large")
	}
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	_, err := io.ReadFull(br, b)
	return b, err
}

// bareBuffered reports whether a whole frame is buffered: replies are
// flushed when it is not, so that none waits behind a blocking read.
func bareBuffered(br *bufio.Reader) bool {
	if br.Buffered() < 4 {
		return false
	}
	h, _ := br.Peek(4)
	return br.Buffered() >= 4+int(binary.BigEndian.Uint32(h))
}

// bareStore is the primary's state: totals in a sharded map.
type bareStore struct {
	shards [64]struct {
		mu sync.Mutex
		m  map[string]int64
	}
}

// bareHash spreads players over shards, owners and backups.
func bareHash(player string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(player))
	return h.Sum32()
}

func (s *bareStore) add(player string, pts int64) int64 {
	sh := &s.shards[bareHash(player)%uint32(len(s.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m == nil {
		sh.m = make(map[string]int64)
	}
	sh.m[player] += pts
	return sh.m[player]
}

// bareInbound is a client's connection; the backup's reader writes the
// replies to it.
type bareInbound struct {
	mu sync.Mutex
	bw *bufio.Writer
}

type barePending struct {
	in    *bareInbound
	id    uint64
	total int64
	relay bool // passed to the owner: answer with its total
}

// bareBackup is the primary's one connection to the backup.
type bareBackup struct {
	mu      sync.Mutex
	bw      *bufio.Writer
	nextID  uint64
	pending map[uint64]barePending
	br      *bufio.Reader
}

func (b *bareBackup) forward(in *bareInbound, id uint64, player string, pts, total int64, flush bool) error {
	return b.send(barePending{in: in, id: id, total: total}, &bareReq{Player: player, Points: pts, Keep: true}, flush)
}

// relay passes a client's reward to its owner.
func (b *bareBackup) relay(in *bareInbound, id uint64, player string, pts int64, flush bool) error {
	return b.send(barePending{in: in, id: id, relay: true}, &bareReq{Player: player, Points: pts}, flush)
}

func (b *bareBackup) send(p barePending, r *bareReq, flush bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	b.pending[b.nextID] = p
	r.ID = b.nextID
	if err := bareWrite(b.bw, r); err != nil {
		return err
	}
	if flush {
		return b.bw.Flush()
	}
	return nil
}

func (b *bareBackup) readLoop() error {
	var buf []byte
	dirty := map[*bareInbound]bool{}
	for {
		body, err := bareRead(b.br, &buf)
		if err != nil {
			return err
		}
		var r bareResp
		if err := msgpack.Unmarshal(body, &r); err != nil {
			return err
		}
		b.mu.Lock()
		p, ok := b.pending[r.ID]
		delete(b.pending, r.ID)
		b.mu.Unlock()
		if !ok {
			return fmt.Errorf("unknown ack %d", r.ID)
		}
		if p.relay {
			p.total = r.Total
		}
		p.in.mu.Lock()
		err = bareWrite(p.in.bw, &bareResp{ID: p.id, Total: p.total})
		p.in.mu.Unlock()
		if err == nil {
			dirty[p.in] = true
		}
		if !bareBuffered(b.br) {
			for in := range dirty {
				in.mu.Lock()
				in.bw.Flush()
				in.mu.Unlock()
				delete(dirty, in)
			}
		}
	}
}

// bareRoute is where a bare server sends its clients' requests: to the
// player's owner among owners if that is not this server (owners[self]),
// else to the backup the player hashes to among backups. Connections are
// dialed on first use (the servers of a mesh start one after another). A
// server with neither answers at once.
type bareRoute struct {
	backups []string
	owners  []string
	self    int
	links   map[string]*bareLink // by address, made up front
	wg      sync.WaitGroup       // the links' read loops
	// lost is told when a link ends (the server then exits: the bench
	// sees it).
	lost func(error)
}

type bareLink struct {
	once sync.Once
	addr string
	bk   *bareBackup
	c    net.Conn
	err  error
}

func newBareRoute(backups, owners []string, self int, lost func(error)) *bareRoute {
	r := &bareRoute{backups: backups, owners: owners, self: self, links: map[string]*bareLink{}, lost: lost}
	for _, a := range append(slices.Clone(backups), owners...) {
		r.links[a] = &bareLink{addr: a}
	}
	return r
}

// ownerElsewhere returns the link to player's owner, or nil if this
// server is it (or there is no mesh).
func (r *bareRoute) ownerElsewhere(player string) (*bareBackup, error) {
	if len(r.owners) == 0 {
		return nil, nil
	}
	i := int(bareHash(player) % uint32(len(r.owners)))
	if i == r.self {
		return nil, nil
	}
	return r.dial(r.links[r.owners[i]])
}

func (r *bareRoute) backupFor(player string) (*bareBackup, error) {
	return r.dial(r.links[r.backups[bareHash(player)%uint32(len(r.backups))]])
}

func (r *bareRoute) dial(l *bareLink) (*bareBackup, error) {
	l.once.Do(func() {
		l.c, l.err = net.DialTimeout("tcp", l.addr, 5*time.Second)
		if l.err != nil {
			return
		}
		l.bk = &bareBackup{bw: bufio.NewWriterSize(l.c, bareBuf), br: bufio.NewReaderSize(l.c, bareBuf), pending: map[uint64]barePending{}}
		r.wg.Go(func() { r.lost(l.bk.readLoop()) })
	})
	return l.bk, l.err
}

// close closes the links and waits for their read loops.
func (r *bareRoute) close() {
	for _, l := range r.links {
		l.once.Do(func() {}) // none dialed from now on
		if l.c != nil {
			l.c.Close()
		}
	}
	r.wg.Wait()
}

func bareServeConn(c net.Conn, st *bareStore, route *bareRoute) {
	defer c.Close()
	br := bufio.NewReaderSize(c, bareBuf)
	in := &bareInbound{bw: bufio.NewWriterSize(c, bareBuf)}
	var buf []byte
	for {
		body, err := bareRead(br, &buf)
		if err != nil {
			return
		}
		var r bareReq
		if err := msgpack.Unmarshal(body, &r); err != nil {
			return
		}
		more := bareBuffered(br)
		if !r.Keep && route != nil {
			owner, err := route.ownerElsewhere(r.Player)
			if err != nil {
				return
			}
			if owner != nil {
				if err := owner.relay(in, r.ID, r.Player, r.Points, !more); err != nil {
					return
				}
				continue
			}
		}
		total := st.add(r.Player, r.Points)
		if !r.Keep && route != nil && len(route.backups) > 0 {
			bk, err := route.backupFor(r.Player)
			if err != nil {
				return
			}
			if err := bk.forward(in, r.ID, r.Player, r.Points, total, !more); err != nil {
				return
			}
			continue
		}
		in.mu.Lock()
		err = bareWrite(in.bw, &bareResp{ID: r.ID, Total: total})
		if err == nil && !more {
			err = in.bw.Flush()
		}
		in.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// serveBare runs one bare server until its stdin closes or a signal comes.
// It prints its address as its first line of output. It trusts whoever
// connects: it listens on 127.0.0.1 only, for the bench's run.
func serveBare(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("appnode bench serve-bare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	backup := fs.String("backup", "", "HOST:PORT[,HOST:PORT...] of the bare servers to forward each request to, the one its player hashes to (none: answer at once)")
	owners := fs.String("owners", "", "HOST:PORT,... of every server of a bare mesh: a request whose player hashes to another is passed to it")
	self := fs.Int("self", 0, "with --owners: this server's place in the list, from 0")
	listen := fs.String("listen", "127.0.0.1:0", "the address to listen on")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	list := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	if o := list(*owners); o != nil && (*self < 0 || *self >= len(o)) {
		fmt.Fprintf(stderr, "appnode bench serve-bare: --self %d is not a place in --owners (0 to %d)\n", *self, len(o)-1)
		return 2
	}
	route := newBareRoute(list(*backup), list(*owners), *self, func(err error) {
		fmt.Fprintf(stderr, "appnode bench serve-bare: backup connection: %v\n", err)
		os.Exit(1)
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "appnode bench serve-bare: %v\n", err)
		return 1
	}
	defer ln.Close()
	fmt.Fprintln(stdout, ln.Addr())
	st := &bareStore{}
	go func() {
		// Ends when the listener closes, as the process exits.
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go bareServeConn(c, st, route)
		}
	}()
	untilTold()
	return 0
}

// bareClient is the bench's connection to bare-a, used as mpbench's
// client is: with one caller (lone), the caller writes its request and
// reads the reply itself; with more, they queue to a writer goroutine that
// writes everything queued at once, and a reader goroutine hands each
// reply back (mpbench -mode pipe).
type bareClient struct {
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	lone bool

	mu       sync.Mutex // lone: the connection; else pending and nextID
	buf      []byte
	deadline time.Time // lone: the read/write deadline last set
	nextID   uint64
	pending  map[uint64]chan bareResp
	reqs     chan *bareReq
	err      error
	done     chan struct{}
	wg       sync.WaitGroup
}

func dialBare(ctx context.Context, addr string, lone bool) (*bareClient, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &bareClient{c: c, br: bufio.NewReaderSize(c, bareBuf), bw: bufio.NewWriterSize(c, bareBuf), lone: lone,
		pending: map[uint64]chan bareResp{}, reqs: make(chan *bareReq, 1024), done: make(chan struct{})}
	if !lone {
		b.wg.Add(2)
		go b.writeLoop()
		go b.readLoop()
	}
	return b, nil
}

// reward sends one request and waits for its reply. A lone caller's
// socket has a deadline of timeout from the call (or ctx's, if sooner),
// moved at most every second, so that a dead server cannot hang the
// bench; pipelined calls end with ctx (the phase's end), as mpbench's
// have no deadline at all.
func (b *bareClient) reward(ctx context.Context, player string, points int64, timeout time.Duration) error {
	if b.lone {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.err != nil {
			return b.err
		}
		dl := time.Now().Add(timeout)
		if d, ok := ctx.Deadline(); ok && d.Before(dl) {
			dl = d
		}
		err := b.loneCall(dl, player, points)
		if err != nil {
			// The stream may be cut mid-frame: nothing more on it.
			b.err = fmt.Errorf("bare wire: %w", err)
			close(b.done)
			b.c.Close()
		}
		return err
	}
	ch := make(chan bareResp, 1)
	b.mu.Lock()
	if b.err != nil {
		b.mu.Unlock()
		return b.err
	}
	b.nextID++
	id := b.nextID
	b.pending[id] = ch
	b.mu.Unlock()
	select {
	case b.reqs <- &bareReq{ID: id, Player: player, Points: points}:
	case <-b.done:
		return b.closedErr()
	}
	select {
	case <-ch:
		return nil
	case <-b.done:
		return b.closedErr()
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return ctx.Err()
	}
}

// loneCall is a lone caller's request and reply, under mu.
func (b *bareClient) loneCall(dl time.Time, player string, points int64) error {
	if dl.Sub(b.deadline) > time.Second || dl.Before(b.deadline) {
		b.c.SetDeadline(dl)
		b.deadline = dl
	}
	b.nextID++
	if err := bareWrite(b.bw, &bareReq{ID: b.nextID, Player: player, Points: points}); err != nil {
		return err
	}
	if err := b.bw.Flush(); err != nil {
		return err
	}
	body, err := bareRead(b.br, &b.buf)
	if err != nil {
		return err
	}
	var r bareResp
	if err := msgpack.Unmarshal(body, &r); err != nil {
		return err
	}
	if r.ID != b.nextID {
		return fmt.Errorf("bare wire: reply %d to request %d", r.ID, b.nextID)
	}
	return nil
}

func (b *bareClient) closedErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

func (b *bareClient) writeLoop() {
	defer b.wg.Done()
	for {
		select {
		case r := <-b.reqs:
			if err := bareWrite(b.bw, r); err != nil {
				b.fail(err)
				return
			}
			if len(b.reqs) == 0 {
				if err := b.bw.Flush(); err != nil {
					b.fail(err)
					return
				}
			}
		case <-b.done:
			return
		}
	}
}

func (b *bareClient) readLoop() {
	defer b.wg.Done()
	var buf []byte
	for {
		body, err := bareRead(b.br, &buf)
		if err != nil {
			b.fail(err)
			return
		}
		var r bareResp
		if err := msgpack.Unmarshal(body, &r); err != nil {
			b.fail(err)
			return
		}
		b.mu.Lock()
		ch := b.pending[r.ID]
		delete(b.pending, r.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

func (b *bareClient) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = fmt.Errorf("bare wire: %w", err)
		close(b.done)
		b.c.Close()
	}
}

// Close closes the connection and waits for its goroutines.
func (b *bareClient) Close() error {
	b.fail(net.ErrClosed)
	b.wg.Wait()
	return nil
}
