package deploytest

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nlocalmodels/orchestrator/pkg/catalog"
)

func TestEveryYAMLAndJSONFileParses(t *testing.T) {
	r := load(t)
	var n int
	for _, f := range r.files {
		switch path.Ext(f) {
		case ".yml", ".yaml", ".json":
		default:
			continue
		}
		n++
		t.Run(f, func(t *testing.T) {
			if err := r.parseErrs[f]; err != nil {
				t.Fatalf("%s does not parse: %v", f, err)
			}
			if len(r.docs[f]) == 0 {
				t.Errorf("%s holds no document", f)
			}
		})
	}
	if n == 0 {
		t.Fatal("no YAML or JSON file under deploy/ nor docker-compose.yml")
	}
}

func TestBinariesReadWhatTheirConfigsSay(t *testing.T) {
	r := load(t)
	// A few facts of the services' configuration, to show the derivation
	// works: these must be read (or must not be) by these binaries.
	tests := []struct {
		binary, variable string
		read             bool
	}{
		{"registry", "REGISTRY_SEED_REGISTRY", true},
		{"registry", "NATS_URL", true},
		{"registry", "REGISTRY_NATS_URL", true},
		{"selector", "SELECTOR_METRICS_ADDR", true},
		{"selector", "METRICS_ADDR", false}, // envconfig's unprefixed fallback is no contract
		{"selector", "REGISTRY_SEED_REGISTRY", false},
		{"gpu-telemetry", "TELEMETRY_SIM_GPUS", true},
		{"gpu-telemetry", "TELEMETRY_HOST", true},
		{"gpu-telemetry", "TELEMETRY_NATS_CREDS", true},
		{"metrics-sink", "SINK_DATABASE_URL", true},
		{"metrics-sink", "LOG_LEVEL", true}, // pkg/logging, reached through its imports
		{"orchestrator", "ORCH_GPU_SOURCE", true},
		{"orchestrator", "ORCH_DATA_DIR", true},
		{"orchestrator", "NATS_TLS_CA", true},
		{"orchestrator", "SELECTOR_WORKERS", false},
	}
	for _, tt := range tests {
		t.Run(tt.binary+"/"+tt.variable, func(t *testing.T) {
			b, ok := r.binaries[tt.binary]
			if !ok {
				t.Fatalf("no binary services/*/cmd/%s", tt.binary)
			}
			if _, got := b.vars[tt.variable]; got != tt.read {
				t.Errorf("%s reads %s: %v, want %v (reads %v)", b.dir, tt.variable, got, tt.read, sortedKeys(b.vars))
			}
		})
	}
	if b := r.binaries["gpu-telemetry"]; b == nil || !b.cgo {
		t.Error("services/gpu-telemetry has cgo-only files (NVML), but the test did not find them")
	}
}

