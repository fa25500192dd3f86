package deploytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/build/constraint"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kelseyhightower/envconfig"
	"go.yaml.in/yaml/v3"

	"github.com/nlocalmodels/orchestrator/pkg/bus"
	gputelemetry "github.com/nlocalmodels/orchestrator/services/gpu-telemetry"
	metricssink "github.com/nlocalmodels/orchestrator/services/metrics-sink"
	"github.com/nlocalmodels/orchestrator/services/registry"
	"github.com/nlocalmodels/orchestrator/services/selector"
)

const (
	// modulePrefix is the import path of the repository root: every module's
	// path is this plus its directory, which is how imports map to source.
	modulePrefix = "github.com/nlocalmodels/orchestrator/"
	// imagePrefix names the images built from services/<name>/Dockerfile:
	// imagePrefix + <name>, with any tag.
	imagePrefix = "ghcr.io/nlocalmodels/orchestrator/"
	// k8sDir, systemdDir and composeFile are where the deployment files live.
	k8sDir      = "deploy/k8s"
	systemdDir  = "deploy/systemd"
	composeFile = "docker-compose.yml"
	alertsFile  = "deploy/prometheus/alerts.yml"
)

// configTypes are the types the binaries hand to envconfig.Process, by
// "import path.Type". Their variables are found by reflection with
// envconfig's own rules; a Process call on a type missing here fails the
// test, so a new service cannot go unchecked. Unexported types of the
// binaries' own packages (the orchestrator's serveEnv) are rebuilt from
// their source instead.
var configTypes = map[string]reflect.Type{
	modulePrefix + "pkg/bus.ConnConfig":            reflect.TypeFor[bus.ConnConfig](),
	modulePrefix + "services/gpu-telemetry.Config": reflect.TypeFor[gputelemetry.Config](),
	modulePrefix + "services/registry.Config":      reflect.TypeFor[registry.Config](),
	modulePrefix + "services/selector.Config":      reflect.TypeFor[selector.Config](),
	modulePrefix + "services/metrics-sink.Config":  reflect.TypeFor[metricssink.Config](),
}

// thirdPartyImages are the images deployments may use without building them
// here (repository without registry host or tag), with the variables their
// programs read.
var thirdPartyImages = map[string]func(name string) bool{
	// nats-server reads no variables of its own; its configs name everything.
	"nats": func(string) bool { return false },
	// Prometheus is configured by flags and prometheus.yml only.
	"prom/prometheus": func(string) bool { return false },
	// Grafana maps GF_<SECTION>_<KEY> onto grafana.ini.
	"grafana/grafana": func(name string) bool { return strings.HasPrefix(name, "GF_") },
}

// runtimeVars are read by the container runtime rather than the program, in
// any image.
var runtimeVars = map[string]string{
	"NVIDIA_VISIBLE_DEVICES":     "NVIDIA container toolkit: which GPUs to expose",
	"NVIDIA_DRIVER_CAPABILITIES": "NVIDIA container toolkit: which driver libraries to mount",
}

// probePaths are the HTTP paths every service serves on its metrics address (pkg/obs).
var probePaths = []string{"/healthz", "/readyz", "/metrics"}

// k8sManualObjects: the test requires every Secret or ConfigMap that the
// manifests use but do not define to be named in this file, which explains
// how to create it.
const k8sManualObjects = k8sDir + "/README.md"

// The repository: binaries, images and deployment files, loaded once.

type repo struct {
	root      string
	binaries  map[string]*binary     // by name: services/*/cmd/<name>
	images    map[string]*dockerfile // by image name: services/<name>/Dockerfile
	files     []string               // deploy/ and docker-compose.yml, slash paths from root
	docs      map[string][]any       // parsed YAML (every document) and JSON
	parseErrs map[string]error
	ignore    []string // .dockerignore patterns
}

// binary is one main package and the environment it reads.
type binary struct {
	name string
	dir  string // slash path from root
	// vars maps each variable the binary reads to its default ("" if none).
	vars map[string]string
	// metricsKey is its *_METRICS_ADDR variable; "" when it serves no HTTP.
	metricsKey string
	// cgo: its module has files that build only with cgo (NVML).
	cgo bool
}

// metricsPort is the port the binary listens on given the container's env.
func (b *binary) metricsPort(env map[string]string) (int, error) {
	if b.metricsKey == "" {
		return 0, fmt.Errorf("%s serves no metrics address (no *_METRICS_ADDR in what it reads)", b.name)
	}
	addr := b.vars[b.metricsKey]
	if v, ok := env[b.metricsKey]; ok {
		addr = v
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: %w", b.metricsKey, addr, err)
	}
	return strconv.Atoi(port)
}

