//go:build linux && cgo

package gputelemetry

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/rs/zerolog"

	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

const (
	// xidWaitMs bounds one wait for NVML events, and so how long Close waits
	// for the event goroutine.
	xidWaitMs = 500
	// xidRetryDelay spaces retries after an unexpected event-wait error.
	xidRetryDelay = time.Second
	// closeReadWait is how long Close waits for reads still running before it
	// leaves NVML initialised rather than shut it down under them.
	closeReadWait = 2 * time.Second
)

// NVMLSource reads GPUs through NVML. It is built on an nvml.Interface so
// tests can give it go-nvml's mock servers.
//
// MIG: a GPU with MIG mode enabled is skipped (with a log line). Its memory
// and compute are split into instances the selector knows nothing about, so
// reporting the whole GPU would invite placements that cannot fit any slice.
type NVMLSource struct {
	lib     nvml.Interface
	log     zerolog.Logger
	devices []int

	mu      sync.Mutex
	handles map[int]nvml.Device // nil value: handle not obtained yet
	uuids   map[int]string
	names   map[int]string
	xids    map[int]uint64 // critical Xid that made a GPU unhealthy
	// mig marks GPUs found in MIG mode after the start (their handle came
	// late): reported unhealthy, as they cannot be dropped from Devices.
	mig    map[int]bool
	closed bool
	reads  int           // Sample calls in progress
	idle   chan struct{} // closed when reads reach 0 after Close

	events   nvml.EventSet // nil when Xid events are unavailable
	stop     chan struct{}
	xidDone  chan struct{}
	closeErr error
	once     sync.Once
}

// openNVML opens the system's NVML library.
func openNVML(log zerolog.Logger) (Source, error) {
	return NewNVML(nvml.New(), log)
}

// NewNVML initialises NVML through lib and finds the GPUs to report. When
// Init fails no other NVML function is called and the error wraps ErrNVMLInit.
func NewNVML(lib nvml.Interface, log zerolog.Logger) (*NVMLSource, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: %v", ErrNVMLInit, ret)
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		err := fmt.Errorf("%w: DeviceGetCount: %v", ErrNVML, ret)
		if sret := lib.Shutdown(); sret != nvml.SUCCESS {
			err = fmt.Errorf("%w (and Shutdown: %v)", err, sret)
		}
		return nil, err
	}
	s := &NVMLSource{
		lib:     lib,
		log:     log,
		handles: make(map[int]nvml.Device, count),
		uuids:   make(map[int]string, count),
		names:   make(map[int]string, count),
		xids:    make(map[int]uint64),
		mig:     make(map[int]bool),
		idle:    make(chan struct{}),
		stop:    make(chan struct{}),
		xidDone: make(chan struct{}),
	}
	for i := range count {
		dev, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			// Reported (unhealthy) rather than dropped, so the selector sees why.
			log.Warn().Int("gpu", i).Stringer("nvml", ret).Msg("no NVML handle for GPU; it is reported unhealthy until it answers")
			s.devices = append(s.devices, i)
			continue
		}
		if cur, _, ret := dev.GetMigMode(); ret == nvml.SUCCESS && cur == nvml.DEVICE_MIG_ENABLE {
			log.Warn().Int("gpu", i).Msg("GPU has MIG mode enabled: skipped, MIG instances are not scheduled by the orchestrator")
			continue
		}
		s.handles[i] = dev
		s.devices = append(s.devices, i)
	}
	s.startXidWatch()
	return s, nil
}

// Devices lists the NVML indexes reported (MIG-enabled GPUs left out).
func (s *NVMLSource) Devices() []int { return slices.Clone(s.devices) }

// Kind is SourceNVML.
func (s *NVMLSource) Kind() string { return SourceNVML }

// startXidWatch registers critical Xid events on every GPU with a handle and
// waits for them in a goroutine. Without events, health comes from reads only.
func (s *NVMLSource) startXidWatch() {
	set, ret := s.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		s.log.Warn().Stringer("nvml", ret).Msg("NVML event set unavailable: Xid errors will not mark GPUs unhealthy")
		close(s.xidDone)
		return
	}
	registered, late := 0, 0
	for _, i := range s.devices {
		dev := s.handles[i]
		if dev == nil {
			late++ // registered once its handle comes (see lateHandle)
			continue
		}
		if ret := dev.RegisterEvents(nvml.EventTypeXidCriticalError, set); ret != nvml.SUCCESS {
			s.log.Warn().Int("gpu", i).Stringer("nvml", ret).Msg("cannot watch Xid errors on GPU")
			continue
		}
		registered++
	}
	if registered == 0 && late == 0 {
		if ret := set.Free(); ret != nvml.SUCCESS {
			s.log.Warn().Stringer("nvml", ret).Msg("freeing unused NVML event set")
		}
		close(s.xidDone)
		return
	}
	s.events = set
	go s.watchXid()
}

