package handlers

import (
	"io"
	"net"
	"sync"
)

// Splice copies between a port-forward stream and a connection to the
// pod's port until both directions end; each side's write half is closed
// when its source ends.
func Splice(stream io.ReadWriteCloser, conn net.Conn) {
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(conn, stream)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	})
	io.Copy(stream, conn)
	stream.Close()
	wg.Wait()
}
