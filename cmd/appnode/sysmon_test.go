package main

import (
	"slices"
	"testing"
)

func TestWithSysmonAwake(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want []string // nil: leave the process as it is
	}{
		{"no GODEBUG", []string{"HOME=/h", "PATH=/bin"}, []string{"HOME=/h", "PATH=/bin", "GODEBUG=" + sysmonAwake}},
		{"other settings kept", []string{"GODEBUG=gctrace=1,madvdontneed=1", "HOME=/h"}, []string{"HOME=/h", "GODEBUG=gctrace=1,madvdontneed=1," + sysmonAwake}},
		{"empty GODEBUG", []string{"GODEBUG="}, []string{"GODEBUG=" + sysmonAwake}},
		{"set already, after a re-exec", []string{"GODEBUG=" + sysmonAwake}, nil},
		{"the operator's own schedtrace", []string{"GODEBUG=gctrace=1,schedtrace=0"}, nil},
		{"a look-alike is not schedtrace", []string{"GODEBUG=xschedtrace=1"}, []string{"GODEBUG=xschedtrace=1," + sysmonAwake}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := withSysmonAwake(tc.env)
			if !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Errorf("withSysmonAwake(%q) = %q, want %q", tc.env, got, tc.want)
			}
		})
	}
}