var (
	loadOnce sync.Once
	loaded   *repo
	loadErr  error
)

func load(t *testing.T) *repo {
	t.Helper()
	loadOnce.Do(func() { loaded, loadErr = loadRepo() })
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return loaded
}

func loadRepo() (*repo, error) {
	root, err := findRoot()
	if err != nil {
		return nil, err
	}
	r := &repo{root: root, binaries: map[string]*binary{}, images: map[string]*dockerfile{},
		docs: map[string][]any{}, parseErrs: map[string]error{}}
	cmds, err := filepath.Glob(filepath.Join(root, "services", "*", "cmd", "*"))
	if err != nil {
		return nil, err
	}
	for _, dir := range cmds {
		rel := r.rel(dir)
		b, err := r.loadBinary(rel)
		if err != nil {
			return nil, err
		}
		r.binaries[b.name] = b
	}
	dfs, err := filepath.Glob(filepath.Join(root, "services", "*", "Dockerfile"))
	if err != nil {
		return nil, err
	}
	for _, p := range dfs {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		d := parseDockerfile(r.rel(p), string(data))
		r.images[d.name] = d
	}
	if data, err := os.ReadFile(filepath.Join(root, ".dockerignore")); err == nil {
		r.ignore = parseDockerignore(string(data))
	}
	if err := r.loadFiles(); err != nil {
		return nil, err
	}
	return r, nil
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the test's directory")
		}
		dir = parent
	}
}

