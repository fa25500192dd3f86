//go:build linux && cgo

package gputelemetry

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

const gib = 1024 * 1024 * 1024

// reads are the values (and NVML returns) one mock GPU answers with.
type reads struct {
	mem                    nvml.Memory
	util                   nvml.Utilization
	tempC                  uint32
	powerMW, limitMW       uint32
	memRet, utilRet        nvml.Return
	tempRet, powerRet      nvml.Return
	limitRet, nameRet      nvml.Return
	handleRet              nvml.Return // DeviceGetHandleByIndex
	registerRet, createRet nvml.Return // RegisterEvents, EventSetCreate
}

func healthyReads() reads {
	return reads{
		mem:     nvml.Memory{Total: 40 * gib, Used: 10 * gib, Free: 30 * gib},
		util:    nvml.Utilization{Gpu: 50, Memory: 20},
		tempC:   55,
		powerMW: 250_000,
		limitMW: 400_000,
	}
}

// fakeEvents is an NVML event set the test feeds. handled is signalled when
// the watcher comes back to Wait after an event, i.e. once it has handled it.
type fakeEvents struct {
	events    chan nvml.EventData
	handled   chan struct{}
	delivered atomic.Bool
	freed     chan struct{}
}

// fakeWaitSlice is how long the fake Wait blocks before its timeout: shorter
// than asked, as NVML allows, so Close is quick.
const fakeWaitSlice = 10 * time.Millisecond

// mockNVML is a dgxa100 mock server whose telemetry reads answer from rs
// (one entry per GPU; fewer entries than GPUs use healthyReads).
type mockNVML struct {
	*dgxa100.Server
	events   *fakeEvents
	shutdown int
	mu       sync.Mutex
}

func newMockNVML(t *testing.T, rs map[int]reads, createRet nvml.Return) *mockNVML {
	t.Helper()
	srv := dgxa100.New()
	m := &mockNVML{Server: srv, events: &fakeEvents{
		events:  make(chan nvml.EventData),
		handled: make(chan struct{}, 1),
		freed:   make(chan struct{}),
	}}
	get := func(i int) reads {
		if r, ok := rs[i]; ok {
			return r
		}
		return healthyReads()
	}
	for i, d := range srv.Devices {
		dev := d.(*dgxa100.Device)
		r := get(i)
		dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return r.mem, r.memRet }
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return r.util, r.utilRet }
		dev.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return r.tempC, r.tempRet }
		dev.GetPowerUsageFunc = func() (uint32, nvml.Return) { return r.powerMW, r.powerRet }
		dev.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return r.limitMW, r.limitRet }
		if r.nameRet != nvml.SUCCESS {
			dev.GetNameFunc = func() (string, nvml.Return) { return "", r.nameRet }
		}
		dev.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return r.registerRet }
	}
	byIndex := srv.DeviceGetHandleByIndexFunc
	srv.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		if ret := get(i).handleRet; ret != nvml.SUCCESS {
			return nil, ret
		}
		return byIndex(i)
	}
	ev := m.events
	set := &mock.EventSet{
		WaitFunc: func(uint32) (nvml.EventData, nvml.Return) {
			if ev.delivered.Swap(false) {
				ev.handled <- struct{}{}
			}
			select {
			case e := <-ev.events:
				ev.delivered.Store(true)
				return e, nvml.SUCCESS
			case <-time.After(fakeWaitSlice):
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
		},
	}
	var freeOnce sync.Once
	set.FreeFunc = func() nvml.Return {
		freeOnce.Do(func() { close(ev.freed) })
		return nvml.SUCCESS
	}
	srv.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		if createRet != nvml.SUCCESS {
			return nil, createRet
		}
		return set, nvml.SUCCESS
	}
	srv.ShutdownFunc = func() nvml.Return {
		m.mu.Lock()
		m.shutdown++
		m.mu.Unlock()
		return nvml.SUCCESS
	}
	return m
}

func (m *mockNVML) device(i int) *dgxa100.Device { return m.Devices[i].(*dgxa100.Device) }

