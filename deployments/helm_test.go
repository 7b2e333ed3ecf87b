package deployments

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
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

// What the README says of the NATS Helm values: routes authenticate with the
// route password, monitoring is for the kubelet's probes only, the accounts of
// accounts.conf are included with their passwords from the secret, and the image
// is the exact version the permission tests run.
func TestNATSHelmValues(t *testing.T) {
	v, generic := loadNATSValues(t)

	// Keys the chart reads, where they belong (a key it does not know is ignored
	// without a word).
	known := map[string][]string{
		"":            {"config", "container", "podTemplate", "promExporter", "reloader", "service", "statefulSet", "natsBox", "tlsCA", "headlessService", "configMap", "serviceAccount", "podDisruptionBudget", "global"},
		"config":      {"cluster", "jetstream", "merge", "patch", "monitor", "nats", "leafnodes", "websocket", "mqtt", "gateway", "profiling", "resolver", "serverNamePrefix"},
		"container":   {"image", "merge", "patch", "env", "ports"},
		"podTemplate": {"merge", "patch", "topologySpreadConstraints", "configChecksumAnnotation"},
	}
	for at, keys := range known {
		m := generic
		if at != "" {
			m, _ = generic[at].(map[string]any)
		}
		for k := range m {
			if !slices.Contains(keys, k) {
				t.Errorf("values-nats.yaml: %s.%s is not a key the chart reads there", at, k)
			}
		}
	}

	// TLS for clients and routes, from the nats-tls secret; routes verify each
	// other's certificate.
	for _, at := range [][]string{{"config", "nats", "tls"}, {"config", "cluster", "tls"}, {"tlsCA"}} {
		if dig(generic, append(at, "enabled")...) != true || dig(generic, append(at, "secretName")...) != "nats-tls" {
			t.Errorf("%s: TLS not enabled from the nats-tls secret", strings.Join(at, "."))
		}
	}
	if dig(generic, "config", "cluster", "tls", "merge", "verify") != true {
		t.Error("routes do not verify each other's certificates")
	}
	if !strings.Contains(string(mustRead(t, "kubernetes/values-nats.yaml")), "create secret generic nats-tls") {
		t.Error("values-nats.yaml does not say how to create the nats-tls secret")
	}
	// Every container of the chart locked down; no nats-box.
	if dig(generic, "natsBox", "enabled") != false {
		t.Error("natsBox is enabled")
	}
	var pod corev1.PodSecurityContext
	remarshal(t, dig(generic, "podTemplate", "merge", "spec", "securityContext"), &pod)
	if pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot || pod.RunAsUser == nil || *pod.RunAsUser == 0 || pod.SeccompProfile == nil || pod.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v", pod)
	}
	guardSC := passwordGuard(t, v).SecurityContext
	for name, raw := range map[string]any{
		"container":      dig(generic, "container", "merge", "securityContext"),
		"reloader":       dig(generic, "reloader", "merge", "securityContext"),
		"promExporter":   dig(generic, "promExporter", "merge", "securityContext"),
		"password-guard": guardSC,
	} {
		var sc corev1.SecurityContext
		remarshal(t, raw, &sc)
		if err := restricted(&sc); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// A 3-node JetStream cluster whose routes authenticate.
	c := v.Config.Cluster
	if !c.Enabled || c.Replicas != 3 || !v.Config.JetStream.Enabled {
		t.Errorf("cluster enabled %v replicas %d, jetstream %v", c.Enabled, c.Replicas, v.Config.JetStream.Enabled)
	}
	if c.Merge.Authorization.User != "route" || c.Merge.Authorization.Password != "<< $ROUTE_PASSWORD >>" {
		t.Errorf("routes do not authenticate with ROUTE_PASSWORD: %+v", c.Merge.Authorization)
	}
	if !slices.Equal(c.Merge.Routes, []string{"<< $ROUTE_0 >>", "<< $ROUTE_1 >>", "<< $ROUTE_2 >>"}) {
		t.Errorf("routes %v: not the secret's ROUTE_0..2 (which carry the route password)", c.Merge.Routes)
	}

	// Monitoring: on (the chart's probes use it), bound to no address of ours,
	// on no Service, and admitted by the NetworkPolicy to nobody.
	if v.Config.Monitor != nil && !v.Config.Monitor.Enabled {
		t.Error("config.monitor is off: the chart's probes need it")
	}
	for _, k := range []string{"http", "https", "http_port", "https_port", "monitor_port", "http_host", "host", "listen"} {
		if _, ok := v.Config.Merge[k]; ok {
			t.Errorf("config.merge.%s: monitoring or the listen address set beyond the chart's", k)
		}
	}
	var walk func(string, any)
	walk = func(at string, x any) {
		switch x := x.(type) {
		case map[string]any:
			for k, y := range x {
				walk(at+"."+k, y)
			}
		case []any:
			for _, y := range x {
				walk(at, y)
			}
		case string:
			if strings.Contains(x, "0.0.0.0") {
				t.Errorf("%s binds to 0.0.0.0: %q", at, x)
			}
		}
	}
	walk("config", generic["config"])
	if v.Service.Ports["monitor"].Enabled || v.Service.Ports["profiling"].Enabled {
		t.Errorf("the Service exposes monitoring: %+v", v.Service.Ports)
	}
	raw, err := os.ReadFile("kubernetes/nats-networkpolicy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict(raw, &np); err != nil {
		t.Fatal(err)
	}
	var ports []int
	for _, in := range np.Spec.Ingress {
		if len(in.Ports) == 0 {
			t.Errorf("nats-networkpolicy.yaml: a rule admits every port: %+v", in)
		}
		for _, p := range in.Ports {
			ports = append(ports, p.Port.IntValue())
		}
	}
	slices.Sort(ports)
	if !slices.Equal(ports, []int{4222, 6222, 7777}) {
		t.Errorf("nats-networkpolicy.yaml admits ports %v (8222, monitoring, to nobody)", ports)
	}

	// The accounts: accounts.conf from the nats-accounts ConfigMap, included by
	// the config the chart writes to /etc/nats-config/nats.conf.
	include, _ := v.Config.Merge["$include"].(string)
	var mount corev1.VolumeMount
	patched(t, v.Container.Patch, "/volumeMounts/-", &mount)
	var vol corev1.Volume
	patched(t, v.PodTemplate.Patch, "/spec/volumes/-", &vol)
	if path.Join("/etc/nats-config", include) != path.Join(mount.MountPath, "accounts.conf") || mount.Name != vol.Name ||
		vol.ConfigMap == nil || vol.ConfigMap.Name != "nats-accounts" {
		t.Errorf("accounts: $include %q, mount %+v, volume %+v", include, mount, vol)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "create configmap nats-accounts --from-file=deployments/nats/accounts.conf") {
		t.Error("the README does not create the nats-accounts ConfigMap from accounts.conf")
	}
	// Every variable of accounts.conf and of the values comes from the secret.
	secretName, example := exampleNATSSecret(t)
	if refs := secretRefs(v.Container.Merge.EnvFrom); !slices.Equal(refs, []string{secretName}) {
		t.Errorf("the NATS container's environment comes from %v, the example secret is %s", refs, secretName)
	}
	accounts, err := os.ReadFile("nats/accounts.conf")
	if err != nil {
		t.Fatal(err)
	}
	valuesRaw, _ := os.ReadFile("kubernetes/values-nats.yaml")
	uses := map[string]bool{}
	for _, m := range regexp.MustCompile(`:\s*\$([A-Z][A-Z0-9_]*)`).FindAllStringSubmatch(string(accounts), -1) {
		uses[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`<< \$([A-Z][A-Z0-9_]*) >>`).FindAllStringSubmatch(string(valuesRaw), -1) {
		uses[m[1]] = true
	}
	if len(uses) != 8 { // four users, the route password, three routes
		t.Fatalf("variables found: %v", slices.Sorted(maps.Keys(uses)))
	}
	for name := range uses {
		if _, ok := example[name]; !ok {
			t.Errorf("%s is used by the config but not in nats-passwords.example.yaml", name)
		}
	}

	// The image: an exact version, the one the tests run and compose uses.
	img := v.Container.Image
	m := regexp.MustCompile(`^(\d+\.\d+\.\d+)-alpine$`).FindStringSubmatch(img.Tag)
	if img.Repository != "nats" || m == nil {
		t.Fatalf("container.image %+v: not nats at an exact version", img)
	}
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(gomod), "github.com/nats-io/nats-server/v2 v"+m[1]+"\n") {
		t.Errorf("container.image.tag %s: not the nats-server of go.mod, which the permission tests run", img.Tag)
	}
	p := loadCompose(t, []string{"WORKER_PASSWORD=w", "OPERATOR_PASSWORD=o", "PUBLISHER_PASSWORD=p", "EVENTS_PASSWORD=e", "ROUTE_PASSWORD=r", "GRAFANA_ADMIN_PASSWORD=g"})
	if compose := p.Services["nats-0"].Image; compose != "nats:"+img.Tag {
		t.Errorf("Helm runs nats:%s, compose %s", img.Tag, compose)
	}
	if g := passwordGuard(t, v); g.Image != "nats:"+img.Tag {
		t.Errorf("the password guard runs %s, NATS nats:%s", g.Image, img.Tag)
	}
}