func (r *repo) rel(p string) string {
	rel, err := filepath.Rel(r.root, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(rel)
}

func (r *repo) abs(rel string) string { return filepath.Join(r.root, filepath.FromSlash(rel)) }

func (r *repo) exists(rel string) bool {
	_, err := os.Stat(r.abs(rel))
	return err == nil
}

func (r *repo) read(rel string) (string, error) {
	data, err := os.ReadFile(r.abs(rel))
	return string(data), err
}

// loadFiles lists deploy/ and docker-compose.yml and parses every YAML and JSON file.
func (r *repo) loadFiles() error {
	if r.exists(composeFile) {
		r.files = append(r.files, composeFile)
	}
	err := filepath.WalkDir(r.abs("deploy"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			r.files = append(r.files, r.rel(p))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, f := range r.files {
		var docs []any
		var perr error
		switch path.Ext(f) {
		case ".yml", ".yaml":
			docs, perr = r.parseYAML(f)
		case ".json":
			docs, perr = r.parseJSON(f)
		default:
			continue
		}
		if perr != nil {
			r.parseErrs[f] = perr
			continue
		}
		r.docs[f] = docs
	}
	return nil
}

func (r *repo) parseYAML(f string) ([]any, error) {
	data, err := os.ReadFile(r.abs(f))
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []any
	for {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

func (r *repo) parseJSON(f string) ([]any, error) {
	data, err := os.ReadFile(r.abs(f))
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the JSON document")
	}
	return []any{doc}, nil
}

// filesUnder lists the deployment files in dir (not below) with one of exts.
func (r *repo) filesUnder(dir string, exts ...string) []string {
	var out []string
	for _, f := range r.files {
		if path.Dir(f) == dir && (len(exts) == 0 || slices.Contains(exts, path.Ext(f))) {
			out = append(out, f)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// What a binary reads: its imports inside the repository, their
// envconfig.Process and os.Getenv calls.

func (r *repo) loadBinary(dir string) (*binary, error) {
	b := &binary{name: path.Base(dir), dir: dir, vars: map[string]string{}}
	seen := map[string]bool{}
	queue := []string{dir}
	for len(queue) > 0 {
		pkg := queue[0]
		queue = queue[1:]
		if seen[pkg] {
			continue
		}
		seen[pkg] = true
		files, err := r.parsePackage(pkg)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			for _, imp := range f.ast.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if rel, ok := strings.CutPrefix(p, modulePrefix); ok {
					queue = append(queue, rel)
				}
			}
			if err := r.collectReads(b, f, files); err != nil {
				return nil, err
			}
		}
	}
	var metrics []string
	for k := range b.vars {
		if strings.HasSuffix(k, "_METRICS_ADDR") {
			metrics = append(metrics, k)
		}
	}
	switch len(metrics) {
	case 0:
	case 1:
		b.metricsKey = metrics[0]
	default:
		sort.Strings(metrics)
		return nil, fmt.Errorf("binary %s reads several metrics addresses %v: the test cannot tell which one it serves", dir, metrics)
	}
	moduleDir := strings.Join(strings.SplitN(dir, "/", 3)[:2], "/") // services/<module>
	cgo, err := r.needsCgo(moduleDir)
	if err != nil {
		return nil, err
	}
	b.cgo = cgo
	return b, nil
}

type goFile struct {
	ast  *ast.File
	fset *token.FileSet
}

// parsePackage parses the non-test Go files of one package directory.
func (r *repo) parsePackage(dir string) ([]goFile, error) {
	entries, err := os.ReadDir(r.abs(dir))
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", dir, err)
	}
	var out []goFile
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, r.abs(dir+"/"+n), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		out = append(out, goFile{ast: f, fset: fset})
	}
	return out, nil
}

// collectReads adds to b the variables read in f: envconfig.Process calls
// (through their Config type) and os.Getenv / os.LookupEnv of constants, in
// functions and in package-level initialisers alike.
func (r *repo) collectReads(b *binary, f goFile, pkg []goFile) error {
	imports := importNames(f.ast)
	var err error
	for _, decl := range f.ast.Decls {
		var body *ast.BlockStmt // where Process's variable is declared
		if fn, ok := decl.(*ast.FuncDecl); ok {
			body = fn.Body
		}
		ast.Inspect(decl, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || err != nil {
				return err == nil
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			x, ok := sel.X.(*ast.Ident)
			if !ok {
				return true
			}
			where := f.fset.Position(call.Pos()).String()
			switch {
			case imports[x.Name] == "os" && (sel.Sel.Name == "Getenv" || sel.Sel.Name == "LookupEnv"):
				if name, ok := stringLit(call.Args[0]); ok {
					if _, dup := b.vars[name]; !dup {
						b.vars[name] = ""
					}
				}
			case imports[x.Name] == "github.com/kelseyhightower/envconfig" && sel.Sel.Name == "Process":
				if body == nil {
					err = fmt.Errorf("%s: envconfig.Process outside a function", where)
					return false
				}
				err = r.addProcess(b, call, body, pkg, imports, where)
			}
			return true
		})
	}
	return err
}

func importNames(f *ast.File) map[string]string {
	out := map[string]string{}
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		// Packages whose name differs from their directory (gputelemetry)
		// are imported with an explicit name in this repository.
		name := path.Base(p)
		if imp.Name != nil {
			name = imp.Name.Name
		}
		out[name] = p
	}
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// addProcess resolves envconfig.Process(prefix, &v): v's declared type, then
// the variables envconfig reads for it.
func (r *repo) addProcess(b *binary, call *ast.CallExpr, body *ast.BlockStmt, pkg []goFile, imports map[string]string, where string) error {
	prefix, ok := stringLit(call.Args[0])
	if !ok {
		return fmt.Errorf("%s: envconfig.Process with a prefix that is not a constant string", where)
	}
	u, ok := call.Args[1].(*ast.UnaryExpr)
	if !ok || u.Op != token.AND {
		return fmt.Errorf("%s: envconfig.Process(_, x): x is not &variable", where)
	}
	id, ok := u.X.(*ast.Ident)
	if !ok {
		return fmt.Errorf("%s: envconfig.Process(_, &x): x is not a variable", where)
	}
	typ := varType(body, id.Name)
	if typ == nil {
		return fmt.Errorf("%s: cannot find the declared type of %s", where, id.Name)
	}
	rt, err := resolveType(typ, pkg, imports)
	if err != nil {
		return fmt.Errorf("%s: envconfig.Process: %w", where, err)
	}
	vars, err := envconfigVars(prefix, rt)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	for k, def := range vars {
		b.vars[k] = def
	}
	return nil
}

// varType finds `var name T` or `name := T{...}` in body.
func varType(body *ast.BlockStmt, name string) ast.Expr {
	var out ast.Expr
	ast.Inspect(body, func(n ast.Node) bool {
		switch s := n.(type) {
		case *ast.ValueSpec:
			for _, id := range s.Names {
				if id.Name == name && s.Type != nil {
					out = s.Type
				}
			}
		case *ast.AssignStmt:
			for i, lhs := range s.Lhs {
				if id, ok := lhs.(*ast.Ident); ok && id.Name == name && i < len(s.Rhs) {
					if lit, ok := s.Rhs[i].(*ast.CompositeLit); ok {
						out = lit.Type
					}
				}
			}
		}
		return out == nil
	})
	return out
}

// resolveType turns a type expression into a reflect.Type: a known Config
// type, or a struct of this package rebuilt from its source (field names and
// tags are all envconfig looks at; other field types become string).
func resolveType(e ast.Expr, pkg []goFile, imports map[string]string) (reflect.Type, error) {
	switch t := e.(type) {
	case *ast.SelectorExpr:
		x, ok := t.X.(*ast.Ident)
		if !ok {
			break
		}
		key := imports[x.Name] + "." + t.Sel.Name
		if rt, ok := configTypes[key]; ok {
			return rt, nil
		}
		return nil, fmt.Errorf("type %s is not in configTypes", key)
	case *ast.Ident:
		for _, f := range pkg {
			for _, decl := range f.ast.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok {
					continue
				}
				for _, spec := range gd.Specs {
					ts, ok := spec.(*ast.TypeSpec)
					if !ok || ts.Name.Name != t.Name {
						continue
					}
					st, ok := ts.Type.(*ast.StructType)
					if !ok {
						return nil, fmt.Errorf("type %s is not a struct", t.Name)
					}
					return structFromSource(st, pkg, importNames(f.ast))
				}
			}
		}
		return nil, fmt.Errorf("type %s is not declared in the package", t.Name)
	}
	return nil, fmt.Errorf("a type the test cannot resolve (%T)", e)
}

func structFromSource(st *ast.StructType, pkg []goFile, imports map[string]string) (reflect.Type, error) {
	var fields []reflect.StructField
	for _, fl := range st.Fields.List {
		var tag reflect.StructTag
		if fl.Tag != nil {
			s, _ := strconv.Unquote(fl.Tag.Value)
			tag = reflect.StructTag(s)
		}
		// Struct fields make envconfig descend (prefix + field name), so
		// they keep their type; any other type reads one variable.
		ft := reflect.TypeFor[string]()
		if rt, err := resolveType(fl.Type, pkg, imports); err == nil {
			ft = rt
		} else if len(fl.Names) == 0 {
			return nil, err // an embedded struct the test cannot see into
		}
		if len(fl.Names) == 0 {
			name := ""
			switch e := fl.Type.(type) {
			case *ast.Ident:
				name = e.Name
			case *ast.SelectorExpr:
				name = e.Sel.Name
			}
			fields = append(fields, reflect.StructField{Name: name, Type: ft, Tag: tag, Anonymous: true})
			continue
		}
		for _, n := range fl.Names {
			if !n.IsExported() {
				continue // envconfig cannot set it
			}
			fields = append(fields, reflect.StructField{Name: n.Name, Type: ft, Tag: tag})
		}
	}
	return structOf(fields)
}

// structOf is reflect.StructOf, with its panics (an embedded type with
// methods, say) turned into an error.
func structOf(fields []reflect.StructField) (t reflect.Type, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("cannot rebuild the struct for envconfig: %v", p)
		}
	}()
	return reflect.StructOf(fields), nil
}

