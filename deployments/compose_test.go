package deployments

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// docker-compose.yml, loaded as docker compose loads it: the services, their
// healthchecks and dependencies, and environment variables with the contract's
// names.
func TestComposeFile(t *testing.T) {
	names := configNames(t)
	env := []string{"WORKER_PASSWORD=w", "OPERATOR_PASSWORD=o", "PUBLISHER_PASSWORD=p", "EVENTS_PASSWORD=e",
		"ROUTE_PASSWORD=r", "GRAFANA_ADMIN_PASSWORD=g"}
	p := loadCompose(t, env)
	var services []string
	for name := range p.Services {
		services = append(services, name)
	}
	slices.Sort(services)
	if !slices.Equal(services, []string{"grafana", "nats-0", "nats-1", "nats-2", "nats-certs", "prometheus", "sandbox", "worker"}) {
		t.Fatalf("services %v", services)
	}
	for name, s := range p.Services {
		if name != "nats-certs" && (s.HealthCheck == nil || len(s.HealthCheck.Test) == 0) {
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
	// TLS: the certificates made once before NATS starts, on every node, and the
	// workers connecting with tls:// and the CA.
	c := p.Services["nats-certs"]
	if !slices.Contains(c.Entrypoint, "/gen-certs.sh") || len(c.Volumes) != 2 || c.Volumes[1].Source != "nats-tls" {
		t.Errorf("nats-certs: entrypoint %v volumes %+v", c.Entrypoint, c.Volumes)
	}
	for _, u := range strings.Split(*w.Environment["NATS_URL"], ",") {
		if !strings.HasPrefix(u, "tls://") {
			t.Errorf("worker: NATS URL %s without TLS", u)
		}
	}
	if v := w.Environment["NATS_CA"]; v == nil || *v != "/etc/nats-tls/ca.pem" || !mounts(w, "nats-tls", "/etc/nats-tls") {
		t.Errorf("worker: NATS_CA %v, volumes %+v", v, w.Volumes)
	}
	for _, n := range []string{"nats-0", "nats-1", "nats-2"} {
		s := p.Services[n]
		if s.DependsOn["nats-certs"].Condition != "service_completed_successfully" || !mounts(s, "nats-tls", "/etc/nats-tls") {
			t.Errorf("%s: does not wait for its certificates or mount them: %+v %+v", n, s.DependsOn, s.Volumes)
		}
		if v := s.Environment["SERVER_NAME"]; v == nil || *v != n {
			t.Errorf("%s: SERVER_NAME %v", n, v)
		}
		if v := s.Environment["WORKER_PASSWORD"]; v == nil || *v != "w" {
			t.Errorf("%s: passwords not passed", n)
		}
	}
	g := p.Services["grafana"]
	if g.DependsOn["prometheus"].Condition != "service_healthy" {
		t.Errorf("grafana depends on %+v", g.DependsOn)
	}
	if v := g.Environment["GF_AUTH_ANONYMOUS_ENABLED"]; v == nil || *v != "false" {
		t.Errorf("grafana allows anonymous access: %v", v)
	}
	if v := g.Environment["GF_SECURITY_ADMIN_PASSWORD"]; v == nil || *v != "g" {
		t.Errorf("grafana's admin password does not come from .env: %v", v)
	}
	if v := w.Environment["NATS_INBOX_PREFIX"]; v == nil || *v != "_INBOX_worker" {
		t.Errorf("worker: NATS_INBOX_PREFIX %v, not the worker user's own", v)
	}
	for name, s := range p.Services {
		if !strings.HasPrefix(s.Image, "xygroup:") && !regexp.MustCompile(`:v?[0-9]+\.[0-9]+\.[0-9]+(-[a-z0-9.]+)?$|@sha256:[0-9a-f]{64}$`).MatchString(s.Image) {
			t.Errorf("%s: image %s is not pinned to an exact version or digest", name, s.Image)
		}
	}
}

// mounts: s mounts volume at path, read only.
func mounts(s types.ServiceConfig, volume, path string) bool {
	for _, v := range s.Volumes {
		if v.Source == volume && v.Target == path && v.ReadOnly {
			return true
		}
	}
	return false
}

func loadCompose(t *testing.T, env []string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"../docker-compose.yml"}, cli.WithWorkingDirectory(".."), cli.WithEnv(env), cli.WithName("xygroup"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

// The example passwords (change-me-...) or an empty one stop NATS and Grafana:
// their entrypoint guard, run here with sh as the container runs it, refuses them
// and lets real passwords through to the service's command.
func TestComposeRefusesExamplePasswords(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	raw, err := os.ReadFile("compose/passwords.env.example")
	if err != nil {
		t.Fatal(err)
	}
	var example, real []string
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			if !strings.HasPrefix(v, "change-me") {
				t.Errorf("example %s=%s is not a change-me value", k, v)
			}
			example = append(example, line)
			real = append(real, k+"=Xq7-"+strings.ToLower(k))
		}
	}
	// one example value left among each service's passwords (the first is NATS's, the last Grafana's)
	oneExample := append([]string{example[0]}, real[1:len(real)-1]...)
	oneExample = append(oneExample, example[len(example)-1])
	for _, tc := range []struct {
		name string
		env  []string
		ok   bool
	}{{"real passwords", real, true}, {"the example passwords", example, false}, {"one example password", oneExample, false}} {
		p := loadCompose(t, tc.env)
		for _, svc := range []string{"nats-0", "nats-1", "nats-2", "grafana"} {
			s := p.Services[svc]
			if len(s.Entrypoint) < 3 || len(s.Command) == 0 {
				t.Fatalf("%s: no password guard (entrypoint %q)", svc, s.Entrypoint)
			}
			var env []string
			for k, v := range s.Environment {
				if v != nil {
					env = append(env, k+"="+*v)
				}
			}
			// the guard, then "echo started" in place of the service's command
			cmd := exec.Command(s.Entrypoint[0], append(append([]string(nil), s.Entrypoint[1:]...), "echo", "started")...)
			cmd.Env = append(env, "PATH="+os.Getenv("PATH"))
			out, err := cmd.CombinedOutput()
			started := err == nil && strings.Contains(string(out), "started")
			if started != tc.ok {
				t.Errorf("%s with %s: started %v (%s)", svc, tc.name, started, out)
			}
		}
	}
}
