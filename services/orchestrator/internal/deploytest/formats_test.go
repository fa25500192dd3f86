package deploytest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The deployment formats read by hand (no library parses them the way their
// tools do): Dockerfiles, .dockerignore, shell words, env files and systemd
// units, plus helpers on decoded YAML.

type dockerfile struct {
	path   string // services/<name>/Dockerfile
	name   string
	stages []*stage
}

type stage struct {
	base    string
	workdir string
	env     map[string]string
	copies  []copyInstr
	runs    []string
	user    string
	expose  []int
	health  bool
	errs    []string
}

type copyInstr struct {
	from    string
	sources []string
}

// dockerInstr is one instruction with its continuation lines joined.
type dockerInstr struct {
	cmd, args string
}

func dockerInstructions(text string) []dockerInstr {
	var out []dockerInstr
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		full := strings.TrimSpace(cur.String())
		cur.Reset()
		if full == "" {
			continue
		}
		cmd, args, _ := strings.Cut(full, " ")
		out = append(out, dockerInstr{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
	}
	return out
}

func parseDockerfile(rel, text string) *dockerfile {
	d := &dockerfile{path: rel, name: path.Base(path.Dir(rel))}
	globalArgs := map[string]string{}
	var cur *stage
	for _, in := range dockerInstructions(text) {
		if cur == nil && in.cmd != "FROM" {
			if in.cmd == "ARG" {
				k, v, _ := strings.Cut(in.args, "=")
				globalArgs[k] = v
			}
			continue
		}
		switch in.cmd {
		case "FROM":
			fields := strings.Fields(in.args)
			base := os.Expand(fields[len(fields)-1], func(k string) string { return globalArgs[k] })
			if len(fields) >= 3 && strings.EqualFold(fields[len(fields)-2], "AS") {
				base = os.Expand(fields[len(fields)-3], func(k string) string { return globalArgs[k] })
			}
			cur = &stage{base: base, workdir: "/", env: map[string]string{}}
			d.stages = append(d.stages, cur)
		case "WORKDIR":
			cur.workdir = path.Join(cur.workdir, in.args)
		case "ENV":
			words := shellWords(in.args)
			if len(words) == 2 && !strings.Contains(words[0], "=") {
				cur.env[words[0]] = words[1] // legacy ENV KEY value
				continue
			}
			for _, w := range words {
				k, v, ok := strings.Cut(w, "=")
				if !ok {
					cur.errs = append(cur.errs, fmt.Sprintf("ENV %q is not KEY=value", w))
				}
				cur.env[k] = v
			}
		case "COPY", "ADD":
			var c copyInstr
			var words []string
			if strings.HasPrefix(in.args, "[") {
				if err := json.Unmarshal([]byte(in.args), &words); err != nil {
					cur.errs = append(cur.errs, fmt.Sprintf("%s %s: %v", in.cmd, in.args, err))
				}
			} else {
				words = strings.Fields(in.args)
			}
			for len(words) > 0 && strings.HasPrefix(words[0], "--") {
				if v, ok := strings.CutPrefix(words[0], "--from="); ok {
					c.from = v
				}
				words = words[1:]
			}
			if len(words) < 2 {
				cur.errs = append(cur.errs, fmt.Sprintf("%s %s: no source and destination", in.cmd, in.args))
				continue
			}
			c.sources = words[:len(words)-1]
			cur.copies = append(cur.copies, c)
		case "RUN":
			cur.runs = append(cur.runs, in.args)
		case "USER":
			cur.user = in.args
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				n, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				if err != nil {
					cur.errs = append(cur.errs, fmt.Sprintf("EXPOSE %s: %v", p, err))
				}
				cur.expose = append(cur.expose, n)
			}
		case "HEALTHCHECK":
			cur.health = !strings.EqualFold(strings.TrimSpace(in.args), "NONE")
		}
	}
	return d
}

// goBuild is the `go build` of a Dockerfile: the package built, from the
// repository root, and whether cgo is on.
type goBuild struct {
	pkg string
	cgo bool
}

func (d *dockerfile) goBuilds() ([]goBuild, []string) {
	var out []goBuild
	var errs []string
	for _, s := range d.stages {
		for _, run := range s.runs {
			words := shellWords(run)
			i := slices.Index(words, "build")
			if i < 1 || words[i-1] != "go" {
				continue
			}
			cgo := s.env["CGO_ENABLED"] == "1" || slices.Contains(words[:i], "CGO_ENABLED=1")
			var pkgs []string
			for j := i + 1; j < len(words); j++ {
				w := words[j]
				if w == "-o" || w == "-ldflags" || w == "-tags" || w == "-gcflags" {
					j++ // the flag's value
					continue
				}
				if strings.HasPrefix(w, "./") {
					pkgs = append(pkgs, w)
				}
			}
			if len(pkgs) != 1 {
				errs = append(errs, fmt.Sprintf("go build of %d packages %v: want one ./path", len(pkgs), pkgs))
				continue
			}
			// The build stage's WORKDIR /src is the context's root.
			rel, ok := strings.CutPrefix(path.Join(s.workdir, pkgs[0]), "/src/")
			if !ok {
				errs = append(errs, fmt.Sprintf("go build %s in WORKDIR %s: the context is expected at /src", pkgs[0], s.workdir))
				continue
			}
			out = append(out, goBuild{pkg: rel, cgo: cgo})
		}
	}
	return out, errs
}

// dockerfileBinary is the binary the Dockerfile builds.
func (r *repo) dockerfileBinary(d *dockerfile) (*binary, error) {
	builds, errs := d.goBuilds()
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %s", d.path, strings.Join(errs, "; "))
	}
	if len(builds) != 1 {
		return nil, fmt.Errorf("%s: %d go builds, want one", d.path, len(builds))
	}
	b, ok := r.binaries[path.Base(builds[0].pkg)]
	if !ok || b.dir != builds[0].pkg {
		return nil, fmt.Errorf("%s builds %s, which is not a services/*/cmd/* binary", d.path, builds[0].pkg)
	}
	return b, nil
}