func openMock(t *testing.T, m *mockNVML) *NVMLSource {
	t.Helper()
	src, err := NewNVML(m, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := src.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return src
}

func sampleOf(t *testing.T, src Source, i int) telemetry.Sample {
	t.Helper()
	smp, err := src.Sample(context.Background(), i)
	if err != nil {
		t.Fatalf("Sample(%d): %v", i, err)
	}
	return smp
}

func TestNVMLSampleValues(t *testing.T) {
	tests := []struct {
		name  string
		index int
		reads reads
		want  telemetry.Sample
	}{
		{
			name:  "busy 80GB GPU",
			index: 0,
			reads: reads{
				mem:     nvml.Memory{Total: 80 * gib, Used: 60*gib + 512*1024*1024, Free: 19*gib + 512*1024*1024},
				util:    nvml.Utilization{Gpu: 97, Memory: 64},
				tempC:   81,
				powerMW: 398_123,
				limitMW: 400_000,
			},
			want: telemetry.Sample{
				MemoryTotalMB: 81920, MemoryUsedMB: 61952, MemoryFreeMB: 19968,
				UtilizationGPUPct: 97, UtilizationMemoryPct: 64, TemperatureC: 81,
				PowerW: 398.123, PowerLimitW: 400,
			},
		},
		{
			name:  "idle GPU, partial MiB rounded down",
			index: 5,
			reads: reads{
				mem:     nvml.Memory{Total: 40*gib + 1, Used: 1024*1024 - 1, Free: 40 * gib},
				util:    nvml.Utilization{},
				tempC:   31,
				powerMW: 52_500,
				limitMW: 250_000,
			},
			want: telemetry.Sample{
				MemoryTotalMB: 40960, MemoryUsedMB: 0, MemoryFreeMB: 40960,
				TemperatureC: 31, PowerW: 52.5, PowerLimitW: 250,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMockNVML(t, map[int]reads{tc.index: tc.reads}, nvml.SUCCESS)
			src := openMock(t, m)
			got := sampleOf(t, src, tc.index)

			want := tc.want
			want.Index = tc.index
			want.UUID = m.device(tc.index).UUID
			want.Name = m.device(tc.index).Config.Name
			want.Source = SourceNVML
			want.Healthy = true
			if got.Timestamp.IsZero() {
				t.Error("no timestamp")
			}
			got.Timestamp = want.Timestamp
			if !samplesEqual(got, want) {
				t.Fatalf("sample\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func samplesEqual(a, b telemetry.Sample) bool {
	return reflect.DeepEqual(a, b)
}

func TestNVMLFailedReads(t *testing.T) {
	lost := nvml.ERROR_GPU_IS_LOST
	tests := []struct {
		name       string
		reads      func(r *reads)
		wantFailed []string
		// wantReason is "" for a healthy sample.
		wantReason string
		check      func(t *testing.T, s telemetry.Sample)
	}{
		{
			name:       "power not supported",
			reads:      func(r *reads) { r.powerRet = nvml.ERROR_NOT_SUPPORTED },
			wantFailed: []string{telemetry.ReadPower},
			check: func(t *testing.T, s telemetry.Sample) {
				if s.PowerW != 0 || s.MemoryTotalMB != 40960 {
					t.Errorf("power %v, memory %d: the failed read must not touch the others", s.PowerW, s.MemoryTotalMB)
				}
			},
		},
		{
			name:       "memory and temperature fail",
			reads:      func(r *reads) { r.memRet, r.tempRet = nvml.ERROR_UNKNOWN, nvml.ERROR_TIMEOUT },
			wantFailed: []string{telemetry.ReadMemory, telemetry.ReadTemperature},
		},
		{
			name:       "name fails",
			reads:      func(r *reads) { r.nameRet = nvml.ERROR_UNKNOWN },
			wantFailed: []string{telemetry.ReadName},
		},
		{
			name: "every read says the GPU is lost",
			reads: func(r *reads) {
				r.memRet, r.utilRet, r.tempRet, r.powerRet, r.limitRet = lost, lost, lost, lost, lost
			},
			wantFailed: []string{telemetry.ReadMemory, telemetry.ReadUtilization, telemetry.ReadTemperature, telemetry.ReadPower, telemetry.ReadPowerLimit},
			wantReason: "GPU is lost (ERROR_GPU_IS_LOST)",
		},
		{
			name:       "handle lookup says the GPU is lost",
			reads:      func(r *reads) { r.handleRet = lost },
			wantFailed: []string{telemetry.ReadHandle},
			wantReason: "GPU is lost (ERROR_GPU_IS_LOST)",
		},
		{
			name:       "utilisation NVML has no value for (0xFFFFFFFF)",
			reads:      func(r *reads) { r.util.Gpu = 0xFFFFFFFF },
			wantFailed: []string{telemetry.ReadUtilization},
			check: func(t *testing.T, s telemetry.Sample) {
				if s.UtilizationGPUPct != 0 || s.UtilizationMemoryPct != 0 {
					t.Errorf("utilization %v/%v: an impossible reading must not be published", s.UtilizationGPUPct, s.UtilizationMemoryPct)
				}
			},
		},
		{
			name:       "memory utilisation above 100",
			reads:      func(r *reads) { r.util.Memory = 101 },
			wantFailed: []string{telemetry.ReadUtilization},
		},
		{
			name:       "temperature, power and limit beyond any GPU",
			reads:      func(r *reads) { r.tempC, r.powerMW, r.limitMW = 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF },
			wantFailed: []string{telemetry.ReadTemperature, telemetry.ReadPower, telemetry.ReadPowerLimit},
			check: func(t *testing.T, s telemetry.Sample) {
				if s.TemperatureC != 0 || s.PowerW != 0 || s.PowerLimitW != 0 {
					t.Errorf("temperature %v, power %v/%v: impossible readings published", s.TemperatureC, s.PowerW, s.PowerLimitW)
				}
			},
		},
		{
			name:       "free memory beyond the total",
			reads:      func(r *reads) { r.mem.Free = ^uint64(0) - 10*gib },
			wantFailed: []string{telemetry.ReadMemory},
			check: func(t *testing.T, s telemetry.Sample) {
				if s.MemoryFreeMB != 0 || s.MemoryTotalMB != 0 {
					t.Errorf("memory %d/%d: an impossible reading must not be published", s.MemoryFreeMB, s.MemoryTotalMB)
				}
			},
		},
		{
			name:       "handle lookup fails otherwise",
			reads:      func(r *reads) { r.handleRet = nvml.ERROR_UNKNOWN },
			wantFailed: []string{telemetry.ReadHandle},
			wantReason: "no NVML handle: ERROR_UNKNOWN",
		},
	}
	const bad = 3
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := healthyReads()
			tc.reads(&r)
			m := newMockNVML(t, map[int]reads{bad: r}, nvml.SUCCESS)
			src := openMock(t, m)
			if !slices.Contains(src.Devices(), bad) {
				t.Fatalf("GPU %d not reported: %v", bad, src.Devices())
			}
			got := sampleOf(t, src, bad)
			if !slices.Equal(got.FailedReads, tc.wantFailed) {
				t.Errorf("FailedReads = %v, want %v", got.FailedReads, tc.wantFailed)
			}
			if got.Healthy != (tc.wantReason == "") || got.HealthReason != tc.wantReason {
				t.Errorf("healthy %v reason %q, want reason %q", got.Healthy, got.HealthReason, tc.wantReason)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
			// The other GPUs are untouched.
			if other := sampleOf(t, src, bad-1); !other.Healthy || len(other.FailedReads) != 0 {
				t.Errorf("GPU %d affected: %+v", bad-1, other)
			}
		})
	}
}

func TestNVMLInitFailure(t *testing.T) {
	for _, ret := range []nvml.Return{nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED, nvml.ERROR_NO_PERMISSION} {
		t.Run(ret.Error(), func(t *testing.T) {
			// Every other function is nil: calling one after the failed Init panics.
			lib := &mock.Interface{InitFunc: func() nvml.Return { return ret }}
			src, err := NewNVML(lib, zerolog.Nop())
			if src != nil {
				t.Fatal("source returned")
			}
			if !errors.Is(err, ErrNVMLInit) {
				t.Fatalf("err = %v, want ErrNVMLInit", err)
			}
			if !strings.Contains(err.Error(), ret.Error()) {
				t.Fatalf("err %q does not say why (%s)", err, ret)
			}
			if n := len(lib.InitCalls()); n != 1 {
				t.Fatalf("Init called %d times", n)
			}
		})
	}
}

func TestNVMLDeviceCountFailureShutsDown(t *testing.T) {
	m := newMockNVML(t, nil, nvml.SUCCESS)
	m.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	if _, err := NewNVML(m, zerolog.Nop()); !errors.Is(err, ErrNVML) {
		t.Fatalf("err = %v, want ErrNVML", err)
	}
	if m.shutdown != 1 {
		t.Fatalf("Shutdown called %d times after a successful Init, want 1", m.shutdown)
	}
}

func TestNVMLXid(t *testing.T) {
	tests := []struct {
		name string
		// device is the GPU the event names; -1 for none.
		device     int
		xid        uint64
		wantUnwell []int
		wantReason string
	}{
		{name: "fallen off the bus", device: 2, xid: 79, wantUnwell: []int{2}, wantReason: "Xid 79: GPU has fallen off the bus"},
		{name: "unknown critical Xid", device: 6, xid: 150, wantUnwell: []int{6}, wantReason: "Xid 150: critical error"},
		{name: "application page fault ignored", device: 2, xid: 31},
		{name: "application engine exception ignored", device: 1, xid: 13},
		{name: "Xid on no device marks all", device: -1, xid: 48, wantUnwell: []int{0, 1, 2, 3, 4, 5, 6, 7}, wantReason: "Xid 48: double-bit ECC error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMockNVML(t, nil, nvml.SUCCESS)
			src := openMock(t, m)
			e := nvml.EventData{EventType: nvml.EventTypeXidCriticalError, EventData: tc.xid}
			if tc.device >= 0 {
				e.Device = m.Devices[tc.device]
			}
			m.events.events <- e
			<-m.events.handled
			for _, i := range src.Devices() {
				got := sampleOf(t, src, i)
				unwell := slices.Contains(tc.wantUnwell, i)
				if got.Healthy == unwell {
					t.Errorf("GPU %d healthy = %v", i, got.Healthy)
				}
				if unwell && (got.HealthReason != tc.wantReason || got.LastXid != tc.xid) {
					t.Errorf("GPU %d reason %q xid %d, want %q %d", i, got.HealthReason, got.LastXid, tc.wantReason, tc.xid)
				}
			}
		})
	}
}

func TestNVMLWithoutXidEvents(t *testing.T) {
	tests := []struct {
		name      string
		createRet nvml.Return
		register  nvml.Return
	}{
		{"event set not supported", nvml.ERROR_NOT_SUPPORTED, nvml.SUCCESS},
		{"registration not supported", nvml.SUCCESS, nvml.ERROR_NOT_SUPPORTED},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := map[int]reads{}
			for i := range 8 {
				r := healthyReads()
				r.registerRet = tc.register
				rs[i] = r
			}
			m := newMockNVML(t, rs, tc.createRet)
			src := openMock(t, m)
			if got := sampleOf(t, src, 0); !got.Healthy {
				t.Fatalf("sample without Xid watch: %+v", got)
			}
		})
	}
}

func TestNVMLSkipsMIGGPUs(t *testing.T) {
	m := newMockNVML(t, nil, nvml.SUCCESS)
	if ret, _ := m.device(1).SetMigMode(nvml.DEVICE_MIG_ENABLE); ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	src := openMock(t, m)
	if want := []int{0, 2, 3, 4, 5, 6, 7}; !slices.Equal(src.Devices(), want) {
		t.Fatalf("devices = %v, want %v", src.Devices(), want)
	}
	if _, err := src.Sample(context.Background(), 1); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("Sample of a MIG GPU: err = %v, want ErrUnknownDevice", err)
	}
}

