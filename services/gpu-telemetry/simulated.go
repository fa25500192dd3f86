package gputelemetry

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/telemetry"
)

// GPUType is a real GPU model the simulator can pretend to be.
type GPUType struct {
	// Name is what nvidia-smi prints for it.
	Name string
	// MemoryMB is the total memory NVML reports, in MiB.
	MemoryMB int64
	// PowerLimitW is the default enforced power limit; IdlePowerW the draw at rest.
	PowerLimitW float64
	IdlePowerW  float64
}

// GPUTypes are the simulated GPU models by short name (case-insensitive in specs).
var GPUTypes = map[string]GPUType{
	"A100-SXM4-80GB":  {Name: "NVIDIA A100-SXM4-80GB", MemoryMB: 81920, PowerLimitW: 400, IdlePowerW: 60},
	"A100-SXM4-40GB":  {Name: "NVIDIA A100-SXM4-40GB", MemoryMB: 40960, PowerLimitW: 400, IdlePowerW: 55},
	"H100-SXM5-80GB":  {Name: "NVIDIA H100 80GB HBM3", MemoryMB: 81559, PowerLimitW: 700, IdlePowerW: 70},
	"H200-SXM5-141GB": {Name: "NVIDIA H200", MemoryMB: 143771, PowerLimitW: 700, IdlePowerW: 75},
	"L40S":            {Name: "NVIDIA L40S", MemoryMB: 46068, PowerLimitW: 350, IdlePowerW: 35},
	"L4":              {Name: "NVIDIA L4", MemoryMB: 23034, PowerLimitW: 72, IdlePowerW: 16},
	"RTX4090":         {Name: "NVIDIA GeForce RTX 4090", MemoryMB: 24564, PowerLimitW: 450, IdlePowerW: 20},
	"A10":             {Name: "NVIDIA A10", MemoryMB: 23028, PowerLimitW: 150, IdlePowerW: 20},
}

// MaxSimulatedGPUs bounds the simulated GPUs of one agent: all sit on one
// host, sampled every interval.
const MaxSimulatedGPUs = 1024

