package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.RPC("Version", "OK", time.Millisecond)
	m.RPC("Version", "OK", time.Millisecond)
	m.PodStarted("runc", 300*time.Millisecond)
	m.Pulled(1000, time.Second)
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"rpc count", testutil.ToFloat64(m.rpcs.WithLabelValues("Version", "OK")), 2},
		{"pull bytes", testutil.ToFloat64(m.pullBytes), 1000},
		{"pod starts", float64(testutil.CollectAndCount(m.podStart)), 1},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	var nilM *Metrics
	nilM.RPC("x", "OK", 0) // must not panic
	nilM.PodStarted("x", 0)
}
