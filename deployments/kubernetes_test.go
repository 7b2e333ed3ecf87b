package deployments

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	kustomize "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// Every manifest decodes strictly (unknown fields are errors) into its API type.
func TestKubernetesManifests(t *testing.T) {
	names := configNames(t)
	read := func(name string) []byte {
		raw, err := os.ReadFile(filepath.Join("kubernetes", name))
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	strict := func(name string, v any) {
		t.Helper()
		if err := yaml.UnmarshalStrict(read(name), v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var k kustomize.Kustomization
	strict("kustomization.yaml", &k)
	files, _ := filepath.Glob("kubernetes/*.yaml")
	decoded := map[string]bool{"kustomization.yaml": true, "values-nats.yaml": true}

	var ns corev1.Namespace
	strict("namespace.yaml", &ns)
	var cm corev1.ConfigMap
	strict("configmap.yaml", &cm)
	var sec corev1.Secret
	strict("secret.example.yaml", &sec)
	var dep appsv1.Deployment
	strict("deployment.yaml", &dep)
	var pdb policyv1.PodDisruptionBudget
	strict("pdb.yaml", &pdb)
	var svc corev1.Service
	strict("service.yaml", &svc)
	var sm monitoringv1.ServiceMonitor
	strict("servicemonitor.yaml", &sm)
	var np, natsNP networkingv1.NetworkPolicy
	strict("networkpolicy.yaml", &np)
	strict("nats-networkpolicy.yaml", &natsNP)
	var natsSec corev1.Secret
	strict("nats-passwords.example.yaml", &natsSec)
	for _, n := range []string{"namespace.yaml", "configmap.yaml", "secret.example.yaml", "deployment.yaml", "pdb.yaml", "service.yaml", "servicemonitor.yaml", "networkpolicy.yaml", "nats-networkpolicy.yaml", "nats-passwords.example.yaml"} {
		decoded[n] = true
	}
	for _, f := range files {
		if !decoded[filepath.Base(f)] {
			t.Errorf("%s is not checked by this test", f)
		}
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(filepath.Join("kubernetes", r)); err != nil {
			t.Errorf("kustomization resource %s: %v", r, err)
		}
	}

	// The worker's Deployment: probes, resources, non-root, read-only root, a
	// grace period longer than the drain.
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("probes: %+v %+v", c.LivenessProbe, c.ReadinessProbe)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources: %+v", c.Resources)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("not runAsNonRoot")
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Error("root filesystem not read-only")
	}
	drain, err := time.ParseDuration(cm.Data["XYGROUP_DRAIN_TIMEOUT"])
	if err != nil || pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second <= drain+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v vs drain %v", pod.TerminationGracePeriodSeconds, drain)
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != dep.Spec.Selector.MatchLabels["app.kubernetes.io/name"] {
		t.Errorf("PDB does not select the worker")
	}
	if svc.Spec.Selector["app.kubernetes.io/name"] != "xygroup-worker" || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("metrics service or monitor: %+v %+v", svc.Spec.Selector, sm.Spec.Endpoints)
	}
	// Environment: the contract's names (plus the two the Deployment assembles NATS_URL from).
	assembled := map[string]bool{"NATS_HOST": true, "NATS_WORKER_PASSWORD": true}
	for k := range cm.Data {
		if isConfigFamily(k) && !names[k] && !assembled[k] {
			t.Errorf("configmap: %s is not in the README's configuration table", k)
		}
	}
	for k := range sec.StringData {
		if isConfigFamily(k) && !names[k] && !assembled[k] {
			t.Errorf("secret: %s is not in the README's configuration table", k)
		}
	}
	if !strings.Contains(c.Env[0].Value, "$(NATS_WORKER_PASSWORD)") || c.Env[0].Name != "NATS_URL" || !strings.HasPrefix(c.Env[0].Value, "tls://") {
		t.Errorf("NATS_URL: %+v", c.Env)
	}
	// TLS: NATS_CA is a file of a mounted secret.
	var caFile string
	for _, e := range c.Env {
		if e.Name == "NATS_CA" {
			caFile = e.Value
		}
	}
	var caFromSecret bool
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && m.ReadOnly && v.Secret != nil && strings.HasPrefix(caFile, m.MountPath+"/") {
				caFromSecret = true
			}
		}
	}
	if !caFromSecret {
		t.Errorf("NATS_CA %q is not a file of a secret mounted read-only", caFile)
	}
	// Every container locked down.
	for _, c := range append(append([]corev1.Container(nil), pod.InitContainers...), pod.Containers...) {
		if c.SecurityContext == nil {
			t.Errorf("container %s has no securityContext", c.Name)
			continue
		}
		if err := restricted(c.SecurityContext, pod.SecurityContext); err != nil {
			t.Errorf("container %s: %v", c.Name, err)
		}
	}

	// No token, its own inbox prefix, an image by version.
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the service-account token is mounted")
	}
	if cm.Data["NATS_INBOX_PREFIX"] != "_INBOX_worker" {
		t.Errorf("NATS_INBOX_PREFIX %q, not the worker user's own", cm.Data["NATS_INBOX_PREFIX"])
	}
	if len(k.Images) != 1 || (k.Images[0].Digest == "" && (k.Images[0].NewTag == "" || k.Images[0].NewTag == "latest")) {
		t.Errorf("kustomization image %+v: not by version or digest", k.Images)
	}
	if !slices.Contains(k.Resources, "networkpolicy.yaml") {
		t.Error("the NetworkPolicy is not applied")
	}

	// The NetworkPolicy: the worker's pods, ingress only to the HTTP port from the
	// monitoring namespace, egress only to NATS, DNS and 443.
	if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "xygroup-worker" || len(np.Spec.PolicyTypes) != 2 {
		t.Errorf("networkpolicy selects %+v, types %v", np.Spec.PodSelector, np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].Ports) != 1 || np.Spec.Ingress[0].Ports[0].Port.IntValue() != 9090 ||
		len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
		t.Errorf("networkpolicy ingress %+v", np.Spec.Ingress)
	}
	var egressPorts []int
	for _, e := range np.Spec.Egress {
		for _, p := range e.Ports {
			egressPorts = append(egressPorts, p.Port.IntValue())
		}
	}
	slices.Sort(egressPorts)
	if !slices.Equal(egressPorts, []int{53, 53, 443, 4222}) {
		t.Errorf("networkpolicy egress ports %v", egressPorts)
	}
}
