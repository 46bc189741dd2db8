package main

// The node-status estimate (model: main.go's package comment and statusModel).

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	wfapi "github.com/argoproj/argo-workflows/v4/pkg/apis/workflow/v1alpha1"
	"github.com/kubeflow/pipelines/api/v2alpha1/go/pipelinespec"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	k8score "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kfpEnv holds a KFP component's input parameter values as far as they are known before the run: a nil
// value is an input whose value only exists at run time (a task output, say).
type kfpEnv map[string]*structpb.Value

const (
	estExecutionID   = "12345678"                                 // an MLMD execution id
	estHostNodeName  = "gke-autophagy-gpu-pool-1a2b3c4d-5e6f7g8h" // 40 characters
	estPodNameSuffix = "1234567890"
	maxDepth         = 256
)

type estimator struct {
	wf      *wfapi.Workflow
	name    string
	tmpls   map[string]*wfapi.Template
	globals map[string]string
	spec    *pipelinespec.PipelineSpec
	o       *options
	start   time.Time

	nodes      []*wfapi.NodeStatus
	byTmpl     map[string]int
	pods       int
	largest    argument
	loops      []loopReport
	loopCounts map[string]int // KFP loop task name -> iterations (for dsl.Collected consumers)
	depth      int
}

func newEstimator(wf *wfapi.Workflow, spec *pipelinespec.PipelineSpec, o *options) *estimator {
	w := wf.DeepCopy()
	if w.Name == "" {
		// The Kubernetes API server names the object: generateName plus 5 random characters.
		w.Name = w.GenerateName + "x7k2q"
	}
	e := &estimator{
		wf:         w,
		name:       w.Name,
		tmpls:      map[string]*wfapi.Template{},
		globals:    map[string]string{},
		spec:       spec,
		o:          o,
		start:      time.Date(2026, 7, 9, 15, 28, 47, 0, time.UTC),
		byTmpl:     map[string]int{},
		loopCounts: map[string]int{},
	}
	for i := range w.Spec.Templates {
		e.tmpls[w.Spec.Templates[i].Name] = &w.Spec.Templates[i]
	}
	for _, p := range w.Spec.Arguments.Parameters {
		v := ""
		if p.Value != nil {
			v = p.Value.String()
		}
		e.globals["workflow.parameters."+p.Name] = v
	}
	e.globals["workflow.name"] = w.Name
	e.globals["workflow.namespace"] = w.Namespace
	e.globals["workflow.uid"] = o.runID
	e.globals["workflow.serviceAccountName"] = w.Spec.ServiceAccountName
	e.globals["workflow.creationTimestamp"] = e.start.Format(time.RFC3339)
	return e
}

func (e *estimator) run() error {
	if e.wf.Spec.Entrypoint == "" {
		return fmt.Errorf("workflow has no entrypoint")
	}
	_, err := e.exec(e.name, e.name, e.wf.Spec.Entrypoint, map[string]string{}, "", kfpEnv{}, false)
	return err
}

func (e *estimator) fill(rep *report) {
	total, maxBytes := 0, 0
	where := ""
	for _, n := range e.nodes {
		b, _ := json.Marshal(n)
		total += len(b)
		if len(b) > maxBytes {
			maxBytes, where = len(b), n.Name
		}
	}
	rep.Nodes = len(e.nodes)
	rep.PodNodes = e.pods
	rep.StatusBytes = total
	// status.taskResultsCompletionStatus: {"<pod node id>": true} for every Pod node.
	other := 0
	for _, n := range e.nodes {
		if n.Type == wfapi.NodeTypePod {
			other += len(n.ID) + 8
		}
	}
	rep.StatusOtherBytes = other
	if len(e.nodes) > 0 {
		rep.BytesPerNode = perNode{Mean: float64(int(float64(total)/float64(len(e.nodes))*10+0.5)) / 10, Max: maxBytes}
	}
	rep.LargestNode = argument{Bytes: maxBytes, Where: where}
	rep.NodesByTemplate = e.byTmpl
	rep.LargestArgument = e.largest
	rep.Loops = append(rep.Loops, e.loops...)
}

