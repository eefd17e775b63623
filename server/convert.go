package server

import (
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/store"
)

func secondsDuration(s int64) time.Duration { return time.Duration(s) * time.Second }

// stopSignal is the image's StopSignal recorded at create, as a number.
func stopSignal(c *store.Container) int {
	return parseSignal(c.Extra["stop_signal"])
}

// parseSignal accepts "SIGQUIT", "QUIT" or "3"; anything else is 0.
func parseSignal(s string) int {
	if s == "" {
		return 0
	}
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	return int(unix.SignalNum(name))
}
