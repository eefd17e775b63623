package agent

import (
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/crivm/crivm/internal/log"
)

// Linux input event constants (include/uapi/linux/input-event-codes.h).
const (
	evKey    = 0x01
	keyPower = 116
	// inputEventSize is sizeof(struct input_event) on 64-bit: a timeval,
	// then type u16, code u16, value s32.
	inputEventSize = 24
)

// WatchPowerButton calls onPress once when the ACPI power button is
// pressed, which is how QMP system_powerdown reaches the guest. It waits up
// to wait for the button's evdev node (the button and evdev modules probe
// asynchronously) and returns false if none appeared.
func WatchPowerButton(ctx context.Context, wait time.Duration, onPress func()) bool {
	deadline := time.Now().Add(wait)
	var nodes []string
	for {
		nodes = powerButtonNodes("/sys/class/input", "/dev/input")
		if len(nodes) > 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(nodes) == 0 {
		log.G(ctx).Warn("no ACPI power button found; QMP system_powerdown will not reach the agent")
		return false
	}
	pressed := make(chan struct{}, len(nodes))
	for _, n := range nodes {
		f, err := os.Open(n)
		if err != nil {
			log.G(ctx).Warn("opening power button", "node", n, "error", err)
			continue
		}
		log.G(ctx).Debug("watching power button", "node", n)
		go func() {
			defer f.Close()
			if readPowerKey(f) {
				pressed <- struct{}{}
			}
		}()
	}
	go func() {
		select {
		case <-pressed:
			onPress()
		case <-ctx.Done():
		}
	}()
	return true
}

// powerButtonNodes returns the /dev/input/eventN whose device is named
// "Power Button" (ACPI exposes one for the fixed button and one for the
// LNXPWRBN device; either may fire).
func powerButtonNodes(sysDir, devDir string) []string {
	matches, _ := filepath.Glob(filepath.Join(sysDir, "event*"))
	var out []string
	for _, m := range matches {
		b, err := os.ReadFile(filepath.Join(m, "device", "name"))
		if err != nil || strings.TrimSpace(string(b)) != "Power Button" {
			continue
		}
		n := filepath.Join(devDir, filepath.Base(m))
		if _, err := os.Stat(n); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// readPowerKey reads input events until KEY_POWER goes down, or r fails.
func readPowerKey(r io.Reader) bool {
	var ev [inputEventSize]byte
	for {
		if _, err := io.ReadFull(r, ev[:]); err != nil {
			return false
		}
		typ := binary.LittleEndian.Uint16(ev[16:])
		code := binary.LittleEndian.Uint16(ev[18:])
		value := int32(binary.LittleEndian.Uint32(ev[20:]))
		if typ == evKey && code == keyPower && value == 1 {
			return true
		}
	}
}
