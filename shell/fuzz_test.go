package shell

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse types arbitrary lines at the console. The parser must never
// panic (Eval would hide that behind an "internal" answer, so parse is
// called directly first), must either refuse a line with a reason or name
// a command with exactly its arguments, and every non-blank line must get
// a non-empty answer. The seed corpus (testdata/fuzz/FuzzParse) holds every
// command of the transcripts and a few hostile lines; regenerate it with
//
//	APPNODE_WRITE_SEEDS=1 go test -run TestWriteParseSeeds ./shell
func FuzzParse(f *testing.F) {
	// A cancelled context: "connect slow@host" must not wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.Fuzz(func(t *testing.T, line string) {
		trimmed := strings.TrimSpace(line)
		if trimmed != "" {
			cmd, problem := parse(trimmed)
			switch {
			case problem == "" && cmd.spec == nil:
				t.Fatalf("%q: no problem and no command", line)
			case problem == "" && len(cmd.args) != len(cmd.spec.params):
				t.Fatalf("%q: %s with %d arguments, want %d", line, cmd.name(), len(cmd.args), len(cmd.spec.params))
			case problem == "":
				for i, a := range cmd.args {
					if a == "" {
						t.Fatalf("%q: argument %d is empty", line, i)
					}
				}
			}
		}
		out, _, err := Eval(ctx, newFakeCluster(), line)
		switch {
		case trimmed == "" && out != "":
			t.Fatalf("blank line %q answered %q", line, out)
		case trimmed != "" && out == "":
			t.Fatalf("%q got no answer", line)
		case err != nil && !strings.HasPrefix(out, "** "):
			t.Fatalf("%q failed without saying so: %q", line, out)
		case strings.Contains(out, "** error: internal") && !strings.Contains(out, "fake cluster exploded"):
			t.Fatalf("%q made the console panic: %q", line, out)
		}
	})
}

// TestWriteParseSeeds writes FuzzParse's seed corpus from the transcripts;
// it runs only when asked.
func TestWriteParseSeeds(t *testing.T) {
	if os.Getenv("APPNODE_WRITE_SEEDS") == "" {
		t.Skip("set APPNODE_WRITE_SEEDS=1 to rewrite testdata/fuzz")
	}
	var lines []string
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), "> "); ok {
				lines = append(lines, l)
			}
		}
		f.Close()
	}
	lines = append(lines,
		"", "   ", ".", "(", ")", "().", "interface:reward_player(",
		`interface:reward_player(<<>>, 5).`,
		`interface:reward_player(<<"p\`,
		`interface:reward_player(<<"p">>, <<"5">>).`,
		`interface:reward_player('it''s', 5).`,
		`reward "quoted name" 5`,
		"reward p 99999999999999999999",
		"reward p\x00 1",
		"reward \xff\xfe 1",
		"connect slow@host",
		"net_kernel:connect_node([{a,b},<<\"c\">>]).",
		strings.Repeat("(", 64)+strings.Repeat(")", 64),
		"help.", "q().",
	)
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, l := range lines {
		body := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", l)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("line-%03d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
