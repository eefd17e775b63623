package main

import (
	"testing"
	"time"
)

func TestParsePull(t *testing.T) {
	log := `time=2026-12-07T10:00:00.000Z level=INFO msg="pulling image" rpc=PullImage image=r/big:latest
time=2026-12-07T10:00:00.010Z level=INFO msg="pulling blob" rpc=PullImage digest=sha256:a size=10
time=2026-12-07T10:00:00.012Z level=INFO msg="pulling blob" rpc=PullImage digest=sha256:b size=10
time=2026-12-07T10:00:00.300Z level=INFO msg="pulled blob" rpc=PullImage digest=sha256:a bytes=10 duration=290ms
time=2026-12-07T10:00:00.410Z level=INFO msg="pulled blob" rpc=PullImage digest=sha256:b bytes=10 duration=398ms
time=2026-12-07T10:00:00.435Z level=INFO msg="pulled image" rpc=PullImage image=r/big:latest duration=435ms`
	got, err := parsePull(log)
	if err != nil {
		t.Fatal(err)
	}
	want := pullPhases{blobs: 2, sumBlobs: 688 * time.Millisecond, window: 400 * time.Millisecond, tail: 25 * time.Millisecond}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := parsePull(log[:200]); err == nil {
		t.Error("a log without a finished pull: no error")
	}
}