type execResult struct {
	node     *wfapi.NodeStatus
	outbound []string
	pods     int
	outputs  map[string]string
	childEnv kfpEnv // a DAG driver's view of the KFP component it drives
	// Extended resources (GPUs, ...) its pods request: Argo adds each to resourcesDuration, on the Pod
	// node and on every node above it.
	resources map[k8score.ResourceName]bool
}

func addResources(n *wfapi.NodeStatus, into map[k8score.ResourceName]bool, from map[k8score.ResourceName]bool) {
	for r := range from {
		into[r] = true
		n.ResourcesDuration[r] = wfapi.ResourceDuration(12345)
	}
}

func (e *estimator) newNode(name, display string, typ wfapi.NodeType, tmpl, boundaryID string) *wfapi.NodeStatus {
	n := &wfapi.NodeStatus{
		ID:                e.wf.NodeID(name),
		Name:              name,
		DisplayName:       display,
		Type:              typ,
		TemplateName:      tmpl,
		TemplateScope:     "local/" + e.name,
		Phase:             wfapi.NodeSucceeded,
		BoundaryID:        boundaryID,
		StartedAt:         metav1.Time{Time: e.start},
		FinishedAt:        metav1.Time{Time: e.start.Add(1234 * time.Second)},
		EstimatedDuration: 1234,
		ResourcesDuration: wfapi.ResourcesDuration{
			k8score.ResourceCPU:    wfapi.ResourceDuration(12345),
			k8score.ResourceMemory: wfapi.ResourceDuration(123456),
		},
	}
	e.nodes = append(e.nodes, n)
	e.byTmpl[tmpl]++
	return n
}

func progress(pods int) wfapi.Progress {
	if pods < 1 {
		pods = 1
	}
	return wfapi.Progress(fmt.Sprintf("%d/%d", pods, pods))
}

// exec expands one template invocation as the controller's executeTemplate does.
func (e *estimator) exec(nodeName, display, tmplName string, args map[string]string, boundaryID string, env kfpEnv, hooked bool) (execResult, error) {
	e.depth++
	defer func() { e.depth-- }()
	if e.depth > maxDepth {
		return execResult{}, fmt.Errorf("templates nest deeper than %d at %s", maxDepth, nodeName)
	}
	t := e.tmpls[tmplName]
	if t == nil {
		return execResult{}, fmt.Errorf("node %s: template %q not found", nodeName, tmplName)
	}
	inputs := map[string]string{}
	var params []wfapi.Parameter
	for _, p := range t.Inputs.Parameters {
		v, ok := args[p.Name]
		if !ok {
			switch {
			case p.Value != nil:
				v = p.Value.String()
			case p.Default != nil:
				v = p.Default.String()
			}
		}
		inputs[p.Name] = v
		q := wfapi.Parameter{Name: p.Name, Value: wfapi.AnyStringPtr(v), Default: p.Default, Description: p.Description, Enum: p.Enum}
		params = append(params, q)
	}
	var nodeInputs *wfapi.Inputs
	if len(params) > 0 || len(t.Inputs.Artifacts) > 0 {
		nodeInputs = &wfapi.Inputs{Parameters: params, Artifacts: t.Inputs.Artifacts}
	}
	var flag *wfapi.NodeFlag
	if hooked {
		flag = &wfapi.NodeFlag{Hooked: true}
	}
	if t.RetryStrategy != nil {
		retry := e.newNode(nodeName, display, wfapi.NodeTypeRetry, tmplName, boundaryID)
		retry.Inputs = nodeInputs.DeepCopy()
		retry.NodeFlag = flag
		childFlag := &wfapi.NodeFlag{Hooked: hooked, Retried: true}
		child, err := e.execBody(nodeName+"(0)", display+"(0)", t, inputs, nodeInputs.DeepCopy(), boundaryID, env, childFlag)
		if err != nil {
			return execResult{}, err
		}
		retry.Children = []string{child.node.ID}
		retry.Outputs = child.node.Outputs.DeepCopy()
		retry.Progress = progress(child.pods)
		retry.OutboundNodes = child.outbound
		res := map[k8score.ResourceName]bool{}
		addResources(retry, res, child.resources)
		return execResult{node: retry, outbound: child.outbound, pods: child.pods, outputs: child.outputs, childEnv: child.childEnv, resources: res}, nil
	}
	return e.execBody(nodeName, display, t, inputs, nodeInputs, boundaryID, env, flag)
}