// usageTemplate prints what envconfig reads for each field: the key, the
// unprefixed alternative it falls back to, and the default.
const usageTemplate = "{{range .}}{{usage_key .}}\t{{.Alt}}\t{{usage_default .}}\n{{end}}"

// envconfigVars are the variables envconfig.Process(prefix, *T) reads, with
// their defaults. envconfig also falls back to the unprefixed name of every
// field with an envconfig tag; of those, only the shared NATS settings
// (bus.ConnConfig) are a documented contract (DESIGN.md), so deployments may
// use NATS_URL but not, say, METRICS_ADDR for SELECTOR_METRICS_ADDR.
func envconfigVars(prefix string, t reflect.Type) (map[string]string, error) {
	rows, err := usage(prefix, t)
	if err != nil {
		return nil, err
	}
	shared, err := usage("", reflect.TypeFor[bus.ConnConfig]())
	if err != nil {
		return nil, err
	}
	sharedNames := map[string]bool{}
	for _, s := range shared {
		sharedNames[s[0]] = true
	}
	out := map[string]string{}
	for _, row := range rows {
		out[row[0]] = row[2]
		if sharedNames[row[1]] {
			out[row[1]] = row[2]
		}
	}
	return out, nil
}

func usage(prefix string, t reflect.Type) ([][3]string, error) {
	var buf bytes.Buffer
	if err := envconfig.Usagef(prefix, reflect.New(t).Interface(), &buf, usageTemplate); err != nil {
		return nil, fmt.Errorf("envconfig on %s: %w", t, err)
	}
	var out [][3]string
	for line := range strings.Lines(buf.String()) {
		parts := strings.SplitN(strings.TrimSuffix(line, "\n"), "\t", 3)
		if len(parts) == 3 {
			out = append(out, [3]string{parts[0], parts[1], parts[2]})
		}
	}
	return out, nil
}

