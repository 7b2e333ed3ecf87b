package deployments

import (
	"context"
	"slices"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
)

// docker-compose.yml, loaded as docker compose loads it: the services, their
// healthchecks and dependencies, and environment variables with the contract's
// names.
func TestComposeFile(t *testing.T) {
	names := configNames(t)
	env := []string{"WORKER_PASSWORD=w", "OPERATOR_PASSWORD=o", "PUBLISHER_PASSWORD=p", "EVENTS_PASSWORD=e", "SYS_PASSWORD=s"}
	opts, err := cli.NewProjectOptions([]string{"../docker-compose.yml"}, cli.WithWorkingDirectory(".."), cli.WithEnv(env), cli.WithName("xygroup"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	var services []string
	for name := range p.Services {
		services = append(services, name)
	}
	slices.Sort(services)
	if !slices.Equal(services, []string{"grafana", "nats-0", "nats-1", "nats-2", "prometheus", "sandbox", "worker"}) {
		t.Fatalf("services %v", services)
	}
	for name, s := range p.Services {
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
			t.Errorf("%s has no healthcheck", name)
		}
		for k := range s.Environment {
			if isConfigFamily(k) && !names[k] {
				t.Errorf("%s: environment variable %s is not in the README's configuration table", name, k)
			}
		}
	}
	w := p.Services["worker"]
	if w.Deploy == nil || w.Deploy.Replicas == nil || *w.Deploy.Replicas != 3 {
		t.Errorf("worker replicas: %+v", w.Deploy)
	}
	for _, dep := range []string{"nats-0", "nats-1", "nats-2", "sandbox"} {
		if d, ok := w.DependsOn[dep]; !ok || d.Condition != "service_healthy" {
			t.Errorf("worker does not wait for %s to be healthy: %+v", dep, w.DependsOn)
		}
	}
	for _, k := range []string{"NATS_URL", "XYLINK_BASE_URL", "XYLINK_ENTERPRISE_ID", "XYLINK_TOKEN", "XYGROUP_STREAM_REPLICAS", "XYGROUP_HTTP_ADDR"} {
		if v := w.Environment[k]; v == nil || *v == "" {
			t.Errorf("worker: %s not set", k)
		}
	}
	if w.StopGracePeriod == nil || *w.StopGracePeriod <= 20_000_000_000 {
		t.Errorf("worker stop_grace_period %v is not longer than the 20 s drain", w.StopGracePeriod)
	}
	for _, n := range []string{"nats-0", "nats-1", "nats-2"} {
		s := p.Services[n]
		if v := s.Environment["SERVER_NAME"]; v == nil || *v != n {
			t.Errorf("%s: SERVER_NAME %v", n, v)
		}
		if v := s.Environment["WORKER_PASSWORD"]; v == nil || *v != "w" {
			t.Errorf("%s: passwords not passed", n)
		}
	}
	if g := p.Services["grafana"]; g.DependsOn["prometheus"].Condition != "service_healthy" {
		t.Errorf("grafana depends on %+v", g.DependsOn)
	}
}