func TestDockerfiles(t *testing.T) {
	r := load(t)
	if len(r.images) == 0 {
		t.Fatal("no services/*/Dockerfile")
	}
	uses, err := r.goWorkUses()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range sortedKeys(r.images) {
		d := r.images[name]
		t.Run(d.path, func(t *testing.T) {
			if len(d.stages) < 2 {
				t.Fatalf("%s has %d stages, want a build and a runtime stage", d.path, len(d.stages))
			}
			final := d.stages[len(d.stages)-1]
			var copied []string
			for _, s := range d.stages {
				for _, e := range s.errs {
					t.Errorf("%s: %s", d.path, e)
				}
				for _, c := range s.copies {
					if c.from != "" {
						continue
					}
					for _, src := range c.sources {
						src = path.Clean(src)
						copied = append(copied, src)
						if !r.exists(src) {
							t.Errorf("%s: COPY source %s does not exist in the build context (the repository root)", d.path, src)
						}
						if ignored(r.ignore, src) {
							t.Errorf("%s: COPY source %s is excluded by .dockerignore", d.path, src)
						}
					}
				}
			}
			// The workspace build needs every module go.work lists.
			for _, u := range uses {
				if !slices.ContainsFunc(copied, func(c string) bool { return c == "." || c == u || strings.HasPrefix(u, c+"/") }) {
					t.Errorf("%s copies no %s, which go.work uses", d.path, u)
				}
			}
			builds, errs := d.goBuilds()
			for _, e := range errs {
				t.Errorf("%s: %s", d.path, e)
			}
			bin, err := r.dockerfileBinary(d)
			if err != nil {
				t.Fatal(err)
			}
			if bin.name != d.name {
				t.Errorf("%s builds %s: the image %s%s would hold another program", d.path, bin.dir, imagePrefix, d.name)
			}
			cgo := slices.ContainsFunc(builds, func(b goBuild) bool { return b.cgo })
			if bin.cgo && !cgo {
				t.Errorf("%s builds %s without CGO_ENABLED=1, but its module needs cgo (NVML)", d.path, bin.dir)
			}
			if cgo && isStaticBase(final.base) {
				t.Errorf("%s builds with cgo but runs on %s, which has no glibc", d.path, final.base)
			}
			if u := final.user; u == "" || u == "root" || u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root:") {
				t.Errorf("%s: the runtime stage runs as %q, want a non-root USER", d.path, u)
			}
			if final.health && isStaticBase(final.base) {
				t.Errorf("%s: HEALTHCHECK on %s, which has no tool to run it", d.path, final.base)
			}
			report(t, r.checkContainer(container{
				where: d.path, image: imagePrefix + d.name, env: final.env, ports: final.expose,
			}))
		})
	}
}

// TestCompose checks each service of docker-compose.yml: its build, image,
// variables, ports, bind mounts and dependencies.
func TestCompose(t *testing.T) {
	r := load(t)
	docs, ok := r.docs[composeFile]
	if !ok {
		t.Fatalf("%s is missing or does not parse: %v", composeFile, r.parseErrs[composeFile])
	}
	services := m(dig(docs[0], "services"))
	if len(services) == 0 {
		t.Fatalf("%s has no services", composeFile)
	}
	for _, name := range sortedKeys(services) {
		svc := m(services[name])
		where := composeFile + " service " + name
		t.Run(name, func(t *testing.T) {
			image := interpolate(str(svc["image"]))
			if b := svc["build"]; b != nil {
				ctx, dockerfilePath := str(b), "Dockerfile"
				if bm := m(b); bm != nil {
					ctx = str(bm["context"])
					if df := str(bm["dockerfile"]); df != "" {
						dockerfilePath = df
					}
				}
				ctxRel := path.Clean(ctx)
				if fi, err := os.Stat(r.abs(ctxRel)); err != nil || !fi.IsDir() {
					t.Errorf("%s: build context %s is not a directory", where, ctx)
				}
				dfRel := path.Join(ctxRel, dockerfilePath)
				if !r.exists(dfRel) {
					t.Errorf("%s: dockerfile %s does not exist", where, dfRel)
				}
				d, ok := r.images[path.Base(path.Dir(dfRel))]
				switch {
				case !ok || d.path != dfRel:
					t.Errorf("%s: builds %s, which is not a services/<name>/Dockerfile", where, dfRel)
				case image == "":
					image = imagePrefix + d.name
				case !strings.HasPrefix(image, imagePrefix+d.name+":") && image != imagePrefix+d.name:
					t.Errorf("%s: image %s is built from %s, which makes %s%s", where, image, dfRel, imagePrefix, d.name)
				}
			}
			if image == "" {
				t.Fatalf("%s has neither image nor build", where)
			}
			c := container{where: where, image: image, env: map[string]string{}}
			switch env := svc["environment"].(type) {
			case map[string]any:
				for k, v := range env {
					c.env[k] = str(v)
				}
			case []any:
				for _, e := range env {
					k, v, _ := strings.Cut(str(e), "=")
					c.env[k] = v
				}
			}
			envFiles := list(svc["env_file"])
			if s, ok := svc["env_file"].(string); ok {
				envFiles = []any{s}
			}
			for _, ef := range envFiles {
				p := str(ef)
				if mp := m(ef); mp != nil {
					p = str(mp["path"])
				}
				text, err := r.read(path.Clean(p))
				if err != nil {
					t.Errorf("%s: env_file %s: %v", where, p, err)
					continue
				}
				vars, errs := envAssignments(text)
				for _, e := range errs {
					t.Errorf("%s: env_file %s: %s", where, p, e)
				}
				for k, v := range vars {
					c.env[k] = v
				}
			}
			for _, key := range []string{"expose", "ports"} {
				for _, p := range list(svc[key]) {
					n, err := portOf(p)
					if err != nil {
						t.Errorf("%s: %s entry %v: %v", where, key, p, err)
						continue
					}
					c.ports = append(c.ports, n)
				}
			}
			report(t, r.checkContainer(c))
			for _, v := range list(svc["volumes"]) {
				src := str(dig(v, "source"))
				if s, ok := v.(string); ok {
					src, _, _ = strings.Cut(s, ":")
				}
				if strings.HasPrefix(src, ".") && !r.exists(path.Clean(src)) {
					t.Errorf("%s mounts %s, which does not exist", where, src)
				}
			}
			deps := list(svc["depends_on"])
			for _, k := range sortedKeys(m(svc["depends_on"])) {
				deps = append(deps, k)
			}
			for _, dep := range deps {
				if _, ok := services[str(dep)]; !ok {
					t.Errorf("%s depends on %s, which is no service", where, dep)
				}
			}
		})
	}
}

