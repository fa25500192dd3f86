// Package clustertest holds tests that run the orchestrator's services in
// one process against an in-process 3-node JetStream cluster
// (natstest.StartCluster), to check what survives the loss of a node: see
// nodeloss_test.go and docs/node-loss.md. It has no code of its own.
package clustertest
