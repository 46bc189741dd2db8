// Command kfp-backend-check compiles a KFP v2 pipeline YAML (the kfp SDK compiler's output: the pipeline
// spec and, optionally, the platform spec as two YAML documents) to the Argo Workflow exactly as the KFP
// 2.17.0 API server does, validates it the way the API server does, and prints one JSON report on stdout.
//
//	kfp-backend-check --pipeline P.yaml [--parameters params.json] [--run-name NAME] [--namespace NS]
//	    [--service-account SA] [--workflow-out wf.json] [--iterations N] [--artifact-uri-bytes 256]
//	    [--artifact-metadata-bytes 1024] [--runtime-parameter-bytes 2048]
//
// Exit status: 0 when the backend accepts the run, 1 when it refuses it (the report's "error" holds the
// backend's own error text), 2 on usage errors (bad flags, unreadable files, malformed parameters JSON).
//
// The server's path (server.go) is the server's own code, imported from the KFP module at tag 2.17.0:
// template.New (what CreateRun's fetchTemplateFromPipelineSpec calls on the manifest) ->
// (*template.V2Spec).RunWorkflow(run, RunWorkflowOptions{RunID, RunAt}) (PipelineJob with the run's
// RuntimeConfig, validatePipelineJobInputs, argocompiler.Compile, namespace, service account, labels,
// ReplaceUID) -> executionSpec.Validate(false, false) (util.Workflow.Validate -> Argo's
// validate.ValidateWorkflow), as in ResourceManager.CreateRun. The server's environment is that of the
// standard 2.17.0 install (manifests/kustomize/base/pipeline/ml-pipeline-apiserver-deployment.yaml):
// V2_DRIVER_IMAGE / V2_LAUNCHER_IMAGE at the 2.17.0 images, PIPELINE_LOG_LEVEL=1, PUBLISH_LOGS=true, no
// proxy, cache enabled, no default security context, POD_NAMESPACE kubeflow; --server-env KEY=VALUE
// changes any of it.
//
// The report:
//   - valid, error, stage: the verdict; error is the backend's own text, stage where it refused
//     ("template": parsing the manifest, "run_workflow": run inputs or compilation, "validate": Argo's
//     validation); upload_name_error: what the pipeline-upload path's name check would say (informational).
//   - workflow_bytes: len(json.Marshal(Workflow)) as RunWorkflow returns it (what is sent to Kubernetes);
//     workflow_parameters / workflow_parameter_bytes: spec.arguments.parameters, count and sum of value
//     lengths (the component specs and implementations the compiler deduplicates there);
//     by_template_bytes: len(json.Marshal(template)) per template; templates, dag_tasks: counts.
//   - largest_argument {bytes, where}: the longest single string that reaches a pod's command line: every
//     container/init-container command and args element after substituting the values the DAG tasks pass
//     ({{workflow.parameters.*}}, {{inputs.parameters.*}}, ...), and the command/args of the pod spec patch
//     an executor pod is patched with (the user container's real command line). Compare with
//     limits.linux_max_arg_strlen.
//   - nodes, pod_nodes, status_bytes, bytes_per_node {mean, max}, largest_node, nodes_by_template, loops
//     (each expanded loop: iterations and where the count came from): the node-status estimate below;
//     status_other_bytes: status.taskResultsCompletionStatus (one entry per Pod node).
//   - limits: thresholds to compare with (etcd object size, Argo's MAX_WORKFLOW_SIZE, Argo's and Linux's
//     per-string limits); assumptions: the flags the estimate used.
//
// Node-status model (status_model in the JSON; estimate.go). The estimate is of status.nodes at the end of
// a run that succeeds without retries and without cache hits, and errs high:
//   - Walk the workflow from its entrypoint as the Argo controller expands it. Every DAG task becomes a
//     node named <parent node name>.<task name> (the root node is named after the workflow); a DAG template
//     expands into its tasks; a container/script template is a leaf Pod node; a task with
//     withItems/withParam/withSequence becomes a TaskGroup node plus one node per iteration, named
//     <task>(<i>:<item>); a template with a retryStrategy is a Retry node with one Pod child <name>(0);
//     an exit lifecycle hook adds <task node>.onExit. Every `when` is taken as true (a real run skips
//     false branches: one Skipped node instead of a subtree), so conditions count high.
//   - Iterations: withItems' length; for KFP's withSequence loops, the loop task's parameterIterator in
//     the pipeline spec: its raw item list, or its input parameter's list when that is a pipeline
//     parameter whose value is known (--parameters or its default); otherwise --iterations.
//   - Each node is a wfapi.NodeStatus with a realistic ID (Workflow.NodeID), name, displayName, type,
//     templateName, templateScope, phase, boundaryID, startedAt/finishedAt, estimatedDuration, progress,
//     resourcesDuration, hostNodeName (40 characters, Pod nodes), nodeFlag, taskResultSynced, children and
//     outboundNodes, inputs.parameters with the values the DAG tasks pass substituted ({{workflow.*}},
//     {{inputs.parameters.*}}, {{tasks.*.outputs.parameters.*}}, {{item}}), and outputs: the template's
//     output parameters with estimated values and exitCode, plus the main-logs artifact (S3 key) that a
//     standard install's archiveLogs adds to every Pod node.
//   - Estimated runtime values: system-container-driver's pod-spec-patch is built as the driver builds it
//     (backend/src/v2/driver: initPodSpecPatch + extendPodSpecPatch): a PodSpec holding the "main"
//     container with the launcher command (--executor_input <ExecutorInput JSON> --component_spec
//     <ComponentSpec JSON> ...), the component's command and args with {{$.inputs.parameters[...]}}
//     resolved, image, env, resources, and the Kubernetes executor config's node selector, tolerations,
//     volumes, env sources, pull secrets and deadline. The ExecutorInput holds every input parameter
//     (constants and values known from the run's parameters at their size, values known only at run time
//     at --runtime-parameter-bytes), every input artifact as --artifact-uri-bytes of URI and
//     --artifact-metadata-bytes of metadata, and the outputs the driver provisions. execution-id is 8
//     digits, iteration-count the loop's count, cached-decision "false", condition "true".
//   - status_bytes = sum of len(json.Marshal(node)).
//
// Where it may err low: a kubernetes executor-config field the estimate does not mirror is counted as
// twice its JSON size; runtime-only values longer than --runtime-parameter-bytes; artifact URIs or metadata
// longer than the flags; retries (each adds a Pod node); Argo fields a future controller adds. Messages on
// failed nodes and status fields outside status.nodes (conditions, taskResultsCompletionStatus: see
// status_other_bytes) are not in status_bytes.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