func (s *NVMLSource) watchXid() {
	defer close(s.xidDone)
	failing := nvml.SUCCESS // logged once per new error, not every retry
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		e, ret := s.events.Wait(xidWaitMs)
		switch ret {
		case nvml.SUCCESS:
			failing = nvml.SUCCESS
			s.onEvent(e)
		case nvml.ERROR_TIMEOUT:
			failing = nvml.SUCCESS
		default:
			if ret != failing {
				s.log.Warn().Stringer("nvml", ret).Msg("waiting for NVML events failed; retrying (logged again when the error changes)")
				failing = ret
			}
			select {
			case <-s.stop:
				return
			case <-time.After(xidRetryDelay):
			}
		}
	}
}

func (s *NVMLSource) onEvent(e nvml.EventData) {
	if e.EventType != nvml.EventTypeXidCriticalError {
		return
	}
	xid := e.EventData
	if !xidMakesUnhealthy(xid) {
		s.log.Info().Uint64("xid", xid).Msg("application Xid error; GPU health unchanged")
		return
	}
	reason := xidReason(xid)
	targets := s.devices
	if e.Device != nil {
		if idx, ret := e.Device.GetIndex(); ret == nvml.SUCCESS {
			targets = []int{idx}
		}
	}
	// An Xid NVML cannot tie to a GPU marks them all, as the device plugin does.
	s.mu.Lock()
	for _, i := range targets {
		s.xids[i] = xid
	}
	s.mu.Unlock()
	s.log.Error().Ints("gpus", targets).Uint64("xid", xid).Str("reason", reason).
		Msg("critical Xid error: GPU marked unhealthy until the agent restarts")
}

// lateHandle keeps a handle obtained after the start and does what the
// start does for one: the MIG check (a GPU in MIG mode is then reported
// unhealthy, as it cannot leave Devices) and watching its Xid errors.
func (s *NVMLSource) lateHandle(index int, dev nvml.Device) nvml.Device {
	cur, _, ret := dev.GetMigMode()
	mig := ret == nvml.SUCCESS && cur == nvml.DEVICE_MIG_ENABLE
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handles[index] != nil { // another read got it first
		return s.handles[index]
	}
	s.handles[index] = dev
	if mig {
		s.mig[index] = true
		s.log.Warn().Int("gpu", index).Msg("GPU answered late with MIG mode enabled: reported unhealthy, MIG instances are not scheduled by the orchestrator")
		return dev
	}
	if s.events != nil {
		if ret := dev.RegisterEvents(nvml.EventTypeXidCriticalError, s.events); ret != nvml.SUCCESS {
			s.log.Warn().Int("gpu", index).Stringer("nvml", ret).Msg("cannot watch Xid errors on GPU")
		}
	}
	s.log.Info().Int("gpu", index).Msg("NVML handle obtained for GPU")
	return dev
}

