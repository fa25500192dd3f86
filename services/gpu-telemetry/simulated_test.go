package gputelemetry

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

func TestParseGPUSpecs(t *testing.T) {
	h100, l40s, rtx := GPUTypes["H100-SXM5-80GB"], GPUTypes["L40S"], GPUTypes["RTX4090"]
	tests := []struct {
		name    string
		specs   []string
		want    []GPUType
		wantErr error
	}{
		{"count and type", []string{"2xH100-SXM5-80GB"}, []GPUType{h100, h100}, nil},
		{"mixed, spaces, case", []string{" 1xl40s", "h100-sxm5-80gb "}, []GPUType{l40s, h100}, nil},
		{"type with an x in it", []string{"RTX4090", "2XRTX4090"}, []GPUType{rtx, rtx, rtx}, nil},
		{"unknown type", []string{"2xGTX480"}, nil, ErrUnknownGPUType},
		{"zero count", []string{"0xL40S"}, nil, ErrConfig},
		{"beyond MaxSimulatedGPUs", []string{"100000000xA100-SXM4-80GB"}, nil, ErrConfig},
		{"beyond MaxSimulatedGPUs in all", []string{"1000xL40S", "25xL4"}, nil, ErrConfig},
		{"nothing", []string{"", " "}, nil, ErrConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseGPUSpecs(tc.specs)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestGPUTypesAreReal(t *testing.T) {
	// The values selectors plan with: memory as NVML reports it, default power limits.
	tests := []struct {
		key      string
		memoryMB int64
		limitW   float64
	}{
		{"A100-SXM4-80GB", 81920, 400},
		{"H100-SXM5-80GB", 81559, 700},
		{"L40S", 46068, 350},
		{"RTX4090", 24564, 450},
		{"A10", 23028, 150},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			g, ok := GPUTypes[tc.key]
			if !ok {
				t.Fatal("missing")
			}
			if g.MemoryMB != tc.memoryMB || g.PowerLimitW != tc.limitW {
				t.Fatalf("got %d MB %v W, want %d MB %v W", g.MemoryMB, g.PowerLimitW, tc.memoryMB, tc.limitW)
			}
		})
	}
}

func TestNewSimulatedErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  SimConfig
	}{
		{"no GPUs", SimConfig{}},
		{"fail rate above 1", SimConfig{GPUs: []GPUType{GPUTypes["A10"]}, FailRate: 1.5}},
		{"negative Xid rate", SimConfig{GPUs: []GPUType{GPUTypes["A10"]}, XidRate: -0.1}},
		{"zero memory", SimConfig{GPUs: []GPUType{{Name: "x", PowerLimitW: 100}}}},
		{"idle above limit", SimConfig{GPUs: []GPUType{{Name: "x", MemoryMB: 1, PowerLimitW: 100, IdlePowerW: 200}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewSimulated(tc.cfg); !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}

// TestSimulatedStaysInBounds walks random hosts for many steps: every sample
// must be physically plausible for its GPU type.
func TestSimulatedStaysInBounds(t *testing.T) {
	keys := gpuTypeNames()
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(1, 4).Draw(rt, "gpus")
		var gpus []GPUType
		for i := range n {
			gpus = append(gpus, GPUTypes[rapid.SampledFrom(keys).Draw(rt, fmt.Sprintf("type%d", i))])
		}
		cfg := SimConfig{
			GPUs:     gpus,
			Seed:     rapid.Uint64().Draw(rt, "seed"),
			FailRate: rapid.Float64Range(0, 1).Draw(rt, "failRate"),
			XidRate:  rapid.Float64Range(0, 0.05).Draw(rt, "xidRate"),
		}
		src, err := NewSimulated(cfg)
		if err != nil {
			rt.Fatal(err)
		}
		steps := rapid.IntRange(1, 300).Draw(rt, "steps")
		for range steps {
			for _, i := range src.Devices() {
				s, err := src.Sample(context.Background(), i)
				if err != nil {
					rt.Fatal(err)
				}
				checkSimSample(rt, s, gpus[i])
			}
		}
	})
}

func checkSimSample(rt *rapid.T, s telemetry.Sample, typ GPUType) {
	failed := func(r string) bool { return slices.Contains(s.FailedReads, r) }
	if s.Name != typ.Name || s.UUID == "" || s.Source != SourceSimulated || s.Timestamp.IsZero() {
		rt.Fatalf("identity: %+v", s)
	}
	if !failed(telemetry.ReadMemory) {
		if s.MemoryTotalMB != typ.MemoryMB || s.MemoryUsedMB < 0 || s.MemoryUsedMB > s.MemoryTotalMB ||
			s.MemoryUsedMB+s.MemoryFreeMB != s.MemoryTotalMB {
			rt.Fatalf("memory: %+v", s)
		}
	}
	if s.UtilizationGPUPct < 0 || s.UtilizationGPUPct > 100 || s.UtilizationMemoryPct < 0 || s.UtilizationMemoryPct > 100 {
		rt.Fatalf("utilisation: %+v", s)
	}
	if !failed(telemetry.ReadTemperature) && (s.TemperatureC < simMinTempC || s.TemperatureC > simMaxTempC) {
		rt.Fatalf("temperature: %+v", s)
	}
	if s.PowerW < 0 || s.PowerW > typ.PowerLimitW {
		rt.Fatalf("power: %+v", s)
	}
	if !failed(telemetry.ReadPowerLimit) && s.PowerLimitW != typ.PowerLimitW {
		rt.Fatalf("power limit: %+v", s)
	}
	if s.Healthy != (s.LastXid == 0) || (!s.Healthy && s.HealthReason == "") {
		rt.Fatalf("health: %+v", s)
	}
}

func TestSimulatedIsDeterministicAndMoves(t *testing.T) {
	cfg := SimConfig{GPUs: []GPUType{GPUTypes["H100-SXM5-80GB"], GPUTypes["L40S"]}, Seed: 42}
	run := func() []telemetry.Sample {
		src, err := NewSimulated(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var out []telemetry.Sample
		for range 50 {
			for _, i := range src.Devices() {
				s, err := src.Sample(context.Background(), i)
				if err != nil {
					t.Fatal(err)
				}
				s.Timestamp = time.Time{} // compare the walk, not the clock
				out = append(out, s)
			}
		}
		return out
	}
	a, b := run(), run()
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed gave different walks")
	}
	utils := map[float64]bool{}
	for _, s := range a {
		if s.Index == 0 {
			utils[s.UtilizationGPUPct] = true
		}
	}
	if len(utils) < 5 {
		t.Fatalf("utilisation barely moves: %v", utils)
	}
	if a[0].UUID == a[1].UUID {
		t.Fatal("two GPUs share a UUID")
	}
}

func TestSimulatedFaults(t *testing.T) {
	tests := []struct {
		name        string
		failRate    float64
		xidRate     float64
		wantFailed  []string
		wantHealthy bool
	}{
		{"no faults", 0, 0, nil, true},
		{"every read fails", 1, 0, []string{telemetry.ReadMemory, telemetry.ReadUtilization, telemetry.ReadTemperature, telemetry.ReadPower, telemetry.ReadPowerLimit}, true},
		{"critical Xid", 0, 1, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, err := NewSimulated(SimConfig{GPUs: []GPUType{GPUTypes["A10"]}, Seed: 7, FailRate: tc.failRate, XidRate: tc.xidRate})
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				s, err := src.Sample(context.Background(), 0)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(s.FailedReads, tc.wantFailed) || s.Healthy != tc.wantHealthy {
					t.Fatalf("got failed %v healthy %v (%s), want %v %v", s.FailedReads, s.Healthy, s.HealthReason, tc.wantFailed, tc.wantHealthy)
				}
				if !tc.wantHealthy && (s.LastXid != simXid || s.HealthReason != "Xid 79: GPU has fallen off the bus") {
					t.Fatalf("xid %d reason %q", s.LastXid, s.HealthReason)
				}
			}
		})
	}
}

func TestSimulatedSampleErrors(t *testing.T) {
	src, err := NewSimulated(SimConfig{GPUs: []GPUType{GPUTypes["A10"]}})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		index   int
		close   bool
		wantErr error
	}{
		{"unknown index", context.Background(), 1, false, ErrUnknownDevice},
		{"negative index", context.Background(), -1, false, ErrUnknownDevice},
		{"cancelled", cancelled, 0, false, context.Canceled},
		{"closed", context.Background(), 0, true, ErrSourceClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.close {
				if err := src.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := src.Sample(tc.ctx, tc.index); !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}