func (e *estimator) execBody(nodeName, display string, t *wfapi.Template, inputs map[string]string, nodeInputs *wfapi.Inputs, boundaryID string, env kfpEnv, flag *wfapi.NodeFlag) (execResult, error) {
	if t.DAG != nil {
		n := e.newNode(nodeName, display, wfapi.NodeTypeDAG, t.Name, boundaryID)
		n.Inputs = nodeInputs
		n.NodeFlag = flag
		outbound, pods, resources, err := e.execDAG(n, nodeName, t, inputs, env)
		if err != nil {
			return execResult{}, err
		}
		n.OutboundNodes = outbound
		n.Progress = progress(pods)
		return execResult{node: n, outbound: outbound, pods: pods, outputs: map[string]string{}, resources: resources}, nil
	}
	if t.Steps != nil {
		return execResult{}, fmt.Errorf("template %q: steps templates are not modelled (KFP does not emit them)", t.Name)
	}
	// A leaf: container, script, resource, ... : one Pod node.
	n := e.newNode(nodeName, display, wfapi.NodeTypePod, t.Name, boundaryID)
	e.pods++
	n.Inputs = nodeInputs
	n.NodeFlag = flag
	n.Progress = progress(1)
	n.HostNodeName = estHostNodeName
	synced := true
	n.TaskResultSynced = &synced

	res := execResult{node: n, outbound: []string{n.ID}, pods: 1, outputs: map[string]string{}, resources: map[k8score.ResourceName]bool{}}
	est := map[string]string{}
	switch t.Name {
	case "system-container-driver":
		est["pod-spec-patch"] = e.podSpecPatch(inputs, env)
		est["cached-decision"] = "false"
		est["condition"] = "true"
	case "system-dag-driver":
		out, childEnv := e.dagDriver(nodeName, inputs, env)
		for k, v := range out {
			est[k] = v
		}
		if src, ok := out["__loop_source"]; ok {
			res.outputs["__loop_source"] = src
		}
		res.childEnv = childEnv
	}
	zero := "0"
	outs := &wfapi.Outputs{ExitCode: &zero}
	for _, p := range t.Outputs.Parameters {
		v, ok := est[p.Name]
		if !ok {
			v = strings.Repeat("x", e.o.runtimeParameterBytes)
		}
		res.outputs[p.Name] = v
		q := wfapi.Parameter{Name: p.Name, Value: wfapi.AnyStringPtr(v), Default: p.Default, ValueFrom: p.ValueFrom.DeepCopy()}
		outs.Parameters = append(outs.Parameters, q)
	}
	outs.Artifacts = append(outs.Artifacts, t.Outputs.Artifacts...)
	outs.Artifacts = append(outs.Artifacts, wfapi.Artifact{
		Name: "main-logs",
		ArtifactLocation: wfapi.ArtifactLocation{S3: &wfapi.S3Artifact{
			Key: e.name + "/" + e.podName(nodeName, t.Name) + "/main.log",
		}},
	})
	n.Outputs = outs

	// What reaches the pod's command lines: the template's containers after substitution, and the
	// containers of the pod spec patch (the executor's real command line comes from there).
	sub := func(s string) string { return e.subst(s, inputs, nil, "", t) }
	if t.Container != nil {
		e.considerArgs(nodeName, t.Name, "command", t.Container.Command, sub)
		e.considerArgs(nodeName, t.Name, "args", t.Container.Args, sub)
	}
	if t.Script != nil {
		e.considerArgs(nodeName, t.Name, "command", t.Script.Command, sub)
		e.considerArgs(nodeName, t.Name, "args", t.Script.Args, sub)
	}
	for _, c := range t.InitContainers {
		e.considerArgs(nodeName, t.Name, "init "+c.Name+" command", c.Command, sub)
		e.considerArgs(nodeName, t.Name, "init "+c.Name+" args", c.Args, sub)
	}
	if t.PodSpecPatch != "" {
		patch := sub(t.PodSpecPatch)
		var ps k8score.PodSpec
		if err := json.Unmarshal([]byte(patch), &ps); err == nil {
			for _, c := range ps.Containers {
				extended := map[k8score.ResourceName]bool{}
				for _, list := range []k8score.ResourceList{c.Resources.Limits, c.Resources.Requests} {
					for r := range list {
						if r != k8score.ResourceCPU && r != k8score.ResourceMemory {
							extended[r] = true
						}
					}
				}
				addResources(n, res.resources, extended)
				e.considerArgs(nodeName, t.Name, "podSpecPatch "+c.Name+" command", c.Command, nil)
				e.considerArgs(nodeName, t.Name, "podSpecPatch "+c.Name+" args", c.Args, nil)
			}
		}
	}
	return res, nil
}

