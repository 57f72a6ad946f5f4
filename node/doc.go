// Package node is one appnode process as the cluster sees it: its name and
// incarnation (boot id), its registration with the host's name service,
// its Serf membership, and the transport links that carry replica
// messages to the other nodes and answer clients (`appnode rpc`, the
// bench). It wires those to a replica.Store and turns what they report
// into the store's view of the cluster and into events for the console.
package node
