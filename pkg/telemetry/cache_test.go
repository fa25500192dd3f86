package telemetry

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestCachePut(t *testing.T) {
	c := NewCache()
	s := func(host string, index int, at time.Time, util float64) Sample {
		return Sample{Host: host, Index: index, Timestamp: at, UtilizationGPUPct: util}
	}
	steps := []struct {
		name        string
		sample      Sample
		stored      bool
		wantUtil    float64
		wantVersion uint64
	}{
		{"first sample", s("a", 0, t0, 10), true, 10, 1},
		{"newer replaces", s("a", 0, t0.Add(time.Second), 20), true, 20, 2},
		{"older is ignored", s("a", 0, t0, 30), false, 20, 2},
		{"same time is ignored", s("a", 0, t0.Add(time.Second), 40), false, 20, 2},
		{"another GPU", s("a", 1, t0, 50), true, 20, 3},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if got := c.Put(st.sample); got != st.stored {
				t.Fatalf("Put = %v, want %v", got, st.stored)
			}
			if got, _ := c.Get("a/0"); got.UtilizationGPUPct != st.wantUtil {
				t.Errorf("a/0 utilisation = %v, want %v", got.UtilizationGPUPct, st.wantUtil)
			}
			if v := c.Version(); v != st.wantVersion {
				t.Errorf("version = %d, want %d", v, st.wantVersion)
			}
		})
	}
	samples, v := c.Samples()
	if len(samples) != 2 || samples[0].Key() != "a/0" || samples[1].Key() != "a/1" || v != 3 || c.Len() != 2 {
		t.Fatalf("Samples = %+v (version %d)", samples, v)
	}
}

func TestSampleAge(t *testing.T) {
	s := Sample{Timestamp: t0}
	tests := []struct {
		name  string
		now   time.Time
		age   time.Duration
		stale bool
	}{
		{"fresh", t0.Add(5 * time.Second), 5 * time.Second, false},
		{"at the threshold", t0.Add(15 * time.Second), 15 * time.Second, false},
		{"stale", t0.Add(16 * time.Second), 16 * time.Second, true},
		{"clock skew: from the future", t0.Add(-time.Second), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.Age(tt.now); got != tt.age {
				t.Errorf("Age = %v, want %v", got, tt.age)
			}
			if got := s.Stale(tt.now, 15*time.Second); got != tt.stale {
				t.Errorf("Stale = %v, want %v", got, tt.stale)
			}
		})
	}
}