func (e *estimator) considerArgs(nodeName, tmpl, what string, list []string, sub func(string) string) {
	for i, a := range list {
		if sub != nil {
			a = sub(a)
		}
		if len(a) > e.largest.Bytes {
			prev := ""
			if i > 0 {
				prev = list[i-1]
			}
			where := fmt.Sprintf("%s (template %s) %s[%d]", nodeName, tmpl, what, i)
			if strings.HasPrefix(prev, "--") {
				where += " " + prev
			}
			e.largest = argument{Bytes: len(a), Where: where}
		}
	}
}

// podName mirrors Argo's v2 pod naming closely enough for sizes: <workflow>-<template>-<hash>.
func (e *estimator) podName(nodeName, tmpl string) string {
	prefix := e.name + "-" + tmpl
	if len(prefix) > 63-len(estPodNameSuffix)-1 {
		prefix = prefix[:63-len(estPodNameSuffix)-1]
	}
	return prefix + "-" + estPodNameSuffix
}

var placeholderRe = regexp.MustCompile(`\{\{\s*([^{}]*?)\s*\}\}`)

// subst substitutes Argo's {{...}} variables the way the controller does before a node runs: workflow
// globals, the template's inputs, sibling task outputs, the loop item, output paths.
func (e *estimator) subst(s string, inputs map[string]string, tasks map[string]map[string]string, item string, t *wfapi.Template) string {
	if !strings.Contains(s, "{{") {
		return s
	}
	return placeholderRe.ReplaceAllStringFunc(s, func(m string) string {
		key := strings.TrimSpace(m[2 : len(m)-2])
		if v, ok := e.globals[key]; ok {
			return v
		}
		switch {
		case strings.HasPrefix(key, "inputs.parameters."):
			if v, ok := inputs[strings.TrimPrefix(key, "inputs.parameters.")]; ok {
				return v
			}
		case strings.HasPrefix(key, "tasks."):
			parts := strings.SplitN(strings.TrimPrefix(key, "tasks."), ".outputs.parameters.", 2)
			if len(parts) == 2 {
				if out, ok := tasks[parts[0]]; ok {
					if v, ok := out[parts[1]]; ok {
						return v
					}
				}
			}
		case key == "item":
			if item != "" {
				return item
			}
		case strings.HasPrefix(key, "outputs.parameters.") && strings.HasSuffix(key, ".path") && t != nil:
			name := strings.TrimSuffix(strings.TrimPrefix(key, "outputs.parameters."), ".path")
			for _, p := range t.Outputs.Parameters {
				if p.Name == name && p.ValueFrom != nil {
					return p.ValueFrom.Path
				}
			}
		case key == "pod.name" && t != nil:
			return e.podName("", t.Name)
		case key == "retries":
			return "0"
		}
		return m
	})
}

