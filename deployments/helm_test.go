package deployments

import (
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// natsValues is what the tests read of values-nats.yaml (the NATS chart's 1.x
// layout).
type natsValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
			Merge    struct {
				Authorization struct {
					User     string `json:"user"`
					Password string `json:"password"`
				} `json:"authorization"`
				Routes []string `json:"routes"`
			} `json:"merge"`
		} `json:"cluster"`
		JetStream struct {
			Enabled bool `json:"enabled"`
		} `json:"jetstream"`
		Monitor *struct {
			Enabled bool `json:"enabled"`
		} `json:"monitor"`
		Merge map[string]any `json:"merge"`
	} `json:"config"`
	Container struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
			Registry   string `json:"registry"`
		} `json:"image"`
		Merge struct {
			EnvFrom []corev1.EnvFromSource `json:"envFrom"`
		} `json:"merge"`
		Patch []jsonPatch `json:"patch"`
	} `json:"container"`
	PodTemplate struct {
		Patch []jsonPatch `json:"patch"`
	} `json:"podTemplate"`
	Service struct {
		Ports map[string]struct {
			Enabled bool `json:"enabled"`
		} `json:"ports"`
	} `json:"service"`
}

type jsonPatch struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value"`
}

func loadNATSValues(t *testing.T) (natsValues, map[string]any) {
	t.Helper()
	raw, err := os.ReadFile("kubernetes/values-nats.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v natsValues
	var generic map[string]any
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatalf("values-nats.yaml: %v", err)
	}
	if err := yaml.Unmarshal(raw, &generic); err != nil {
		t.Fatalf("values-nats.yaml: %v", err)
	}
	return v, generic
}

// patched returns the value a JSON patch of ops adds at path.
func patched(t *testing.T, ops []jsonPatch, at string, into any) {
	t.Helper()
	for _, op := range ops {
		if op.Op == "add" && op.Path == at {
			if err := yaml.UnmarshalStrict(op.Value, into); err != nil {
				t.Fatalf("values-nats.yaml: patch %s: %v", at, err)
			}
			return
		}
	}
	t.Fatalf("values-nats.yaml: no patch adds %s", at)
}

// passwordGuard is the init container that checks the NATS secret.
func passwordGuard(t *testing.T, v natsValues) corev1.Container {
	t.Helper()
	var init []corev1.Container
	patched(t, v.PodTemplate.Patch, "/spec/initContainers", &init)
	for _, c := range init {
		if c.Name == "password-guard" {
			return c
		}
	}
	t.Fatalf("values-nats.yaml: no password-guard init container in %+v", init)
	return corev1.Container{}
}

// exampleNATSSecret is nats-passwords.example.yaml's data.
func exampleNATSSecret(t *testing.T) (name string, data map[string]string) {
	t.Helper()
	raw, err := os.ReadFile("kubernetes/nats-passwords.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := yaml.UnmarshalStrict(raw, &sec); err != nil {
		t.Fatalf("nats-passwords.example.yaml: %v", err)
	}
	return sec.Name, sec.StringData
}

func secretRefs(env []corev1.EnvFromSource) (names []string) {
	for _, e := range env {
		if e.SecretRef != nil {
			names = append(names, e.SecretRef.Name)
		}
	}
	return names
}

// The NATS pods of the Helm values do not start with the example passwords of
// nats-passwords.example.yaml, an empty or missing one, or a route URL without
// the route password: their init container, run here with sh as the pod runs it,
// says which and exits non-zero; with real values it lets the pod start.
func TestKubernetesRefusesExamplePasswords(t *testing.T) {
	v, _ := loadNATSValues(t)
	guard := passwordGuard(t, v)
	secretName, example := exampleNATSSecret(t)
	if refs := secretRefs(guard.EnvFrom); !slices.Equal(refs, []string{secretName}) {
		t.Fatalf("the guard reads %v, the NATS container %s", refs, secretName)
	}
	if len(guard.Command) < 3 {
		t.Fatalf("guard command %q", guard.Command)
	}
	if _, err := exec.LookPath(guard.Command[0]); err != nil {
		t.Skipf("no %s here", guard.Command[0])
	}
	var passwords []string
	for k, val := range example {
		if strings.HasSuffix(k, "_PASSWORD") {
			passwords = append(passwords, k)
			if !strings.HasPrefix(val, "change-me") {
				t.Errorf("example %s=%s is not a change-me value", k, val)
			}
		}
	}
	slices.Sort(passwords)
	if len(passwords) != 6 {
		t.Fatalf("example passwords %v", passwords)
	}
	real := map[string]string{}
	for k, val := range example {
		real[k] = val
		if strings.HasSuffix(k, "_PASSWORD") {
			real[k] = "Xq7-" + strings.ToLower(k)
		}
	}
	for k, val := range example {
		if strings.HasPrefix(k, "ROUTE_") && !strings.HasSuffix(k, "_PASSWORD") {
			real[k] = strings.ReplaceAll(val, example["ROUTE_PASSWORD"], real["ROUTE_PASSWORD"])
		}
	}
	with := func(base map[string]string, k, val string) map[string]string {
		m := maps.Clone(base)
		if val == "<unset>" {
			delete(m, k)
		} else {
			m[k] = val
		}
		return m
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		bad  []string // the variables the guard must name; none: it lets the pod start
	}{
		{"real values", real, nil},
		{"the example values", example, passwords},
		{"one example password", with(real, "PUBLISHER_PASSWORD", "change-me-publisher"), []string{"PUBLISHER_PASSWORD"}},
		{"an empty password", with(real, "SYS_PASSWORD", ""), []string{"SYS_PASSWORD"}},
		{"a missing password", with(real, "EVENTS_PASSWORD", "<unset>"), []string{"EVENTS_PASSWORD"}},
		{"the README's placeholder", with(real, "WORKER_PASSWORD", "…"), []string{"WORKER_PASSWORD"}},
		{"a route URL with a placeholder", with(real, "ROUTE_1", "nats://route:<ROUTE_PASSWORD>@nats-1.nats-headless:6222"), []string{"ROUTE_1"}},
		{"a route URL with the example password", with(real, "ROUTE_2", example["ROUTE_2"]), []string{"ROUTE_2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(guard.Command[0], append(guard.Command[1:], guard.Args...)...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			for k, val := range tc.env {
				cmd.Env = append(cmd.Env, k+"="+val)
			}
			out, err := cmd.CombinedOutput()
			if tc.bad == nil {
				if err != nil || !strings.Contains(string(out), "passwords set") {
					t.Fatalf("refused real values: %v\n%s", err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("started:\n%s", out)
			}
			if !strings.Contains(string(out), "refusing to start") || !strings.Contains(string(out), "nats-passwords secret") {
				t.Errorf("message: %s", out)
			}
			for _, name := range tc.bad {
				if !regexp.MustCompile(`\b` + name + `\b`).Match(out) {
					t.Errorf("the message does not name %s: %s", name, out)
				}
			}
			for _, val := range real {
				if strings.Contains(string(out), val) {
					t.Errorf("the message shows a value: %s", out)
				}
			}
		})
	}
}
