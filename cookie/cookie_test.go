package cookie

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "s3cr3t-cookie-text-for-tests"

func mustNew(t *testing.T, text string) Cookie {
	t.Helper()
	c, err := New(text)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNeverPrinted(t *testing.T) {
	c := mustNew(t, secret)
	type holder struct {
		Name   string
		Cookie Cookie
	}
	for _, s := range []string{
		fmt.Sprint(c), fmt.Sprintf("%v %s %q %x %X %d %+v %#v", c, c, c, c, c, c, c, c),
		fmt.Sprintf("%+v %#v", holder{"n", c}, holder{"n", c}), c.String(),
	} {
		if strings.Contains(s, secret) || strings.Contains(s, fmt.Sprintf("%x", secret)) {
			t.Fatalf("the cookie leaked: %s", s)
		}
	}
}

func TestNew(t *testing.T) {
	if c := mustNew(t, "  abc\n"); !bytes.Equal(c.secret, []byte("abc")) {
		t.Fatalf("white space kept: %q", c.secret)
	}
	for _, bad := range []string{"", " \n\t", strings.Repeat("x", MaxLen+1)} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%.20q...) accepted", bad)
		}
	}
	if !mustNew(t, "short").Weak() || mustNew(t, secret).Weak() {
		t.Error("Weak misjudges length")
	}
}

func TestKeys(t *testing.T) {
	c, d := mustNew(t, secret), mustNew(t, secret+"x")
	g, tr := c.GossipKey(), c.TransportKey()
	if len(g) != 32 || len(tr) != 32 {
		t.Fatalf("key lengths %d and %d, want 32", len(g), len(tr))
	}
	if bytes.Equal(g, tr) {
		t.Fatal("gossip and transport keys are equal")
	}
	if !bytes.Equal(g, mustNew(t, secret).GossipKey()) {
		t.Fatal("keys are not deterministic")
	}
	if bytes.Equal(g, d.GossipKey()) || bytes.Equal(tr, d.TransportKey()) {
		t.Fatal("different cookies give the same key")
	}
	if bytes.Contains(g, []byte(secret)) || bytes.Contains(tr, []byte(secret)) {
		t.Fatal("a key contains the cookie")
	}
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", DefaultFile)
	c, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created %v, %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o400 {
		t.Fatalf("new cookie file has mode %04o, want 0400", perm)
	}
	if c.Weak() || len(c.secret) < 40 {
		t.Fatalf("generated cookie of %d bytes", len(c.secret))
	}
	again, created, err := LoadOrCreate(path)
	if err != nil || created || !bytes.Equal(again.secret, c.secret) {
		t.Fatalf("second LoadOrCreate: created %v, %v, same %v", created, err, bytes.Equal(again.secret, c.secret))
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".appnode.cookie.tmp*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// Nodes started together race to create the file: all of them must end up
// with the one cookie that won.
func TestConcurrentCreation(t *testing.T) {
	path := filepath.Join(t.TempDir(), DefaultFile)
	const n = 16
	got := make([]Cookie, n)
	errs := make([]error, n)
	var created sync.WaitGroup
	var wins sync.Map
	for i := range n {
		created.Add(1)
		go func() {
			defer created.Done()
			var c bool
			got[i], c, errs[i] = LoadOrCreate(path)
			if c {
				wins.Store(i, true)
			}
		}()
	}
	created.Wait()
	winners := 0
	wins.Range(func(any, any) bool { winners++; return true })
	if winners != 1 {
		t.Fatalf("%d callers created the file, want 1", winners)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if !bytes.Equal(got[i].secret, got[0].secret) {
			t.Fatalf("caller %d got another cookie", i)
		}
	}
}

func TestLoadRefusesSharedFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), DefaultFile)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), "chmod 400 "+path) {
		t.Fatalf("cookie file readable by others: %v, want a refusal saying chmod 400", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatal("the error shows the cookie")
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil || !bytes.Equal(c.secret, []byte(secret)) {
		t.Fatalf("private file: %v (trailing newline must be dropped)", err)
	}
	if _, err := Load(t.TempDir()); err == nil {
		t.Fatal("a directory was read as a cookie file")
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cookie")
	env := map[string]string{EnvCookieFile: file}
	getenv := func(k string) string { return env[k] }

	// Nothing given, no file: a client is told what to do, a node
	// creates the file.
	if _, _, err := Resolve("", getenv, false); err == nil || !strings.Contains(err.Error(), "--cookie") {
		t.Fatalf("client without a cookie: %v", err)
	}
	fromFile, src, err := Resolve("", getenv, true)
	if err != nil || !src.Created || src.Path != file {
		t.Fatalf("node without a cookie: %+v, %v", src, err)
	}
	if c, src, err := Resolve("", getenv, false); err != nil || src.Created || !bytes.Equal(c.secret, fromFile.secret) {
		t.Fatalf("client once the file exists: %+v, %v", src, err)
	}
	env[EnvCookie] = "from-env"
	if c, src, err := Resolve("", getenv, false); err != nil || src.What != EnvCookie || string(c.secret) != "from-env" {
		t.Fatalf("env: %+v, %v", src, err)
	}
	if c, src, err := Resolve("from-flag", getenv, false); err != nil || src.What != "--cookie" || string(c.secret) != "from-flag" {
		t.Fatalf("flag: %+v, %v", src, err)
	}
}

func TestDefaultPath(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	p, err := DefaultPath(func(string) string { return "" })
	if err != nil || p != filepath.Join(home, DefaultFile) {
		t.Fatalf("default path %q, %v", p, err)
	}
	p, err = DefaultPath(func(k string) string {
		if k == EnvCookieFile {
			return "/elsewhere/c"
		}
		return ""
	})
	if err != nil || p != "/elsewhere/c" {
		t.Fatalf("with %s: %q, %v", EnvCookieFile, p, err)
	}
}
