package main

// The API server's own path from a run request to the Workflow it creates (KFP 2.17.0,
// backend/src/apiserver/resource/resource_manager.go: CreateRun), called through the server's packages.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	wfapi "github.com/argoproj/argo-workflows/v4/pkg/apis/workflow/v1alpha1"
	"github.com/kubeflow/pipelines/api/v2alpha1/go/pipelinespec"
	"github.com/kubeflow/pipelines/backend/src/apiserver/common"
	"github.com/kubeflow/pipelines/backend/src/apiserver/config/proxy"
	"github.com/kubeflow/pipelines/backend/src/apiserver/model"
	"github.com/kubeflow/pipelines/backend/src/apiserver/template"
	"github.com/kubeflow/pipelines/backend/src/common/util"
	"github.com/spf13/viper"
	"google.golang.org/protobuf/types/known/structpb"
)

const serverPath = "template.New(manifest) -> (*template.V2Spec).RunWorkflow(run, RunWorkflowOptions{RunID, RunAt}) " +
	"-> ExecutionSpec.Validate(false, false), as ResourceManager.CreateRun (KFP 2.17.0)"

// The API server's environment in the standard 2.17.0 install (ml-pipeline-apiserver-deployment.yaml and
// config.json) where it reaches the compiler; everything else is left at the code's defaults.
var serverEnvDefaults = [][2]string{
	{"V2_DRIVER_IMAGE", "ghcr.io/kubeflow/kfp-driver:" + kfpVersion},
	{"V2_LAUNCHER_IMAGE", "ghcr.io/kubeflow/kfp-launcher:" + kfpVersion},
	{"PIPELINE_LOG_LEVEL", "1"},
	{"PUBLISH_LOGS", "true"},
	{"COMPILED_PIPELINE_SPEC_PATCH", "{}"},
	{"DEFAULTPIPELINERUNNERSERVICEACCOUNT", "pipeline-runner"},
	{"POD_NAMESPACE", "kubeflow"},
	{"CLUSTER_DOMAIN", "cluster.local"},
}

// Variables the compiler reads that the standard install does not set: cleared, so that this machine's
// environment cannot leak into the result.
var serverEnvCleared = []string{
	"V2_DRIVER_COMMAND", "V2_LAUNCHER_COMMAND", "PIPELINE_RUN_AS_USER",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
	"CABUNDLE_SECRET_NAME", "CABUNDLE_CONFIGMAP_NAME", "CABUNDLE_KEY_NAME", "METADATA_TLS_ENABLED",
	"ML_PIPELINE_SERVICE_NAME", "METADATA_SERVICE_NAME",
}

// setUpServer puts the process in the state the API server's main() leaves it in before serving requests:
// its environment, viper (the server reads its configuration through viper.AutomaticEnv) and the proxy
// configuration (proxy.InitializeConfigWithEnv).
func setUpServer(overrides []string) error {
	// glog (used by the server's packages) writes log files under /tmp unless told otherwise.
	_ = flag.Set("logtostderr", "true")
	env := map[string]string{}
	for _, kv := range serverEnvDefaults {
		env[kv[0]] = kv[1]
	}
	for _, k := range serverEnvCleared {
		if err := os.Unsetenv(k); err != nil {
			return err
		}
	}
	for _, o := range overrides {
		k, v, ok := strings.Cut(o, "=")
		if !ok || k == "" {
			return fmt.Errorf("--server-env %q: want KEY=VALUE", o)
		}
		env[k] = v
	}
	for k, v := range env {
		if err := os.Setenv(k, v); err != nil {
			return err
		}
		viper.Set(k, v)
	}
	util.SetExecutionType(util.ArgoWorkflow)
	proxy.InitializeConfigWithEnv()
	return nil
}

// apiRuntimeParameters turns a JSON object of parameter name -> value into model.RuntimeConfig.Parameters
// exactly as the API server's converter does for a v2beta1 run (toModelParameters:
// json.Marshal(map[string]*structpb.Value)).
func apiRuntimeParameters(raw []byte) (string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return "", fmt.Errorf("want a JSON object of parameter name -> value: %w", err)
	}
	if fields == nil {
		return "", errors.New("want a JSON object of parameter name -> value, got null")
	}
	params := make(map[string]*structpb.Value, len(fields))
	for name, value := range fields {
		v := &structpb.Value{}
		if err := v.UnmarshalJSON(value); err != nil {
			return "", fmt.Errorf("parameter %q: %w", name, err)
		}
		params[name] = v
	}
	b, err := json.Marshal(params)
	if err != nil {
		return "", err
	}
	s := string(b)
	if s == "null" {
		s = ""
	}
	return s, nil
}

type serverResult struct {
	wf              *wfapi.Workflow
	spec            *pipelinespec.PipelineSpec
	err             error
	stage           string
	path            string
	uploadNameError *string
}

func compileAsServer(manifest []byte, runtimeParameters string, o *options) (res serverResult) {
	res.path = serverPath
	// ResourceManager.fetchTemplateFromPipelineSpec + CreateRun's wrapping.
	tmpl, err := template.New(manifest, template.TemplateOptions{CacheDisabled: o.cacheDisabled})
	if err != nil {
		err = util.Wrap(err, "Failed to fetch a template with an invalid pipeline spec manifest")
		res.err = util.NewInternalServerError(err, "Failed to create a run due to error fetching manifest")
		res.stage = "template"
		return res
	}
	v2, ok := tmpl.(*template.V2Spec)
	if !ok {
		res.err = errors.New("kfp-backend-check: the manifest is an Argo Workflow (a v1 pipeline), not a KFP v2 pipeline spec")
		res.stage = "template"
		return res
	}
	res.spec = v2.PipelineSpec()
	if err := common.ValidatePipelineName(tmpl.V2PipelineName()); err != nil {
		s := err.Error()
		res.uploadNameError = &s
	}
	runAt := time.Now().Unix()
	run := &model.Run{
		UUID:           o.runID,
		DisplayName:    o.runName,
		Namespace:      o.namespace,
		ServiceAccount: o.serviceAccount,
		PipelineSpec: model.PipelineSpec{
			PipelineSpecManifest: model.LargeText(manifest),
			RuntimeConfig: model.RuntimeConfig{
				Parameters:   model.LargeText(runtimeParameters),
				PipelineRoot: model.LargeText(o.pipelineRoot),
			},
		},
		RunDetails: model.RunDetails{CreatedAtInSec: runAt},
	}
	executionSpec, err := tmpl.RunWorkflow(run, template.RunWorkflowOptions{RunID: run.UUID, RunAt: run.CreatedAtInSec})
	if err != nil {
		res.err = util.Wrap(err, "Failed to generate the ExecutionSpec")
		res.stage = "run_workflow"
		return res
	}
	w, ok := executionSpec.(*util.Workflow)
	if !ok {
		res.err = fmt.Errorf("kfp-backend-check: unexpected execution spec %T", executionSpec)
		res.stage = "run_workflow"
		return res
	}
	// Validation may fill defaults in; the size is of the object as RunWorkflow returns it, which is what
	// CreateRun sends to the Kubernetes API (after setting the namespace, done above through run.Namespace).
	res.wf = w.Workflow.DeepCopy()
	if err := executionSpec.Validate(false, false); err != nil {
		res.err = util.NewInternalServerError(err, "Failed to validate workflow for (%+v)", executionSpec.ExecutionName())
		res.stage = "validate"
		return res
	}
	return res
}
