package main

// HTTPURL lets the console's http command, run through `appnode rpc`,
// find the URL of the node behind lateCluster.
func (l *lateCluster) HTTPURL() string {
	if h, ok := l.Cluster.(interface{ HTTPURL() string }); ok {
		return h.HTTPURL()
	}
	return ""
}
