// Package deploytest holds the tests of the deployment files: the
// Dockerfiles (services/*/Dockerfile), docker-compose.yml and everything
// under deploy/ (Kubernetes manifests, systemd units, Prometheus and Grafana
// files, NATS configs).
//
// They parse every YAML and JSON file, and check that each environment
// variable a container, unit or env file sets is one its program reads, that
// every build context, Dockerfile and COPY source exists, that ports and
// probes point at the metrics address each service listens on, and that
// every image is built here or is an allowed third-party one.
//
// What a binary reads is derived from its source, not listed by hand: the
// test follows the binary's imports inside this repository, finds each
// envconfig.Process(prefix, &cfg) and os.Getenv("NAME") call, and reflects
// over the Config type with envconfig's own naming (envconfig.Usagef). The
// package has no non-test code; this file only documents it.
package deploytest