// Sample reads one GPU. Reads that fail are listed in FailedReads; a lost
// GPU, a missing handle or a critical Xid make the sample unhealthy.
func (s *NVMLSource) Sample(ctx context.Context, index int) (telemetry.Sample, error) {
	if err := ctx.Err(); err != nil {
		return telemetry.Sample{}, err
	}
	if !slices.Contains(s.devices, index) {
		return telemetry.Sample{}, fmt.Errorf("%w: %d (nvml reports %v)", ErrUnknownDevice, index, s.devices)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return telemetry.Sample{}, ErrSourceClosed
	}
	s.reads++
	dev, uuid, name := s.handles[index], s.uuids[index], s.names[index]
	s.mu.Unlock()
	defer s.readDone()

	smp := telemetry.Sample{Index: index, Source: SourceNVML, Healthy: true, UUID: uuid, Name: name}
	var lost bool
	failed := func(read string, ret nvml.Return) {
		smp.FailedReads = append(smp.FailedReads, read)
		if ret == nvml.ERROR_GPU_IS_LOST {
			lost = true
		}
	}

	if dev == nil {
		d, ret := s.lib.DeviceGetHandleByIndex(index)
		if ret != nvml.SUCCESS {
			failed(telemetry.ReadHandle, ret)
			smp.Healthy = false
			smp.HealthReason = fmt.Sprintf("no NVML handle: %v", ret)
			if lost {
				smp.HealthReason = "GPU is lost (ERROR_GPU_IS_LOST)"
			}
			smp.Timestamp = time.Now().UTC()
			return smp, nil
		}
		dev = s.lateHandle(index, d)
	}
	s.mu.Lock()
	mig := s.mig[index]
	s.mu.Unlock()
	if mig {
		smp.Healthy = false
		smp.HealthReason = "MIG mode enabled: MIG instances are not scheduled by the orchestrator"
		smp.Timestamp = time.Now().UTC()
		return smp, nil
	}

	if uuid == "" {
		if v, ret := dev.GetUUID(); ret == nvml.SUCCESS {
			smp.UUID = v
		} else {
			failed(telemetry.ReadUUID, ret)
		}
	}
	if name == "" {
		if v, ret := dev.GetName(); ret == nvml.SUCCESS {
			smp.Name = v
		} else {
			failed(telemetry.ReadName, ret)
		}
	}
	// A value no GPU can have (NVML fills some with 0xFFFFFFFF when it has
	// none) is a failed read: its field stays 0 and is listed as failed.
	if mem, ret := dev.GetMemoryInfo(); ret != nvml.SUCCESS {
		failed(telemetry.ReadMemory, ret)
	} else if mem.Total/bytesPerMB > telemetry.MaxMemoryMB || mem.Used > mem.Total || mem.Free > mem.Total {
		failed(telemetry.ReadMemory, nvml.SUCCESS)
	} else {
		smp.MemoryTotalMB = int64(mem.Total / bytesPerMB)
		smp.MemoryUsedMB = int64(mem.Used / bytesPerMB)
		smp.MemoryFreeMB = int64(mem.Free / bytesPerMB)
	}
	if u, ret := dev.GetUtilizationRates(); ret != nvml.SUCCESS {
		failed(telemetry.ReadUtilization, ret)
	} else if u.Gpu > telemetry.MaxPct || u.Memory > telemetry.MaxPct {
		failed(telemetry.ReadUtilization, nvml.SUCCESS)
	} else {
		smp.UtilizationGPUPct = float64(u.Gpu)
		smp.UtilizationMemoryPct = float64(u.Memory)
	}
	if t, ret := dev.GetTemperature(nvml.TEMPERATURE_GPU); ret != nvml.SUCCESS {
		failed(telemetry.ReadTemperature, ret)
	} else if t > telemetry.MaxTemperatureC {
		failed(telemetry.ReadTemperature, nvml.SUCCESS)
	} else {
		smp.TemperatureC = float64(t)
	}
	// NVML reports power in milliwatts.
	if p, ret := dev.GetPowerUsage(); ret != nvml.SUCCESS {
		failed(telemetry.ReadPower, ret)
	} else if p/1000 > telemetry.MaxWatts {
		failed(telemetry.ReadPower, nvml.SUCCESS)
	} else {
		smp.PowerW = float64(p) / 1000
	}
	if p, ret := dev.GetEnforcedPowerLimit(); ret != nvml.SUCCESS {
		failed(telemetry.ReadPowerLimit, ret)
	} else if p/1000 > telemetry.MaxWatts {
		failed(telemetry.ReadPowerLimit, nvml.SUCCESS)
	} else {
		smp.PowerLimitW = float64(p) / 1000
	}
	smp.Timestamp = time.Now().UTC()

	s.mu.Lock()
	// UUID and name never change: read them until they are known.
	if smp.UUID != "" {
		s.uuids[index] = smp.UUID
	}
	if smp.Name != "" {
		s.names[index] = smp.Name
	}
	xid := s.xids[index]
	s.mu.Unlock()

	switch {
	case lost:
		smp.Healthy = false
		smp.HealthReason = "GPU is lost (ERROR_GPU_IS_LOST)"
	case xid != 0:
		smp.Healthy = false
		smp.HealthReason = xidReason(xid)
	}
	smp.LastXid = xid
	return smp, nil
}

func (s *NVMLSource) readDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads--
	if s.closed && s.reads == 0 {
		close(s.idle)
	}
}

// Close stops the Xid watch and shuts NVML down. A read stuck in the driver
// is given closeReadWait; after that NVML is left initialised (the process
// is ending anyway) rather than shut down under a running call.
func (s *NVMLSource) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		pending := s.reads
		s.mu.Unlock()

		close(s.stop)
		<-s.xidDone
		if pending > 0 {
			select {
			case <-s.idle:
			case <-time.After(closeReadWait):
				s.log.Warn().Int("reads", pending).Msg("NVML reads still running at close: NVML not shut down")
				return
			}
		}
		if s.events != nil {
			if ret := s.events.Free(); ret != nvml.SUCCESS {
				s.log.Warn().Stringer("nvml", ret).Msg("freeing NVML event set")
			}
		}
		if ret := s.lib.Shutdown(); ret != nvml.SUCCESS {
			s.closeErr = fmt.Errorf("%w: Shutdown: %v", ErrNVML, ret)
		}
	})
	return s.closeErr
}
