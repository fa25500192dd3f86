// Package metricssink is the metrics-sink service of the model orchestrator:
// it keeps every selection decision in SQL for analysts.
//
// A durable pull consumer (bus.SinkConsumer on bus.SelectionStream, explicit
// ack) is read in batches cut by size (SINK_BATCH_SIZE) and time
// (SINK_BATCH_WAIT). Each batch is written in one transaction to the table
// selection_metrics, whose first eight columns are the seed's SelectionMetrics
// fields; rows are keyed by event_id and inserted with ON CONFLICT DO NOTHING,
// so a redelivered event never makes a second row. Messages are acked only
// after the commit; a failed commit naks them with a delay and is retried. A
// message carries one event or several (the selector packs them under load,
// one per line). An event that cannot be stored is counted as poison and
// skipped; a message with no storable event is terminated, never retried.
//
// Stores: SQLite (a file in WAL mode, pure Go, the default) and PostgreSQL
// (pgx) for a postgres:// URL; see OpenStore. The seed's three analysis
// queries are built-in reports (Reports, Store.Report); SQLite runs their text
// as written.
//
// Run also serves the micro service "metrics-sink" (queue group
// metrics-sink) under orch.sink: reports.list, reports.run, recent and stats
// (see SubjectReportsList and its neighbours for the bodies). ListReports,
// RunReport, Recent and FetchStats are the Go client of those endpoints.
//
// For operators, Run reads the telemetry stream as the selector does (an
// ordered consumer, the last sample per GPU, then live ones) into the GPU
// view of the dashboard: one self-contained page (embedded, no asset from
// the network) and its JSON API, served by DashboardHandler. Register mounts
// both on an obs.Server with the readiness Check; WithMetrics exports Stats
// as the orch_sink_* Prometheus metrics. cmd/metrics-sink serves them on
// SINK_METRICS_ADDR, and the all-in-one mounts the same handler.
package metricssink