const (
	kfpVersion  = "2.17.0"
	kfpCommit   = "4a3592cb2dd0a91a4652ab93893ec8beda1f3158"
	argoVersion = "v4.0.5"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type options struct {
	pipeline              string
	parameters            string
	runName               string
	namespace             string
	serviceAccount        string
	workflowOut           string
	statusOut             string
	runID                 string
	pipelineRoot          string
	iterations            int
	artifactURIBytes      int
	artifactMetadataBytes int
	runtimeParameterBytes int
	cacheDisabled         bool
	serverEnv             multiFlag
}

type argument struct {
	Bytes int    `json:"bytes"`
	Where string `json:"where"`
}

type perNode struct {
	Mean float64 `json:"mean"`
	Max  int     `json:"max"`
}

type loopReport struct {
	Where      string `json:"where"`
	Iterations int    `json:"iterations"`
	Source     string `json:"source"`
}

type report struct {
	Valid       bool   `json:"valid"`
	Error       string `json:"error,omitempty"`
	Stage       string `json:"stage,omitempty"`
	KFPVersion  string `json:"kfp_version"`
	KFPCommit   string `json:"kfp_commit"`
	ArgoVersion string `json:"argo_version"`
	ServerPath  string `json:"server_path,omitempty"`
	// The pipeline-upload path (CreatePipelineAndPipelineVersion) also checks the spec's name with
	// common.ValidatePipelineName; a run created from an inline spec (kfp.Client.create_run_from_pipeline_package)
	// does not. Reported, not counted in "valid".
	UploadNameError *string `json:"upload_name_error,omitempty"`

	WorkflowBytes          int      `json:"workflow_bytes"`
	WorkflowParameters     int      `json:"workflow_parameters"`
	WorkflowParameterBytes int      `json:"workflow_parameter_bytes"`
	LargestArgument        argument `json:"largest_argument"`
	Templates              int      `json:"templates"`
	DAGTasks               int      `json:"dag_tasks"`

	Nodes            int            `json:"nodes"`
	PodNodes         int            `json:"pod_nodes"`
	StatusBytes      int            `json:"status_bytes"`
	StatusOtherBytes int            `json:"status_other_bytes"`
	BytesPerNode     perNode        `json:"bytes_per_node"`
	NodesByTemplate  map[string]int `json:"nodes_by_template"`
	LargestNode      argument       `json:"largest_node"`
	Loops            []loopReport   `json:"loops"`
	StatusModel      string         `json:"status_model"`
	Assumptions      map[string]any `json:"assumptions"`

	ByTemplateBytes map[string]int `json:"by_template_bytes"`
	Limits          map[string]int `json:"limits"`
}

const statusModel = "status.nodes at the end of a run that succeeds without retries or cache hits, every `when` taken " +
	"as true: Argo's expansion from the entrypoint (DAG task -> node <parent>.<task>; DAG template -> its tasks; " +
	"container -> Pod node; withItems/withParam/withSequence -> TaskGroup node + one node per iteration, counted " +
	"from withItems, else the KFP parameterIterator's raw list or known list parameter, else --iterations; " +
	"retryStrategy -> Retry node + Pod child; exit hook -> <task>.onExit). Each node a wfapi.NodeStatus with " +
	"realistic ids, names, times, progress, resourcesDuration, hostNodeName (40 chars), inputs.parameters with " +
	"substituted values, outputs (container driver's pod-spec-patch built as the 2.17.0 driver builds it, " +
	"executor input with constants and known run parameters at their size, runtime-only values at " +
	"--runtime-parameter-bytes, artifacts at --artifact-uri-bytes + --artifact-metadata-bytes; short ids, " +
	"counts and flags; main-logs artifact on Pod nodes), children and outboundNodes. status_bytes = " +
	"sum of len(json.Marshal(node)). Errs high; may err low for unmirrored executor-config fields, runtime " +
	"values above the flags, and retries."

// Thresholds the numbers are compared against (informational).
var limits = map[string]int{
	// etcd's default request limit (--max-request-bytes), the largest object the API server stores.
	"etcd_object_bytes": 1572864,
	// Argo's default MAX_WORKFLOW_SIZE: above it the controller compresses status.nodes, then offloads
	// them (needs a database) or fails the workflow.
	"argo_max_workflow_size_bytes": 1024 * 1024,
	// Argo v4 common.MaxEnvVarLen: a pod's ARGO_TEMPLATE or main-container args above it go to a ConfigMap.
	"argo_max_env_var_len": 131072,
	// Linux MAX_ARG_STRLEN: the largest single argv/env string exec accepts.
	"linux_max_arg_strlen": 131072,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usageError(stdout io.Writer, stderr io.Writer, fs *flag.FlagSet, err error) int {
	fmt.Fprintf(stderr, "kfp-backend-check: %v\n", err)
	if fs != nil {
		fs.SetOutput(stderr)
		fs.PrintDefaults()
	}
	writeJSON(stdout, map[string]any{"valid": false, "usage_error": err.Error()})
	return 2
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func run(args []string, stdout, stderr io.Writer) int {
	o := options{}
	fs := flag.NewFlagSet("kfp-backend-check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.pipeline, "pipeline", "", "pipeline YAML as the kfp SDK compiler writes it (required)")
	fs.StringVar(&o.parameters, "parameters", "", "JSON file: an object of pipeline parameter name -> value (the run's runtime_config.parameters)")
	fs.StringVar(&o.runName, "run-name", "kfp-backend-check", "the run's display name")
	fs.StringVar(&o.namespace, "namespace", "kubeflow", "the run's namespace")
	fs.StringVar(&o.serviceAccount, "service-account", "", "the run's service account (empty: the server's default, pipeline-runner)")
	fs.StringVar(&o.workflowOut, "workflow-out", "", "write the Workflow (JSON, as it would be created) to this file")
	fs.StringVar(&o.statusOut, "status-out", "", "write the estimated status.nodes (JSON: node id -> NodeStatus) to this file")
	fs.StringVar(&o.runID, "run-id", "3f1c2b9e-5d4a-4c1b-9e7f-0a1b2c3d4e5f", "the run's UUID (replaces {{workflow.uid}})")
	fs.StringVar(&o.pipelineRoot, "pipeline-root", "", "the run's runtime_config.pipeline_root (empty: the install's default)")
	fs.IntVar(&o.iterations, "iterations", 1, "iterations of a loop whose count is only known at run time")
	fs.IntVar(&o.artifactURIBytes, "artifact-uri-bytes", 256, "size of an input artifact's URI")
	fs.IntVar(&o.artifactMetadataBytes, "artifact-metadata-bytes", 1024, "size of an input artifact's metadata")
	fs.IntVar(&o.runtimeParameterBytes, "runtime-parameter-bytes", 2048, "size of a parameter value known only at run time")
	fs.BoolVar(&o.cacheDisabled, "cache-disabled", false, "model an API server started with caching disabled")
	fs.Var(&o.serverEnv, "server-env", "KEY=VALUE in the API server's environment (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return 2
		}
		return usageError(stdout, stderr, fs, err)
	}
	if fs.NArg() != 0 {
		return usageError(stdout, stderr, fs, fmt.Errorf("unexpected arguments: %v", fs.Args()))
	}
	if o.pipeline == "" {
		return usageError(stdout, stderr, fs, errors.New("--pipeline is required"))
	}
	if o.iterations < 0 || o.artifactURIBytes < 0 || o.artifactMetadataBytes < 0 || o.runtimeParameterBytes < 0 {
		return usageError(stdout, stderr, fs, errors.New("sizes and --iterations must not be negative"))
	}
	manifest, err := os.ReadFile(o.pipeline)
	if err != nil {
		return usageError(stdout, stderr, nil, err)
	}
	runtimeParameters := ""
	if o.parameters != "" {
		raw, err := os.ReadFile(o.parameters)
		if err != nil {
			return usageError(stdout, stderr, nil, err)
		}
		runtimeParameters, err = apiRuntimeParameters(raw)
		if err != nil {
			return usageError(stdout, stderr, nil, fmt.Errorf("--parameters %s: %w", o.parameters, err))
		}
	}
	if err := setUpServer(o.serverEnv); err != nil {
		return usageError(stdout, stderr, nil, err)
	}

	rep := &report{
		KFPVersion:  kfpVersion,
		KFPCommit:   kfpCommit,
		ArgoVersion: argoVersion,
		StatusModel: statusModel,
		Limits:      limits,
		Assumptions: map[string]any{
			"iterations":              o.iterations,
			"artifact_uri_bytes":      o.artifactURIBytes,
			"artifact_metadata_bytes": o.artifactMetadataBytes,
			"runtime_parameter_bytes": o.runtimeParameterBytes,
			"manifest":                "the pipeline YAML as the run's pipeline_spec manifest (template.New on its bytes)",
		},
		NodesByTemplate: map[string]int{},
		ByTemplateBytes: map[string]int{},
		Loops:           []loopReport{},
	}
	res := compileAsServer(manifest, runtimeParameters, &o)
	rep.ServerPath = res.path
	rep.UploadNameError = res.uploadNameError
	if res.err != nil {
		rep.Error = res.err.Error()
		rep.Stage = res.stage
	} else {
		rep.Valid = true
	}
	if res.wf != nil {
		wfJSON, err := json.Marshal(res.wf)
		if err != nil {
			rep.Valid = false
			rep.Error = "marshal workflow: " + err.Error()
			writeJSON(stdout, rep)
			return 1
		}
		rep.WorkflowBytes = len(wfJSON)
		if o.workflowOut != "" {
			if err := os.WriteFile(o.workflowOut, wfJSON, 0o644); err != nil {
				return usageError(stdout, stderr, nil, err)
			}
		}
		for _, p := range res.wf.Spec.Arguments.Parameters {
			rep.WorkflowParameters++
			if p.Value != nil {
				rep.WorkflowParameterBytes += len(p.Value.String())
			}
		}
		rep.Templates = len(res.wf.Spec.Templates)
		for i := range res.wf.Spec.Templates {
			t := &res.wf.Spec.Templates[i]
			b, _ := json.Marshal(t)
			rep.ByTemplateBytes[t.Name] = len(b)
			if t.DAG != nil {
				rep.DAGTasks += len(t.DAG.Tasks)
			}
		}
		est := newEstimator(res.wf, res.spec, &o)
		if err := est.run(); err != nil {
			// The estimate is ours, not the backend's: a failure here is reported, the verdict stays.
			rep.Assumptions["estimate_error"] = err.Error()
		}
		est.fill(rep)
		if o.statusOut != "" {
			nodes := map[string]any{}
			for _, n := range est.nodes {
				nodes[n.ID] = n
			}
			b, _ := json.Marshal(nodes)
			if err := os.WriteFile(o.statusOut, b, 0o644); err != nil {
				return usageError(stdout, stderr, nil, err)
			}
		}
	}
	writeJSON(stdout, rep)
	if !rep.Valid {
		return 1
	}
	return 0
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
