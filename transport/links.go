package transport

// Links reports, for every node name this Transport has called, whether
// it holds an open outbound connection to it now (for the front door's
// per-peer link metric). A name with a dial under way and no connection
// reads false.
func (t *Transport) Links() map[string]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]bool, len(t.peers))
	for name, p := range t.peers {
		out[name] = p.conn != nil && !p.conn.isClosed()
	}
	return out
}