// shellWords splits like a POSIX shell does for quoting (no expansion).
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else {
				cur.WriteRune(c)
			}
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

func parseDockerignore(text string) []string {
	var out []string
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, strings.TrimPrefix(path.Clean("/"+line), "/"))
		}
	}
	return out
}

// ignored reports whether .dockerignore keeps p (or a directory above it)
// out of the build context; the last matching pattern wins, as in Docker.
func ignored(patterns []string, p string) bool {
	out := false
	for _, pat := range patterns {
		neg := strings.HasPrefix(pat, "!")
		pat = strings.TrimPrefix(pat, "!")
		for q := p; q != "." && q != "/" && q != ""; q = path.Dir(q) {
			if matchIgnore(pat, q) {
				out = !neg
				break
			}
		}
	}
	return out
}

func matchIgnore(pat, p string) bool {
	if rest, ok := strings.CutPrefix(pat, "**/"); ok {
		parts := strings.Split(p, "/")
		for i := range parts {
			if ok, _ := path.Match(rest, strings.Join(parts[i:], "/")); ok {
				return true
			}
		}
		return false
	}
	ok, _ := path.Match(pat, p)
	return ok
}

// staticBases are runtime images without glibc, where a cgo binary cannot run.
func isStaticBase(base string) bool {
	return base == "scratch" || strings.Contains(base, "distroless/static") || strings.Contains(base, "alpine")
}

func (r *repo) goWorkUses() ([]string, error) {
	text, err := r.read("go.work")
	if err != nil {
		return nil, err
	}
	var uses []string
	inUse := false
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "use ("):
			inUse = true
		case inUse && line == ")":
			inUse = false
		case inUse && line != "":
			uses = append(uses, path.Clean(line))
		case strings.HasPrefix(line, "use "):
			uses = append(uses, path.Clean(strings.TrimSpace(strings.TrimPrefix(line, "use "))))
		}
	}
	return uses, nil
}

// ---------------------------------------------------------------------------
// YAML helpers on decoded documents.

func m(v any) map[string]any {
	out, _ := v.(map[string]any)
	return out
}

func list(v any) []any {
	out, _ := v.([]any)
	return out
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		v = m(v)[k]
	}
	return v
}

func sortedKeys[V any](mp map[string]V) []string {
	out := make([]string, 0, len(mp))
	for k := range mp {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// portOf reads "9090", 9090, "127.0.0.1:9090:9090", "9090/tcp" or {target: 9090}
// as the container-side port.
func portOf(v any) (int, error) {
	if mp := m(v); mp != nil {
		v = mp["target"]
	}
	s := str(v)
	if i := strings.LastIndex(s, ":"); i >= 0 {
		s = s[i+1:]
	}
	s, _, _ = strings.Cut(s, "/")
	return strconv.Atoi(s)
}

// composeVar is a compose interpolation: ${NAME}, ${NAME:-default}, ${NAME-default}...
var composeVar = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*(?:(:?[-?+])([^}]*))?\}`)

// interpolate replaces compose interpolations by their defaults, as compose
// does with none of the variables set.
func interpolate(s string) string {
	return composeVar.ReplaceAllStringFunc(s, func(v string) string {
		sub := composeVar.FindStringSubmatch(v)
		if strings.HasSuffix(sub[1], "-") {
			return sub[2]
		}
		return ""
	})
}

// envAssignments parses KEY=value lines (env files, systemd EnvironmentFile).
func envAssignments(text string) (map[string]string, []string) {
	out := map[string]string{}
	var errs []string
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			errs = append(errs, fmt.Sprintf("%q is not KEY=value", line))
			continue
		}
		out[k] = strings.Trim(v, `"'`)
	}
	return out, errs
}

// unit is a systemd unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(text string) unit {
	u := unit{}
	section := ""
	var cont strings.Builder
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cont.WriteString(s + " ")
			continue
		}
		line = cont.String() + line
		cont.Reset()
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, _ := strings.Cut(line, "=")
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}
