package shell

import (
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/chzyer/readline"
)

// interruptible returns a reader of the same input as in whose Close ends a
// pending Read, and whether it is a new file that the caller must close.
//
// Run must return when its context is done, also while it waits for a key.
// Closing os.Stdin does not end a Read in progress: Go reads a terminal or a
// pipe inherited as descriptor 0 with a blocking system call. On Linux,
// opening /proc/self/fd/N gives a new descriptor of the same terminal or
// pipe, which Go reads through its poller, so closing it ends the Read at
// once; the inherited descriptor keeps its flags, so the shell we return to
// is unaffected. Regular files never block, and elsewhere the reopening
// fails: then in is used as it is.
func interruptible(in io.ReadCloser) (io.ReadCloser, bool) {
	f, ok := in.(*os.File)
	if !ok {
		return in, false
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&(os.ModeNamedPipe|os.ModeCharDevice) == 0 {
		return in, false
	}
	var name string
	if err := withFd(f, func(fd int) error {
		name = "/proc/self/fd/" + strconv.Itoa(fd)
		return nil
	}); err != nil {
		return in, false
	}
	g, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		return in, false
	}
	return g, true
}

// withFd calls f with the descriptor behind v, if v is a file. Unlike
// os.File.Fd it leaves the file in non-blocking mode, so that its Close
// still interrupts a Read.
func withFd(v any, f func(fd int) error) error {
	sc, ok := v.(syscall.Conn)
	if !ok {
		return errors.New("not a file")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// makeRaw puts the terminal behind in into raw mode and returns the
// function that restores it; both do nothing if in is not a terminal.
//
// Readline would switch to raw mode only while it reads a line. The console
// stays raw for the whole session instead, so that Ctrl-C typed while a
// command runs reaches readline as a key (and clears the next prompt) rather
// than raising SIGINT, which would stop the node. Output processing stays
// on, so "\n" still starts a new line for everything the node prints.
func makeRaw(in io.Reader) (restore func()) {
	var state *readline.State
	err := withFd(in, func(fd int) (err error) {
		state, err = readline.MakeRaw(fd)
		return err
	})
	if err != nil {
		return func() {}
	}
	return func() {
		withFd(in, func(fd int) error { return readline.Restore(fd, state) })
	}
}

// width returns the number of columns of the first of files that is a
// terminal, or 80. Readline needs a width to redraw long lines and offers no
// completion without one.
func width(files ...any) int {
	for _, f := range files {
		cols := 0
		withFd(f, func(fd int) (err error) {
			cols, _, err = readline.GetSize(fd)
			return err
		})
		if cols > 0 {
			return cols
		}
	}
	return 80
}

// screen is the terminal that readline, the command loop and the event
// printer share. The lock keeps each write whole; mute drops everything
// written after readline has been closed (see closeReadline).
type screen struct {
	mu    sync.Mutex
	w     io.Writer
	muted bool
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.muted {
		return len(p), nil
	}
	return s.w.Write(p)
}

func (s *screen) mute() {
	s.mu.Lock()
	s.muted = true
	s.mu.Unlock()
}