// k8sObject is one document of deploy/k8s.
type k8sObject struct {
	file, kind, name string
	labels           map[string]any
	doc              map[string]any
}

func (o k8sObject) String() string { return o.file + " " + o.kind + "/" + o.name }

// podTemplate is the pod spec of a workload, or nil.
func (o k8sObject) podTemplate() map[string]any {
	switch o.kind {
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
		return m(dig(o.doc, "spec", "template"))
	case "CronJob":
		return m(dig(o.doc, "spec", "jobTemplate", "spec", "template"))
	}
	return nil
}

func (r *repo) k8sObjects(t *testing.T) []k8sObject {
	t.Helper()
	var out []k8sObject
	for _, f := range r.filesUnder(k8sDir, ".yaml", ".yml") {
		if path.Base(f) == "kustomization.yaml" {
			continue
		}
		for _, doc := range r.docs[f] {
			d := m(doc)
			kind, name := str(d["kind"]), str(dig(d, "metadata", "name"))
			if str(d["apiVersion"]) == "" || kind == "" || name == "" {
				t.Errorf("%s: a document without apiVersion, kind and metadata.name", f)
				continue
			}
			out = append(out, k8sObject{file: f, kind: kind, name: name, labels: m(dig(d, "metadata", "labels")), doc: d})
		}
	}
	if len(out) == 0 {
		t.Fatalf("no Kubernetes objects in %s", k8sDir)
	}
	return out
}

// subset reports whether every label of sel is in labels.
func subset(sel, labels map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if str(labels[k]) != str(v) {
			return false
		}
	}
	return true
}