var taskRefRe = regexp.MustCompile(`tasks\.([A-Za-z0-9_-]+)\.`)
var dependsNameRe = regexp.MustCompile(`[A-Za-z0-9_-]+(?:\([^)]*\))?`)

// dependencies of a DAG task: its depends expression, its dependencies list, and every task whose outputs
// its arguments or when clause reference.
func taskDeps(t *wfapi.DAGTask, names map[string]bool) []string {
	seen := map[string]bool{}
	var deps []string
	add := func(n string) {
		if names[n] && n != t.Name && !seen[n] {
			seen[n] = true
			deps = append(deps, n)
		}
	}
	for _, d := range t.Dependencies {
		add(d)
	}
	if t.Depends != "" {
		for _, tok := range dependsNameRe.FindAllString(t.Depends, -1) {
			add(tok)
		}
	}
	scan := func(s string) {
		for _, m := range taskRefRe.FindAllStringSubmatch(s, -1) {
			add(m[1])
		}
	}
	for _, p := range t.Arguments.Parameters {
		if p.Value != nil {
			scan(p.Value.String())
		}
	}
	scan(t.When)
	if t.WithSequence != nil && t.WithSequence.Count != nil {
		scan(t.WithSequence.Count.String())
	}
	scan(t.WithParam)
	return deps
}

