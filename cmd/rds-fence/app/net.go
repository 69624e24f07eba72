package app

import "net"

// hostOf returns the host part of host:port (or the input if it has none).
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