func TestKubernetes(t *testing.T) {
	r := load(t)
	objs := r.k8sObjects(t)
	kust := m(firstDoc(r.docs[k8sDir+"/kustomization.yaml"]))
	if kust == nil {
		t.Fatalf("%s/kustomization.yaml is missing or empty", k8sDir)
	}
	manual, _ := r.read(k8sManualObjects)

	// Secrets and ConfigMaps: defined here (keys known) or by a generator.
	defined := map[string]map[string]bool{} // "Secret/name" -> keys
	for _, o := range objs {
		if o.kind == "Secret" || o.kind == "ConfigMap" {
			keys := map[string]bool{}
			for _, field := range []string{"data", "stringData", "binaryData"} {
				for k := range m(o.doc[field]) {
					keys[k] = true
				}
			}
			defined[o.kind+"/"+o.name] = keys
		}
	}
	for gen, kind := range map[string]string{"configMapGenerator": "ConfigMap", "secretGenerator": "Secret"} {
		for _, g := range list(kust[gen]) {
			keys := map[string]bool{}
			for _, f := range list(dig(g, "files")) {
				key, file, ok := strings.Cut(str(f), "=")
				if !ok {
					key, file = path.Base(str(f)), str(f)
				}
				keys[key] = true
				if !r.exists(path.Join(k8sDir, file)) {
					t.Errorf("%s/kustomization.yaml: %s %s: file %s does not exist", k8sDir, gen, str(dig(g, "name")), file)
				}
			}
			for _, l := range list(dig(g, "literals")) {
				k, _, _ := strings.Cut(str(l), "=")
				keys[k] = true
			}
			defined[kind+"/"+str(dig(g, "name"))] = keys
		}
	}
	ref := func(t *testing.T, where, kind, name, key string) {
		t.Helper()
		keys, ok := defined[kind+"/"+name]
		switch {
		case !ok && !strings.Contains(manual, name):
			t.Errorf("%s uses %s %s, which %s does not define and %s does not explain", where, kind, name, k8sDir, k8sManualObjects)
		case ok && key != "" && !keys[key]:
			t.Errorf("%s uses key %s of %s %s, which has keys %v", where, key, kind, name, sortedKeys(keys))
		}
	}

	var workloads []k8sObject
	for _, o := range objs {
		tpl := o.podTemplate()
		if tpl == nil {
			continue
		}
		workloads = append(workloads, o)
		t.Run(o.kind+"/"+o.name, func(t *testing.T) {
			spec := m(tpl["spec"])
			for _, v := range list(spec["volumes"]) {
				if n := str(dig(v, "configMap", "name")); n != "" {
					ref(t, o.String(), "ConfigMap", n, "")
				}
				if n := str(dig(v, "secret", "secretName")); n != "" {
					ref(t, o.String(), "Secret", n, "")
				}
			}
			for _, kind := range []string{"containers", "initContainers"} {
				for _, ci := range list(spec[kind]) {
					cm := m(ci)
					where := fmt.Sprintf("%s container %s", o, str(cm["name"]))
					c := container{where: where, image: str(cm["image"]), env: map[string]string{}, portNames: map[string]int{}}
					for _, e := range list(cm["env"]) {
						c.env[str(dig(e, "name"))] = str(dig(e, "value"))
						if n := str(dig(e, "valueFrom", "secretKeyRef", "name")); n != "" {
							ref(t, where, "Secret", n, str(dig(e, "valueFrom", "secretKeyRef", "key")))
						}
						if n := str(dig(e, "valueFrom", "configMapKeyRef", "name")); n != "" {
							ref(t, where, "ConfigMap", n, str(dig(e, "valueFrom", "configMapKeyRef", "key")))
						}
					}
					for _, ef := range list(cm["envFrom"]) {
						for kind, field := range map[string]string{"ConfigMap": "configMapRef", "Secret": "secretRef"} {
							n := str(dig(ef, field, "name"))
							if n == "" {
								continue
							}
							keys, ok := defined[kind+"/"+n]
							if !ok {
								t.Errorf("%s: envFrom %s %s is not defined here, so the variables it sets cannot be checked", where, kind, n)
							}
							for k := range keys {
								c.env[str(dig(ef, "prefix"))+k] = ""
							}
						}
					}
					for _, p := range list(cm["ports"]) {
						n, err := strconv.Atoi(str(dig(p, "containerPort")))
						if err != nil {
							t.Errorf("%s: containerPort %v: %v", where, dig(p, "containerPort"), err)
						}
						c.ports = append(c.ports, n)
						if name := str(dig(p, "name")); name != "" {
							c.portNames[name] = n
						}
					}
					for _, kind := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
						if hg := m(dig(cm, kind, "httpGet")); hg != nil {
							c.probes = append(c.probes, probe{kind: kind, path: str(hg["path"]), port: str(hg["port"])})
						}
					}
					report(t, r.checkContainer(c))
				}
			}
		})
	}

	services := map[string]k8sObject{}
	for _, o := range objs {
		if o.kind != "Service" {
			continue
		}
		services[o.name] = o
		t.Run("Service/"+o.name, func(t *testing.T) {
			sel := m(dig(o.doc, "spec", "selector"))
			var matched []k8sObject
			for _, w := range workloads {
				if subset(sel, m(dig(w.podTemplate(), "metadata", "labels"))) {
					matched = append(matched, w)
				}
			}
			if len(matched) == 0 {
				t.Fatalf("%s: selector %v matches no pod template", o, sel)
			}
			for _, p := range list(dig(o.doc, "spec", "ports")) {
				target := str(dig(p, "targetPort"))
				if target == "" {
					target = str(dig(p, "port"))
				}
				for _, w := range matched {
					found := false
					for _, ci := range list(dig(w.podTemplate(), "spec", "containers")) {
						for _, cp := range list(dig(ci, "ports")) {
							if str(dig(cp, "name")) == target || str(dig(cp, "containerPort")) == target {
								found = true
							}
						}
					}
					if !found {
						t.Errorf("%s: targetPort %s is no container port of %s", o, target, w)
					}
				}
			}
		})
	}

	for _, o := range objs {
		switch o.kind {
		case "ServiceMonitor":
			t.Run("ServiceMonitor/"+o.name, func(t *testing.T) {
				sel := m(dig(o.doc, "spec", "selector", "matchLabels"))
				var matched []k8sObject
				for _, name := range sortedKeys(services) {
					if subset(sel, services[name].labels) {
						matched = append(matched, services[name])
					}
				}
				if len(matched) == 0 {
					t.Fatalf("%s: matchLabels %v select no Service", o, sel)
				}
				for _, ep := range list(dig(o.doc, "spec", "endpoints")) {
					port := str(dig(ep, "port"))
					for _, s := range matched {
						if !slices.ContainsFunc(list(dig(s.doc, "spec", "ports")), func(p any) bool { return str(dig(p, "name")) == port }) {
							t.Errorf("%s: endpoint port %q is not a port name of %s", o, port, s)
						}
					}
					if p := str(dig(ep, "path")); p != "" && p != "/metrics" {
						t.Errorf("%s: endpoint path %s, the services serve /metrics", o, p)
					}
				}
			})
		case "PrometheusRule":
			t.Run("PrometheusRule/"+o.name, func(t *testing.T) {
				groups := dig(o.doc, "spec", "groups")
				if len(list(groups)) == 0 {
					t.Fatalf("%s has no rule groups", o)
				}
				alerts, ok := r.docs[alertsFile]
				if !ok {
					t.Fatalf("%s is missing or does not parse (%v): the PrometheusRule must carry its groups", alertsFile, r.parseErrs[alertsFile])
				}
				if want := dig(firstDoc(alerts), "groups"); !reflect.DeepEqual(groups, want) {
					t.Errorf("%s: spec.groups differ from the groups of %s; copy them over", o, alertsFile)
				}
			})
		}
	}

	t.Run("kustomization", func(t *testing.T) {
		var listed []string
		for _, res := range list(kust["resources"]) {
			listed = append(listed, path.Join(k8sDir, str(res)))
			if !r.exists(path.Join(k8sDir, str(res))) {
				t.Errorf("%s/kustomization.yaml lists %s, which does not exist", k8sDir, res)
			}
		}
		for _, f := range r.filesUnder(k8sDir, ".yaml", ".yml") {
			if path.Base(f) != "kustomization.yaml" && !slices.Contains(listed, f) {
				t.Errorf("%s is not in %s/kustomization.yaml's resources", f, k8sDir)
			}
		}
		for _, img := range list(kust["images"]) {
			if _, _, err := r.imageTarget(str(dig(img, "name"))); err != nil {
				t.Errorf("%s/kustomization.yaml images: %v", k8sDir, err)
			}
		}
	})
}

