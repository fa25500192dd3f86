module github.com/nlocalmodels/orchestrator/schemas

go 1.26.8