// ParseGPUSpecs turns specs such as "2xH100-SXM5-80GB" or "L40S" (one GPU)
// into the GPU list of a simulated host, in order, at most MaxSimulatedGPUs.
func ParseGPUSpecs(specs []string) ([]GPUType, error) {
	var out []GPUType
	for _, spec := range specs {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		count, name := 1, spec
		if i := strings.IndexAny(spec, "xX"); i > 0 {
			if n, err := strconv.Atoi(spec[:i]); err == nil {
				count, name = n, spec[i+1:]
			}
		}
		if count < 1 || count > MaxSimulatedGPUs-len(out) {
			return nil, fmt.Errorf("%w: %q: want 1..%d simulated GPUs in all", ErrConfig, spec, MaxSimulatedGPUs)
		}
		typ, ok := lookupGPUType(name)
		if !ok {
			return nil, fmt.Errorf("%w: %q (known: %s)", ErrUnknownGPUType, name, strings.Join(gpuTypeNames(), ", "))
		}
		for range count {
			out = append(out, typ)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no simulated GPUs given", ErrConfig)
	}
	return out, nil
}

func lookupGPUType(name string) (GPUType, bool) {
	for k, t := range GPUTypes {
		if strings.EqualFold(k, name) {
			return t, true
		}
	}
	return GPUType{}, false
}

func gpuTypeNames() []string {
	names := make([]string, 0, len(GPUTypes))
	for k := range GPUTypes {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// SimConfig configures a simulated host.
type SimConfig struct {
	GPUs []GPUType
	// Seed makes the walk reproducible: the same seed gives the same samples.
	Seed uint64
	// FailRate is the chance (0..1) that any one read fails, to exercise
	// FailedReads downstream.
	FailRate float64
	// XidRate is the chance (0..1) per sample that a GPU suffers a critical
	// Xid 79 and stays unhealthy, as a real one would until reset.
	XidRate float64
}

// Bounds of the simulated walk.
const (
	simMinTempC    = 25
	simMaxTempC    = 90
	simIdleTempC   = 30
	simTempPerUtil = 0.5 // °C above idle per % of utilisation
	simUtilStep    = 8   // std dev of a utilisation step, in %
	simMemStep     = 0.03
	simMemMaxShare = 0.97
	simXid         = 79
)

// SimulatedSource pretends to be a host of GPUs whose load, memory and
// temperature follow bounded random walks.
type SimulatedSource struct {
	gpus     []*simGPU
	failRate float64
	xidRate  float64
	closed   atomic.Bool
}

type simGPU struct {
	mu      sync.Mutex
	typ     GPUType
	uuid    string
	rng     *rand.Rand
	util    float64
	memUsed float64
	temp    float64
	xid     uint64
}

// NewSimulated builds a simulated host.
func NewSimulated(cfg SimConfig) (*SimulatedSource, error) {
	if len(cfg.GPUs) == 0 {
		return nil, fmt.Errorf("%w: no simulated GPUs", ErrConfig)
	}
	if !(cfg.FailRate >= 0 && cfg.FailRate <= 1) || !(cfg.XidRate >= 0 && cfg.XidRate <= 1) {
		return nil, fmt.Errorf("%w: fail rate %v and Xid rate %v must be within 0..1", ErrConfig, cfg.FailRate, cfg.XidRate)
	}
	s := &SimulatedSource{failRate: cfg.FailRate, xidRate: cfg.XidRate}
	for i, typ := range cfg.GPUs {
		if typ.MemoryMB <= 0 || typ.PowerLimitW <= 0 || typ.IdlePowerW < 0 || typ.IdlePowerW > typ.PowerLimitW {
			return nil, fmt.Errorf("%w: GPU %d (%q): memory and power limit must be positive, idle power within the limit", ErrConfig, i, typ.Name)
		}
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
		g := &simGPU{
			typ: typ,
			uuid: fmt.Sprintf("GPU-%08x-%04x-%04x-%04x-%012x",
				rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint32()&0xffff, rng.Uint64()&0xffffffffffff),
			rng:  rng,
			util: rng.Float64() * 30,
			temp: simIdleTempC + rng.Float64()*5,
		}
		g.memUsed = g.minMem() + rng.Float64()*0.3*float64(typ.MemoryMB)
		s.gpus = append(s.gpus, g)
	}
	return s, nil
}

// Kind is SourceSimulated.
func (s *SimulatedSource) Kind() string { return SourceSimulated }

// Devices lists 0..n-1.
func (s *SimulatedSource) Devices() []int {
	out := make([]int, len(s.gpus))
	for i := range out {
		out[i] = i
	}
	return out
}

// Sample advances GPU index one step and reports it.
func (s *SimulatedSource) Sample(ctx context.Context, index int) (telemetry.Sample, error) {
	if err := ctx.Err(); err != nil {
		return telemetry.Sample{}, err
	}
	if s.closed.Load() {
		return telemetry.Sample{}, ErrSourceClosed
	}
	if index < 0 || index >= len(s.gpus) {
		return telemetry.Sample{}, fmt.Errorf("%w: %d (simulating %d GPUs)", ErrUnknownDevice, index, len(s.gpus))
	}
	g := s.gpus[index]
	g.mu.Lock()
	defer g.mu.Unlock()
	g.step()

	total := g.typ.MemoryMB
	used := int64(math.Round(g.memUsed))
	smp := telemetry.Sample{
		Index:                index,
		UUID:                 g.uuid,
		Name:                 g.typ.Name,
		Source:               SourceSimulated,
		MemoryTotalMB:        total,
		MemoryUsedMB:         used,
		MemoryFreeMB:         total - used,
		UtilizationGPUPct:    math.Round(g.util),
		UtilizationMemoryPct: clamp(math.Round(g.util*0.6+g.rng.NormFloat64()*5), 0, 100),
		TemperatureC:         math.Round(g.temp),
		PowerW:               math.Round(g.power()*1000) / 1000,
		PowerLimitW:          g.typ.PowerLimitW,
		Healthy:              true,
	}
	if s.xidRate > 0 && g.xid == 0 && g.rng.Float64() < s.xidRate {
		g.xid = simXid
	}
	if g.xid != 0 {
		smp.Healthy = false
		smp.LastXid = g.xid
		smp.HealthReason = xidReason(g.xid)
	}
	if s.failRate > 0 {
		g.injectFailures(&smp, s.failRate)
	}
	smp.Timestamp = time.Now().UTC()
	return smp, nil
}

// injectFailures drops reads at random, zeroing what they would have set.
func (g *simGPU) injectFailures(smp *telemetry.Sample, rate float64) {
	reads := []struct {
		name  string
		clear func()
	}{
		{telemetry.ReadMemory, func() { smp.MemoryTotalMB, smp.MemoryUsedMB, smp.MemoryFreeMB = 0, 0, 0 }},
		{telemetry.ReadUtilization, func() { smp.UtilizationGPUPct, smp.UtilizationMemoryPct = 0, 0 }},
		{telemetry.ReadTemperature, func() { smp.TemperatureC = 0 }},
		{telemetry.ReadPower, func() { smp.PowerW = 0 }},
		{telemetry.ReadPowerLimit, func() { smp.PowerLimitW = 0 }},
	}
	for _, r := range reads {
		if g.rng.Float64() < rate {
			r.clear()
			smp.FailedReads = append(smp.FailedReads, r.name)
		}
	}
}

// step moves the walk once: utilisation wanders, memory drifts, temperature
// follows utilisation with lag.
func (g *simGPU) step() {
	total := float64(g.typ.MemoryMB)
	g.util = clamp(g.util+g.rng.NormFloat64()*simUtilStep, 0, 100)
	g.memUsed = clamp(g.memUsed+g.rng.NormFloat64()*simMemStep*total, g.minMem(), simMemMaxShare*total)
	target := simIdleTempC + simTempPerUtil*g.util
	g.temp = clamp(g.temp+0.3*(target-g.temp)+g.rng.NormFloat64(), simMinTempC, simMaxTempC)
}

// minMem is what the driver and context keep even on an idle GPU.
func (g *simGPU) minMem() float64 { return math.Min(500, 0.02*float64(g.typ.MemoryMB)) }

func (g *simGPU) power() float64 {
	t := g.typ
	p := t.IdlePowerW + (t.PowerLimitW-t.IdlePowerW)*g.util/100 + g.rng.NormFloat64()*0.02*t.PowerLimitW
	return clamp(p, 0, t.PowerLimitW)
}

// Close ends the simulation.
func (s *SimulatedSource) Close() error {
	s.closed.Store(true)
	return nil
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }
