// Package bus holds the NATS contract of the orchestrator: subjects, buckets,
// streams, connection options, provisioning and the embedded server.
package bus

import "strconv"

// Default names (prefix "orch"). Every service and test uses these constants.
const (
	Prefix = "orch"

	// TelemetrySubjectPrefix + "<host>.<index>" carries gpu-sample messages.
	TelemetrySubjectPrefix = "orch.telemetry.gpu."
	// TelemetryWildcard subscribes to every GPU sample.
	TelemetryWildcard = "orch.telemetry.gpu.>"
	// TelemetryStream keeps recent samples so a starting selector warms at once.
	TelemetryStream = "ORCH_TELEMETRY"
	// TelemetryStreamSubjects is what TelemetryStream captures: GPU samples and
	// any later telemetry kind under the same root.
	TelemetryStreamSubjects = "orch.telemetry.>"

	// SelectSubject is the selector's request/reply endpoint.
	SelectSubject = "orch.select"
	// SelectQueueGroup is the queue group selector replicas share.
	SelectQueueGroup = "selector"

	// SelectionEventSubjectPrefix + "<category>" carries selection-event messages.
	SelectionEventSubjectPrefix = "orch.events.selection."
	SelectionEventWildcard      = "orch.events.selection.>"
	// SelectionStream stores every decision event.
	SelectionStream = "ORCH_SELECTIONS"
	// SinkConsumer is the metrics-sink's durable pull consumer on SelectionStream.
	SinkConsumer = "metrics-sink"

	// RegistrySubjectPrefix roots the registry micro service's endpoints.
	RegistrySubjectPrefix = "orch.registry"

	ModelsBucket     = "orch_models"
	CategoriesBucket = "orch_categories"
	ConfigBucket     = "orch_config"
	// ReservationSubject carries the GPU memory reservations selector
	// replicas share (core NATS: each replica applies every other's).
	ReservationSubject = "orch.selector.reservations"
	// SelectionConfigKey is the config bucket key of the selection config.
	SelectionConfigKey = "selection"
)

// TelemetrySubject is the subject a host's GPU publishes its samples on.
func TelemetrySubject(host string, index int) string {
	return TelemetrySubjectPrefix + host + "." + strconv.Itoa(index)
}

// SelectionEventSubject is the subject a decision for category is published on.
func SelectionEventSubject(category string) string {
	return SelectionEventSubjectPrefix + category
}
