package selector

import (
	"bytes"
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nlocalmodels/orchestrator/pkg/natstest"
)

// benchEventBytes is about the size of a gpu_aware decision event in
// scripts/bench-nats (2.8 KB: four GPU samples, three alternatives).
const benchEventBytes = 2800

// BenchmarkEventPublisher is the decision event path alone: events through
// an EventPublisher into a file stream with the decision stream's dedup
// window, on an embedded server in this process: in batches into a stream
// that writes each event before acknowledging it, the same into one in async
// persist mode (serve's embedded server), and one acknowledged publish per
// event. cpu-us/event is the whole process (publisher, client and server)
// per stored event.
func BenchmarkEventPublisher(b *testing.B) {
	for _, mode := range []struct {
		name   string
		stream eventStream
	}{
		{"batched", batchedStream},
		{"batched-async-persist", asyncStream},
		{"per-message", unbatchedStream},
	} {
		b.Run(mode.name, func(b *testing.B) {
			_, nc := natstest.Start(b)
			p, stop := startEventPublisher(b, nc, mode.stream, 5)
			data := bytes.Repeat([]byte("x"), benchEventBytes)
			cpu0, start := processCPU(), time.Now()
			b.ResetTimer()
			for i := range b.N {
				msg := testEvent("bench-" + strconv.Itoa(i))
				msg.Data = data
				for len(p.queue) == cap(p.queue) { // full: wait rather than drop
					time.Sleep(50 * time.Microsecond)
				}
				p.Publish(msg)
			}
			stop()
			b.StopTimer()
			elapsed, cpu := time.Since(start), processCPU()-cpu0
			if st := p.Stats(); st.Published != uint64(b.N) || st.Failed != 0 || st.Dropped != 0 {
				b.Fatalf("stats %+v after %d events", st, b.N)
			}
			info, err := natstest.JetStream(b, nc).Stream(context.Background(), testEventStream)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/event")
			b.ReportMetric(float64(b.N)/float64(info.CachedInfo().State.Msgs), "events/msg")
		})
	}
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