// needsCgo reports whether a module has non-test Go files that build only
// with cgo on linux/amd64 (go-nvml's NVML bindings).
func (r *repo) needsCgo(moduleDir string) (bool, error) {
	found := false
	err := filepath.WalkDir(r.abs(moduleDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || found || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for line := range strings.Lines(string(data)) {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "package ") {
				break
			}
			if !constraint.IsGoBuild(line) {
				continue
			}
			expr, err := constraint.Parse(line)
			if err != nil {
				return fmt.Errorf("%s: %w", r.rel(p), err)
			}
			platform := func(cgo bool) func(string) bool {
				return func(tag string) bool {
					switch tag {
					case "cgo":
						return cgo
					case "linux", "amd64", "unix", "gc":
						return true
					}
					return strings.HasPrefix(tag, "go1.")
				}
			}
			if expr.Eval(platform(true)) && !expr.Eval(platform(false)) {
				found = true
			}
		}
		return nil
	})
	return found, err
}

// ---------------------------------------------------------------------------
// Containers: what a Dockerfile, a compose service or a pod's container runs.

type container struct {
	where string // file and object, for messages
	image string
	// env holds the variables set, with their values.
	env map[string]string
	// ports are the declared container ports (EXPOSE, expose:, ports:, containerPort).
	ports []int
	// portNames maps k8s port names to numbers.
	portNames map[string]int
	probes    []probe
}

type probe struct {
	kind, path, port string
}

// imageTarget resolves an image reference: one built here (its binary) or
// an allowed third-party one (what its program reads).
func (r *repo) imageTarget(image string) (*binary, func(string) bool, error) {
	repoName := image
	if i := strings.Index(repoName, "@"); i >= 0 {
		repoName = repoName[:i]
	}
	if i := strings.LastIndex(repoName, ":"); i > strings.LastIndex(repoName, "/") {
		repoName = repoName[:i]
	}
	if name, ok := strings.CutPrefix(repoName, imagePrefix); ok {
		d, ok := r.images[name]
		if !ok {
			return nil, nil, fmt.Errorf("image %s: no services/%s/Dockerfile builds it", image, name)
		}
		b, err := r.dockerfileBinary(d)
		if err != nil {
			return nil, nil, err
		}
		return b, nil, nil
	}
	if allowed, ok := thirdPartyImages[repoName]; ok {
		return nil, allowed, nil
	}
	return nil, nil, fmt.Errorf("image %s is neither %s<name> built by services/<name>/Dockerfile nor an allowed third-party image %v",
		image, imagePrefix, sortedKeys(thirdPartyImages))
}

// checkContainer returns what is wrong with c: variables its program does
// not read, ports and probes beside its metrics address, an unknown image.
func (r *repo) checkContainer(c container) []string {
	bin, allowed, err := r.imageTarget(c.image)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", c.where, err)}
	}
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for _, name := range sortedKeys(c.env) {
		switch {
		case runtimeVars[name] != "":
		case bin != nil:
			if _, ok := bin.vars[name]; !ok {
				bad("%s sets %s, which %s does not read", c.where, name, bin.dir)
			}
		case !allowed(name):
			bad("%s sets %s, which image %s does not read", c.where, name, c.image)
		}
	}
	if bin == nil || (len(c.ports) == 0 && len(c.probes) == 0) {
		return out // third-party ports are theirs
	}
	port, err := bin.metricsPort(c.env)
	if err != nil {
		bad("%s declares ports %v or probes, but %v", c.where, c.ports, err)
		return out
	}
	for _, p := range c.ports {
		if p != port {
			bad("%s declares port %d, but %s listens only on %d (%s)", c.where, p, bin.name, port, bin.metricsKey)
		}
	}
	if len(c.ports) == 0 {
		bad("%s has probes but declares no port; %s listens on %d", c.where, bin.name, port)
	}
	for _, pr := range c.probes {
		got, err := strconv.Atoi(pr.port)
		if err != nil {
			named, ok := c.portNames[pr.port]
			if !ok {
				bad("%s: %s port %q is not a declared port name", c.where, pr.kind, pr.port)
				continue
			}
			got = named
		}
		if got != port {
			bad("%s: %s on port %d, but %s listens on %d", c.where, pr.kind, got, bin.name, port)
		}
		if p, _, _ := strings.Cut(pr.path, "?"); !slices.Contains(probePaths, p) {
			bad("%s: %s path %q is not one of %v", c.where, pr.kind, pr.path, probePaths)
		}
	}
	return out
}

// report fails t with each problem.
func report(t *testing.T, problems []string) {
	t.Helper()
	for _, p := range problems {
		t.Error(p)
	}
}