func firstDoc(docs []any) any {
	if len(docs) == 0 {
		return nil
	}
	return docs[0]
}

func TestSystemd(t *testing.T) {
	r := load(t)
	units := r.filesUnder(systemdDir, ".service")
	if len(units) == 0 {
		t.Fatalf("no units in %s", systemdDir)
	}
	usedEnvFiles := map[string]bool{}
	for _, f := range units {
		t.Run(path.Base(f), func(t *testing.T) {
			text, err := r.read(f)
			if err != nil {
				t.Fatal(err)
			}
			svc := parseUnit(text)["Service"]
			exec := svc["ExecStart"]
			if len(exec) != 1 {
				t.Fatalf("%s: %d ExecStart lines, want 1", f, len(exec))
			}
			words := shellWords(strings.TrimLeft(exec[0], "-@:+!"))
			if len(words) == 0 {
				t.Fatalf("%s: empty ExecStart", f)
			}
			bin, ok := r.binaries[path.Base(words[0])]
			if !ok {
				t.Fatalf("%s runs %s, which is no services/*/cmd/* binary", f, words[0])
			}
			env := map[string]string{}
			for _, line := range svc["Environment"] {
				for _, w := range shellWords(line) {
					k, v, ok := strings.Cut(w, "=")
					if !ok {
						t.Errorf("%s: Environment=%s: %q is not KEY=value", f, line, w)
					}
					env[k] = v
				}
			}
			for _, ef := range svc["EnvironmentFile"] {
				base := path.Base(strings.TrimPrefix(ef, "-"))
				var example string
				for _, cand := range []string{base, base + ".example"} {
					if r.exists(path.Join(systemdDir, cand)) {
						example = path.Join(systemdDir, cand)
					}
				}
				if example == "" {
					t.Errorf("%s: EnvironmentFile=%s has no %s/%s(.example) to start from", f, ef, systemdDir, base)
					continue
				}
				usedEnvFiles[example] = true
				text, err := r.read(example)
				if err != nil {
					t.Fatal(err)
				}
				vars, errs := envAssignments(text)
				for _, e := range errs {
					t.Errorf("%s: %s", example, e)
				}
				for k := range vars {
					if _, ok := bin.vars[k]; !ok {
						t.Errorf("%s (for %s) sets %s, which %s does not read", example, f, k, bin.dir)
					}
				}
			}
			report(t, r.checkContainer(container{where: f, image: imagePrefix + bin.name, env: env}))
		})
	}
	for _, f := range r.filesUnder(systemdDir) {
		if (strings.HasSuffix(f, ".env") || strings.HasSuffix(f, ".env.example")) && !usedEnvFiles[f] {
			t.Errorf("%s is the EnvironmentFile of no unit in %s, so nothing checks what it sets", f, systemdDir)
		}
	}
}

