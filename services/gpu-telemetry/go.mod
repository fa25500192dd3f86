module github.com/nlocalmodels/orchestrator/services/gpu-telemetry

go 1.26.8

require (
	github.com/nlocalmodels/orchestrator/pkg v0.0.0
	github.com/nlocalmodels/orchestrator/schemas v0.0.0
)

replace (
	github.com/nlocalmodels/orchestrator/pkg => ../../pkg
	github.com/nlocalmodels/orchestrator/schemas => ../../schemas
)
