package front

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func parseHTTPFlags(t *testing.T, args ...string) *DoorFlags {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	h := AddDoorFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return h
}

// By default the front door binds loopback, and a name gets the same
// port again when it restarts.
func TestHTTPDefaultIsLoopbackAndRemembersThePort(t *testing.T) {
	t.Setenv(EnvHTTPToken, "")
	dir := t.TempDir()
	d, err := ListenDoor(parseHTTPFlags(t), "n1@host", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := d.ln.Addr().(*net.TCPAddr)
	if !addr.IP.IsLoopback() || d.url != "http://127.0.0.1:"+strconv.Itoa(addr.Port) || d.port != addr.Port {
		t.Fatalf("default front door on %v, url %s", addr, d.url)
	}
	d.Close()
	again, err := ListenDoor(parseHTTPFlags(t), "n1@host", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.port != d.port {
		t.Fatalf("restart got port %d, want the remembered %d", again.port, d.port)
	}
	// Taken by the first: another name gets another port.
	other, err := ListenDoor(parseHTTPFlags(t), "n2@host", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if other.port == again.port {
		t.Fatal("two names share a port")
	}
	if !strings.Contains(again.Banner(), again.url) {
		t.Fatalf("banner %q", again.Banner())
	}
}

func TestHTTPFlags(t *testing.T) {
	t.Setenv(EnvHTTPToken, "")
	dir := t.TempDir()
	off, err := ListenDoor(parseHTTPFlags(t, "--http", "off"), "n@h", dir, nil)
	if err != nil || off.ln != nil || off.url != "" || off.port != 0 {
		t.Fatalf("--http off: %+v %v", off, err)
	}
	for _, bad := range []string{"nonsense", "127.0.0.1:99999", "70000"} {
		if d, err := ListenDoor(parseHTTPFlags(t, "--http", bad), "n@h", dir, nil); err == nil {
			d.Close()
			t.Errorf("--http %s was accepted", bad)
		}
	}
	if _, err := ListenDoor(parseHTTPFlags(t, "--http-cert", "c.pem"), "n@h", dir, nil); err == nil {
		t.Error("--http-cert without --http-key was accepted")
	}
	d, err := ListenDoor(parseHTTPFlags(t, "--http", "127.0.0.1:0", "--http-cert", "c.pem", "--http-key", "k.pem"), "n@h", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if !strings.HasPrefix(d.url, "https://127.0.0.1:") {
		t.Fatalf("with TLS the URL is %s", d.url)
	}
}

// The token comes from the file first, then the flag, then the
// environment.
func TestHTTPToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-file\nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvHTTPToken, "from-env")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "from-env"},
		{[]string{"--http-token", "from-flag"}, "from-flag"},
		{[]string{"--http-token", "from-flag", "--http-token-file", file}, "from-file"},
	} {
		got, err := doorToken(parseHTTPFlags(t, tc.args...))
		if err != nil || got != tc.want {
			t.Errorf("%v: %q %v, want %q", tc.args, got, err, tc.want)
		}
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := doorToken(parseHTTPFlags(t, "--http-token-file", empty)); err == nil {
		t.Error("an empty token file was accepted")
	}
	if _, err := doorToken(parseHTTPFlags(t, "--http-token-file", filepath.Join(t.TempDir(), "missing"))); err == nil {
		t.Error("a missing token file was accepted")
	}
}