// execDAG expands a DAG template's tasks in dependency order.
func (e *estimator) execDAG(n *wfapi.NodeStatus, nodeName string, t *wfapi.Template, inputs map[string]string, env kfpEnv) ([]string, int, map[k8score.ResourceName]bool, error) {
	tasks := t.DAG.Tasks
	names := map[string]bool{}
	for _, tk := range tasks {
		names[tk.Name] = true
	}
	deps := map[string][]string{}
	for i := range tasks {
		deps[tasks[i].Name] = taskDeps(&tasks[i], names)
	}
	// Topological order, stable on the template's order.
	order := make([]int, 0, len(tasks))
	done := map[string]bool{}
	for len(order) < len(tasks) {
		progressed := false
		for i := range tasks {
			if done[tasks[i].Name] {
				continue
			}
			ready := true
			for _, d := range deps[tasks[i].Name] {
				if !done[d] {
					ready = false
					break
				}
			}
			if ready {
				done[tasks[i].Name] = true
				order = append(order, i)
				progressed = true
			}
		}
		if !progressed {
			return nil, 0, nil, fmt.Errorf("template %q: the DAG's dependencies form a cycle", t.Name)
		}
	}

	outputs := map[string]map[string]string{}
	driverEnv := map[string]kfpEnv{}
	loopSource := map[string]string{}
	first := map[string][]string{}
	nodeOf := map[string]*wfapi.NodeStatus{}
	outboundOf := map[string][]string{}
	pods := 0
	resources := map[k8score.ResourceName]bool{}
	for _, i := range order {
		dt := &tasks[i]
		taskNodeName := nodeName + "." + dt.Name
		resolveArgs := func(item string) map[string]string {
			args := map[string]string{}
			for _, p := range dt.Arguments.Parameters {
				if p.Value != nil {
					args[p.Name] = e.subst(p.Value.String(), inputs, outputs, item, nil)
				}
			}
			return args
		}
		childEnv := env
		if e.isKFPDag(dt.Template) {
			for _, p := range dt.Arguments.Parameters {
				if p.Name == "parent-dag-id" && p.Value != nil {
					if m := taskRefRe.FindStringSubmatch(p.Value.String()); m != nil {
						if ev, ok := driverEnv[m[1]]; ok {
							childEnv = ev
						}
					}
				}
			}
		}
		var taskNode *wfapi.NodeStatus
		if dt.ShouldExpand() {
			items, source := e.expandItems(dt, inputs, outputs, loopSource)
			group := e.newNode(taskNodeName, dt.Name, wfapi.NodeTypeTaskGroup, dt.Template, n.ID)
			group.Progress = progress(0)
			taskNode = group
			e.loops = append(e.loops, loopReport{Where: taskNodeName, Iterations: len(items), Source: source})
			groupPods := 0
			var groupOut []string
			for idx, it := range items {
				itemName := fmt.Sprintf("%s(%d:%s)", dt.Name, idx, it.desc)
				r, err := e.exec(nodeName+"."+itemName, itemName, dt.Template, resolveArgs(it.value), n.ID, childEnv, false)
				if err != nil {
					return nil, 0, nil, err
				}
				group.Children = append(group.Children, r.node.ID)
				groupOut = append(groupOut, r.outbound...)
				groupPods += r.pods
				addResources(group, resources, r.resources)
			}
			group.OutboundNodes = groupOut
			group.Progress = progress(groupPods)
			first[dt.Name] = []string{group.ID}
			outboundOf[dt.Name] = groupOut
			pods += groupPods
		} else {
			r, err := e.exec(taskNodeName, dt.Name, dt.Template, resolveArgs(""), n.ID, childEnv, false)
			if err != nil {
				return nil, 0, nil, err
			}
			taskNode = r.node
			outputs[dt.Name] = r.outputs
			if r.childEnv != nil {
				driverEnv[dt.Name] = r.childEnv
			}
			if src, ok := r.outputs["__loop_source"]; ok {
				loopSource[dt.Name] = src
				delete(r.outputs, "__loop_source")
			}
			first[dt.Name] = []string{r.node.ID}
			outboundOf[dt.Name] = r.outbound
			pods += r.pods
			addResources(n, resources, r.resources)
		}
		nodeOf[dt.Name] = taskNode
		if hook, ok := dt.Hooks[wfapi.ExitLifecycleEvent]; ok && hook.Template != "" {
			hargs := map[string]string{}
			for _, p := range hook.Arguments.Parameters {
				if p.Value != nil {
					hargs[p.Name] = e.subst(p.Value.String(), inputs, outputs, "", nil)
				}
			}
			hr, err := e.exec(taskNodeName+".onExit", dt.Name+".onExit", hook.Template, hargs, n.ID, env, true)
			if err != nil {
				return nil, 0, nil, err
			}
			taskNode.Children = append(taskNode.Children, hr.node.ID)
			pods += hr.pods
			addResources(n, resources, hr.resources)
		}
	}
	// children: the DAG node points at its tasks without dependencies, each task at its dependents.
	dependents := map[string]bool{}
	for _, i := range order {
		dt := &tasks[i]
		if len(deps[dt.Name]) == 0 {
			n.Children = append(n.Children, first[dt.Name]...)
		}
		for _, d := range deps[dt.Name] {
			dependents[d] = true
			nodeOf[d].Children = append(nodeOf[d].Children, first[dt.Name]...)
		}
	}
	var outbound []string
	for _, i := range order {
		if !dependents[tasks[i].Name] {
			outbound = append(outbound, outboundOf[tasks[i].Name]...)
		}
	}
	addResources(n, resources, resources)
	return outbound, pods, resources, nil
}

func (e *estimator) isKFPDag(tmpl string) bool {
	if tmpl == "root" {
		return true
	}
	if e.spec == nil {
		return false
	}
	c, ok := e.spec.GetComponents()[tmpl]
	return ok && c.GetDag() != nil
}

type loopItem struct {
	value string // what {{item}} becomes
	desc  string // what the node name shows
}

