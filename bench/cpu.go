package bench

// What the bench reads of its processes and of the machine from Linux's
// /proc: resident memory, and CPU time used.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/appnode/appnode/internal/procs"
)

// rssBytes reads a process's resident set size from /proc.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read resident memory of pid %d: %w (this needs Linux's /proc)", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read resident memory of pid %d: bad VmRSS line %q", pid, sc.Text())
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("read resident memory of pid %d: no VmRSS in /proc/%d/status", pid, pid)
}

// clockTicks is the unit of /proc/PID/stat's CPU times (USER_HZ), 100 on
// every Linux the bench targets; Go cannot ask sysconf without cgo.
const clockTicks = 100

// procCPU reads the CPU time (user + system) a process has used so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// benchProcName names the load generator in CPU figures, and
// restProcName everything else the machine ran meanwhile: other
// processes competing for the CPUs make a run's figures worse.
const (
	benchProcName = "bench (load generator)"
	restProcName  = "rest of the machine"
	machineBusy   = "(machine)" // a sample's key for all CPUs' busy time
)

// machineBusyTime reads the time all CPUs spent busy (not idle nor waiting
// for I/O) so far, from /proc/stat.
func machineBusyTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("/proc/stat: unexpected format")
	}
	var busy int64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, errors.New("/proc/stat: unexpected format")
		}
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}

// cpuSample is the CPU time used so far by the bench and its children.
type cpuSample map[string]time.Duration

func sampleCPU(children []*procs.Proc) cpuSample {
	s := cpuSample{}
	if d, err := machineBusyTime(); err == nil {
		s[machineBusy] = d
	}
	if d, err := procCPU(os.Getpid()); err == nil {
		s[benchProcName] = d
	}
	for _, c := range children {
		if c.Exited() {
			continue
		}
		if d, err := procCPU(c.PID()); err == nil {
			s[c.Name()] = d
		}
	}
	return s
}

// coresUsed turns two samples into CPU cores used over elapsed, for the
// processes present in both.
func coresUsed(before, after cpuSample, elapsed time.Duration) map[string]float64 {
	if elapsed <= 0 || len(before) == 0 {
		return nil
	}
	out := map[string]float64{}
	var ours float64
	for name, b := range before {
		if a, ok := after[name]; ok && name != machineBusy {
			out[name] = float64(a-b) / float64(elapsed)
			ours += out[name]
		}
	}
	if b, ok := before[machineBusy]; ok {
		if a, ok := after[machineBusy]; ok {
			// Includes a killed node's share, which has no after sample.
			out[restProcName] = max(0, float64(a-b)/float64(elapsed)-ours)
		}
	}
	return out
}
