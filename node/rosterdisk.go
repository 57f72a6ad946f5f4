package node

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/appnode/appnode/quorum"
	"github.com/vmihailenco/msgpack/v5"
)

// rosterDisk keeps this node's vote on the roster in its state directory,
// in NAME@HOST.roster, so that a node restarted under its name votes with
// the promises it made: a decided change of the roster can then never be
// undone by a restart. Each save writes a new file, syncs it and renames it
// over the old one.
type rosterDisk struct{ path string }

func newRosterDisk(dir, name string) *rosterDisk {
	return &rosterDisk{path: filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+".roster")}
}

func (d *rosterDisk) Load() (quorum.Acceptor, bool, error) {
	var a quorum.Acceptor
	b, err := os.ReadFile(d.path)
	if errors.Is(err, fs.ErrNotExist) {
		return a, false, nil
	}
	if err != nil {
		return a, false, fmt.Errorf("read %s: %w", d.path, err)
	}
	if err := msgpack.Unmarshal(b, &a); err != nil {
		return a, false, fmt.Errorf("read %s: %w (remove the file to start this node in a cluster of its own)", d.path, err)
	}
	return a, true, nil
}

func (d *rosterDisk) Save(a quorum.Acceptor) error {
	var buf bytes.Buffer
	if err := msgpack.NewEncoder(&buf).Encode(&a); err != nil {
		return fmt.Errorf("encode the roster vote: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(d.path), 0o700); err != nil {
		return err
	}
	tmp := d.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, d.path); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(d.path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}