func TestNVMLClose(t *testing.T) {
	m := newMockNVML(t, nil, nvml.SUCCESS)
	src, err := NewNVML(m, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if m.shutdown != 1 {
		t.Fatalf("Shutdown called %d times, want 1", m.shutdown)
	}
	select {
	case <-m.events.freed:
	default:
		t.Fatal("event set not freed")
	}
	if _, err := src.Sample(context.Background(), 0); !errors.Is(err, ErrSourceClosed) {
		t.Fatalf("Sample after Close: err = %v, want ErrSourceClosed", err)
	}
}

// A GPU whose handle only comes after the start gets what the start gives
// the others: the MIG check and Xid watching.
func TestNVMLLateHandle(t *testing.T) {
	tests := []struct {
		name       string
		mig        bool
		wantReason string
	}{
		{name: "MIG mode enabled: reported unhealthy", mig: true, wantReason: "MIG mode enabled: MIG instances are not scheduled by the orchestrator"},
		{name: "a whole GPU: its Xid errors are watched"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const late = 1
			m := newMockNVML(t, nil, nvml.SUCCESS)
			var answers atomic.Bool // no handle until set
			byIndex := m.DeviceGetHandleByIndexFunc
			m.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
				if i == late && !answers.Load() {
					return nil, nvml.ERROR_UNKNOWN
				}
				return byIndex(i)
			}
			var registered atomic.Bool
			m.device(late).RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return {
				registered.Store(true)
				return nvml.SUCCESS
			}
			if tc.mig {
				if ret, _ := m.device(late).SetMigMode(nvml.DEVICE_MIG_ENABLE); ret != nvml.SUCCESS {
					t.Fatal(ret)
				}
			}
			src := openMock(t, m)
			if got := sampleOf(t, src, late); got.Healthy || !slices.Equal(got.FailedReads, []string{telemetry.ReadHandle}) {
				t.Fatalf("before its handle: %+v", got)
			}
			answers.Store(true)
			got := sampleOf(t, src, late)
			if got.Healthy != (tc.wantReason == "") || got.HealthReason != tc.wantReason {
				t.Fatalf("with its handle: healthy %v reason %q, want reason %q", got.Healthy, got.HealthReason, tc.wantReason)
			}
			if tc.mig {
				return
			}
			if !registered.Load() {
				t.Fatal("the late GPU's Xid errors are not watched")
			}
			m.events.events <- nvml.EventData{EventType: nvml.EventTypeXidCriticalError, EventData: 79, Device: m.Devices[late]}
			<-m.events.handled
			if got := sampleOf(t, src, late); got.Healthy || got.LastXid != 79 {
				t.Fatalf("after Xid 79 on the late GPU: %+v", got)
			}
		})
	}
}
