// Package deployments checks the deployment files beside it: the NATS configs
// (parsed by nats-server and run), docker-compose.yml (loaded by the compose-spec
// loader), the Kubernetes manifests (decoded strictly into the API types) and the
// Grafana dashboard (every metric it queries exists). It is a module of its own so
// that those heavy dependencies stay out of the worker's.
package deployments