func itemFromAny(v any) loopItem {
	switch x := v.(type) {
	case string:
		return loopItem{value: x, desc: x}
	case map[string]any:
		b, _ := json.Marshal(x)
		var vals []string
		for k, val := range x {
			vals = append(vals, fmt.Sprintf("%s:%v", k, val))
		}
		sort.Strings(vals)
		return loopItem{value: string(b), desc: strings.NewReplacer("(", "", ")", "").Replace(strings.Join(vals, ","))}
	default:
		b, _ := json.Marshal(x)
		return loopItem{value: string(b), desc: strings.NewReplacer("(", "", ")", "").Replace(fmt.Sprint(x))}
	}
}

// expandItems: the iterations of a withItems/withParam/withSequence task and where the count came from.
func (e *estimator) expandItems(dt *wfapi.DAGTask, inputs map[string]string, outputs map[string]map[string]string, loopSource map[string]string) ([]loopItem, string) {
	var items []loopItem
	switch {
	case len(dt.WithItems) > 0:
		for _, it := range dt.WithItems {
			var v any
			_ = json.Unmarshal(it.Value, &v)
			items = append(items, itemFromAny(v))
		}
		return items, "withItems"
	case dt.WithParam != "":
		s := e.subst(dt.WithParam, inputs, outputs, "", nil)
		var list []any
		if err := json.Unmarshal([]byte(s), &list); err == nil {
			for _, v := range list {
				items = append(items, itemFromAny(v))
			}
			return items, "withParam (known list)"
		}
		for i := 0; i < e.o.iterations; i++ {
			items = append(items, loopItem{value: strings.Repeat("x", e.o.runtimeParameterBytes), desc: strconv.Itoa(i)})
		}
		return items, "--iterations (withParam known only at run time)"
	default: // withSequence
		seq := dt.WithSequence
		count, start := -1, 0
		source := "withSequence"
		if seq.Count != nil {
			raw := seq.Count.String()
			s := e.subst(raw, inputs, outputs, "", nil)
			if c, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				count = c
				if m := taskRefRe.FindStringSubmatch(raw); m != nil {
					if src, ok := loopSource[m[1]]; ok {
						source = src
					}
				}
			}
		} else if seq.End != nil {
			endS := e.subst(seq.End.String(), inputs, outputs, "", nil)
			if seq.Start != nil {
				start, _ = strconv.Atoi(e.subst(seq.Start.String(), inputs, outputs, "", nil))
			}
			if end, err := strconv.Atoi(endS); err == nil {
				count = end - start + 1
			}
		}
		if count < 0 {
			count = e.o.iterations
			source = "--iterations (withSequence count known only at run time)"
		}
		for i := 0; i < count; i++ {
			s := strconv.Itoa(start + i)
			items = append(items, loopItem{value: s, desc: s})
		}
		return items, source
	}
}

// dagDriver estimates system-dag-driver's outputs and the inputs of the KFP component it drives.
func (e *estimator) dagDriver(nodeName string, inputs map[string]string, env kfpEnv) (map[string]string, kfpEnv) {
	out := map[string]string{"execution-id": estExecutionID, "iteration-count": "0", "condition": "true"}
	if rc := inputs["runtime-config"]; rc != "" {
		cfg := &pipelinespec.PipelineJob_RuntimeConfig{}
		child := kfpEnv{}
		if err := protojson.Unmarshal([]byte(rc), cfg); err == nil {
			for k, v := range cfg.GetParameterValues() {
				child[k] = v
			}
		}
		return out, child
	}
	ts := inputs["task"]
	if ts == "" {
		return out, nil
	}
	task := &pipelinespec.PipelineTaskSpec{}
	if err := protojson.Unmarshal([]byte(ts), task); err != nil {
		return out, nil
	}
	child := e.resolveTaskInputs(task, env)
	if pi := task.GetParameterIterator(); pi != nil {
		items, source := e.iteratorItems(pi, child)
		count := e.o.iterations
		if items != nil {
			count = len(items)
		}
		idx, err := strconv.Atoi(inputs["iteration-index"])
		if err == nil && idx >= 0 {
			if items != nil && idx < len(items) {
				child[pi.GetItemInput()] = items[idx]
			} else {
				child[pi.GetItemInput()] = nil
			}
		} else {
			out["iteration-count"] = strconv.Itoa(count)
			out["__loop_source"] = source
			name := inputs["task-name"]
			if name == "" {
				name = task.GetTaskInfo().GetName()
			}
			e.loopCounts[name] = count
		}
	}
	return out, child
}

