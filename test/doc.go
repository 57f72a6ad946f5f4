// Package test holds the process-level tests of appnode: they build the
// binary once (TestMain) and run its nodes as real processes, driven as a
// user would, through their consoles and `appnode rpc`, and as programs
// would, through package client. Here are the walkthrough, failover,
// pause and graceful-exit tests (e2e_test.go), the cookie's, the chaos
// test with its linearizability check, real partitions between network
// namespaces (root only: a cut link, and REJECT rules, both ways or one,
// in reject_test.go), and smoke runs of `appnode bench`.
//
// They take a few minutes; run a subset with -run, e.g.
//
//	go test -run 'Walkthrough|RPC' ./test/
package test