// dig reads a value of nested maps.
func dig(m map[string]any, keys ...string) any {
	var x any = m
	for _, k := range keys {
		mm, ok := x.(map[string]any)
		if !ok {
			return nil
		}
		x = mm[k]
	}
	return x
}

func remarshal(t *testing.T, from, into any) {
	t.Helper()
	raw, err := json.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, into); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// restricted: non-root, no privilege escalation, read-only root filesystem, no
// capability, the runtime's seccomp profile (on the container or, with pod, the pod).
func restricted(sc *corev1.SecurityContext, pod ...*corev1.PodSecurityContext) error {
	seccomp := sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	nonRoot := sc.RunAsNonRoot != nil && *sc.RunAsNonRoot
	for _, p := range pod {
		seccomp = seccomp || (p != nil && sc.SeccompProfile == nil && p.SeccompProfile != nil && p.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault)
		nonRoot = nonRoot || (p != nil && sc.RunAsNonRoot == nil && p.RunAsNonRoot != nil && *p.RunAsNonRoot)
	}
	switch {
	case !nonRoot:
		return errors.New("may run as root")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		return errors.New("privilege escalation allowed")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		return errors.New("writable root filesystem")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		return errors.New("capabilities not all dropped")
	case !seccomp:
		return errors.New("no RuntimeDefault seccomp profile")
	}
	return nil
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
	if len(passwords) != 5 {
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
		{"an empty password", with(real, "OPERATOR_PASSWORD", ""), []string{"OPERATOR_PASSWORD"}},
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
