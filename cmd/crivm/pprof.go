//go:build crivm_pprof

// Debug-only: a crivm built with the crivm_pprof tag serves net/http/pprof
// on the loopback address in $_CRIVM_DEBUG_PPROF (e.g. 127.0.0.1:6060),
// for heap and CPU profiles of the daemon. Release builds have neither the
// tag nor the handlers.
//
//	go build -tags "containers_image_openpgp exclude_graphdriver_btrfs crivm_pprof" -o /tmp/crivm ./cmd/crivm
//	_CRIVM_DEBUG_PPROF=127.0.0.1:6060 /tmp/crivm ...
//	go tool pprof -sample_index=inuse_space http://127.0.0.1:6060/debug/pprof/heap
package main

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // registers on http.DefaultServeMux
	"os"
)

func init() {
	addr := os.Getenv("_CRIVM_DEBUG_PPROF")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "crivm: _CRIVM_DEBUG_PPROF=%q is not a loopback host:port; not serving pprof\n", addr)
		return
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "crivm: serving pprof: %v\n", err)
		return
	}
	go http.Serve(l, nil)
}