func TestSeedCatalogsLoad(t *testing.T) {
	r := load(t)
	var n int
	for _, f := range r.files {
		if path.Base(f) != "MODEL_REGISTRY.json" {
			continue
		}
		n++
		t.Run(f, func(t *testing.T) {
			cats := path.Join(path.Dir(f), "task_categories.json")
			if _, err := catalog.Load(r.abs(f), r.abs(cats)); err != nil {
				t.Errorf("%s with %s: %v", f, cats, err)
			}
		})
	}
	if n == 0 {
		t.Errorf("no seed MODEL_REGISTRY.json under deploy/ (the registry's ConfigMap)")
	}
}

// TestCheckers feeds the checks bad input, so that they are known to fail
// where they should.
func TestCheckers(t *testing.T) {
	r := load(t)
	tests := []struct {
		name  string
		c     container
		fails bool
	}{
		{"selector with its own variables", container{image: imagePrefix + "selector:1.0",
			env: map[string]string{"NATS_URL": "x", "SELECTOR_WORKERS": "4"}, ports: []int{9102}}, false},
		{"variable of another service", container{image: imagePrefix + "selector",
			env: map[string]string{"REGISTRY_REPLICAS": "3"}}, true},
		{"misspelt variable", container{image: imagePrefix + "registry", env: map[string]string{"REGISTRY_SEED_REGISTY": "x"}}, true},
		{"port that is not the metrics port", container{image: imagePrefix + "selector", ports: []int{8080}}, true},
		{"port moved with the metrics address", container{image: imagePrefix + "selector",
			env: map[string]string{"SELECTOR_METRICS_ADDR": ":8080"}, ports: []int{8080}}, false},
		{"probe on an unknown path", container{image: imagePrefix + "selector", ports: []int{9102},
			portNames: map[string]int{"metrics": 9102}, probes: []probe{{"livenessProbe", "/health", "metrics"}}}, true},
		{"probe on an undeclared port name", container{image: imagePrefix + "selector", ports: []int{9102},
			portNames: map[string]int{"metrics": 9102}, probes: []probe{{"readinessProbe", "/readyz", "http"}}}, true},
		{"image built nowhere", container{image: imagePrefix + "frontend"}, true},
		{"unknown third-party image", container{image: "redis:7"}, true},
		{"grafana setting", container{image: "grafana/grafana:12.0.0", env: map[string]string{"GF_SECURITY_ADMIN_PASSWORD": "x"}}, false},
		{"NATS image with a variable", container{image: "nats:2.12-alpine", env: map[string]string{"NATS_URL": "x"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.where = tt.name
			problems := r.checkContainer(tt.c)
			if failed := len(problems) > 0; failed != tt.fails {
				t.Errorf("problems %q, want some: %v", problems, tt.fails)
			}
		})
	}

	ignoreTests := []struct {
		patterns []string
		path     string
		want     bool
	}{
		{[]string{"deploy"}, "deploy/k8s/a.yaml", true},
		{[]string{"**/*.test"}, "services/x/x.test", true},
		{[]string{"deploy", "!deploy/k8s"}, "deploy/k8s/a.yaml", false},
		{[]string{"docs"}, "services/docs.go", false},
	}
	for _, tt := range ignoreTests {
		if got := ignored(tt.patterns, tt.path); got != tt.want {
			t.Errorf("ignored(%v, %s) = %v, want %v", tt.patterns, tt.path, got, tt.want)
		}
	}

	d := parseDockerfile("services/x/Dockerfile", "ARG IMG=golang:1\nFROM ${IMG} AS build\nWORKDIR /src\n"+
		"COPY a/ a/\nRUN CGO_ENABLED=1 go build -o /out/x \\\n  ./services/x/cmd/x\nFROM scratch\nENV A=1 B=\"two words\"\nUSER 1:1\nEXPOSE 9000/tcp\n")
	builds, errs := d.goBuilds()
	if len(errs) > 0 || len(builds) != 1 || builds[0] != (goBuild{pkg: "services/x/cmd/x", cgo: true}) {
		t.Errorf("go builds of the sample Dockerfile: %v %v", builds, errs)
	}
	final := d.stages[len(d.stages)-1]
	if d.stages[0].base != "golang:1" || final.env["B"] != "two words" || final.user != "1:1" || !slices.Equal(final.expose, []int{9000}) {
		t.Errorf("sample Dockerfile parsed as %+v / %+v", d.stages[0], final)
	}
}

// TestKubernetesNATSConfig loads the NATS cluster config of deploy/k8s with
// the server's own parser, as a pod would: HOSTNAME is the pod name and the
// accounts are deploy/nats/accounts.conf, mounted beside it.
func TestKubernetesNATSConfig(t *testing.T) {
	r := load(t)
	var conf string
	for _, o := range r.k8sObjects(t) {
		if o.kind == "ConfigMap" && o.name == "nats-config" {
			conf = str(dig(o.doc, "data", "nats.conf"))
		}
	}
	if conf == "" {
		t.Fatalf("no ConfigMap nats-config with a nats.conf in %s", k8sDir)
	}
	accounts, err := r.read("deploy/nats/accounts.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for p, text := range map[string]string{"config/nats.conf": conf, "accounts/accounts.conf": accounts} {
		if err := os.MkdirAll(filepath.Join(dir, path.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("HOSTNAME", "nats-1")
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "config", "nats.conf"))
	if err != nil {
		t.Fatalf("%s ConfigMap nats-config: %v", k8sDir, err)
	}
	if opts.ServerName != "nats-1" {
		t.Errorf("server_name %q, want the pod name from HOSTNAME", opts.ServerName)
	}
	if !opts.JetStream || len(opts.Routes) != 3 || opts.Cluster.Port != 6222 || opts.Port != 4222 || opts.HTTPPort != 8222 {
		t.Errorf("want JetStream, 3 routes, ports 4222/6222/8222; got jetstream=%v routes=%d ports %d/%d/%d",
			opts.JetStream, len(opts.Routes), opts.Port, opts.Cluster.Port, opts.HTTPPort)
	}
	if len(opts.Accounts) == 0 {
		t.Error("no accounts: the include of accounts.conf found nothing")
	}
}