// iteratorItems: a KFP loop's items when known before the run (nil when not) and where they came from.
func (e *estimator) iteratorItems(pi *pipelinespec.ParameterIteratorSpec, resolved kfpEnv) ([]*structpb.Value, string) {
	if raw := pi.GetItems().GetRaw(); raw != "" {
		lv := &structpb.ListValue{}
		if err := protojson.Unmarshal([]byte(raw), lv); err == nil {
			return lv.GetValues(), "parameterIterator raw list"
		}
	}
	if ip := pi.GetItems().GetInputParameter(); ip != "" {
		if v := resolved[ip]; v != nil {
			if lv := v.GetListValue(); lv != nil {
				return lv.GetValues(), "parameterIterator list parameter (known)"
			}
			if s := v.GetStringValue(); s != "" {
				lv := &structpb.ListValue{}
				if err := protojson.Unmarshal([]byte(s), lv); err == nil {
					return lv.GetValues(), "parameterIterator list parameter (known, JSON string)"
				}
			}
		}
	}
	return nil, "--iterations (loop items known only at run time)"
}

// resolveTaskInputs: a task's input parameters as far as they are known before the run.
func (e *estimator) resolveTaskInputs(task *pipelinespec.PipelineTaskSpec, env kfpEnv) kfpEnv {
	res := kfpEnv{}
	for name, p := range task.GetInputs().GetParameters() {
		var v *structpb.Value
		switch k := p.GetKind().(type) {
		case *pipelinespec.TaskInputsSpec_InputParameterSpec_RuntimeValue:
			v = k.RuntimeValue.GetConstant()
		case *pipelinespec.TaskInputsSpec_InputParameterSpec_ComponentInputParameter:
			v = env[k.ComponentInputParameter]
		case *pipelinespec.TaskInputsSpec_InputParameterSpec_TaskOutputParameter:
			if n, ok := e.loopCounts[k.TaskOutputParameter.GetProducerTask()]; ok {
				// dsl.Collected: one runtime value per iteration.
				vals := make([]*structpb.Value, n)
				for i := range vals {
					vals[i] = structpb.NewStringValue(strings.Repeat("x", e.o.runtimeParameterBytes))
				}
				v = structpb.NewListValue(&structpb.ListValue{Values: vals})
			}
		}
		if sel := p.GetParameterExpressionSelector(); sel != "" {
			v = selectField(v, sel)
		}
		res[name] = v
	}
	return res
}

var selectorRe = regexp.MustCompile(`^parseJson\(string_value\)((?:\["[^"]*"\])+)$`)
var selectorKeyRe = regexp.MustCompile(`\["([^"]*)"\]`)

// selectField evaluates the CEL selectors the SDK writes for loop-item fields,
// parseJson(string_value)["key"]..., on a value known before the run; anything else is a runtime value.
func selectField(v *structpb.Value, sel string) *structpb.Value {
	m := selectorRe.FindStringSubmatch(strings.TrimSpace(sel))
	if v == nil || m == nil {
		return nil
	}
	cur := v
	if s, ok := cur.GetKind().(*structpb.Value_StringValue); ok {
		parsed := &structpb.Value{}
		if err := protojson.Unmarshal([]byte(s.StringValue), parsed); err != nil {
			return nil
		}
		cur = parsed
	}
	for _, k := range selectorKeyRe.FindAllStringSubmatch(m[1], -1) {
		st := cur.GetStructValue()
		if st == nil {
			return nil
		}
		next, ok := st.GetFields()[k[1]]
		if !ok {
			return nil
		}
		cur = next
	}
	return cur
}
