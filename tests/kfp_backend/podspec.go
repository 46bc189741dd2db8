package main

// The container driver's pod-spec-patch, built as the KFP 2.17.0 driver builds it
// (backend/src/v2/driver/driver.go initPodSpecPatch, provisionOutputs; k8s.go extendPodSpecPatch), from the
// driver node's inputs (component, task, container, kubernetes-config) and what is known of the task's
// inputs before the run. Mirrored, not called: those functions are unexported and need MLMD.

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/kubeflow/pipelines/api/v2alpha1/go/pipelinespec"
	"github.com/kubeflow/pipelines/backend/src/v2/component"
	"github.com/kubeflow/pipelines/backend/src/v2/config"
	"github.com/kubeflow/pipelines/backend/src/v2/metadata"
	"github.com/kubeflow/pipelines/kubernetes_platform/go/kubernetesplatform"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	k8score "k8s.io/api/core/v1"
	k8sres "k8s.io/apimachinery/pkg/api/resource"
)

const (
	defaultPipelineRoot = "minio://mlpipeline/v2/artifacts"      // v2/config: the launcher config's default
	estOutputURISalt    = "0f8fad5b-d9cb-469f-a165-70867728950e" // the driver salts output URIs with a UUID
)

func pad(n int) string {
	if n < 0 {
		n = 0
	}
	return strings.Repeat("x", n)
}

func (e *estimator) podSpecPatch(inputs map[string]string, env kfpEnv) string {
	comp := &pipelinespec.ComponentSpec{}
	_ = protojson.Unmarshal([]byte(inputs["component"]), comp)
	task := &pipelinespec.PipelineTaskSpec{}
	_ = protojson.Unmarshal([]byte(inputs["task"]), task)
	ctr := &pipelinespec.PipelineDeploymentConfig_PipelineContainerSpec{}
	_ = protojson.Unmarshal([]byte(inputs["container"]), ctr)
	k8sCfg := &kubernetesplatform.KubernetesExecutorConfig{}
	if kc := inputs["kubernetes-config"]; kc != "" && !strings.Contains(kc, "{{") {
		_ = protojson.Unmarshal([]byte(kc), k8sCfg)
	}
	taskName := inputs["task-name"]
	if taskName == "" {
		taskName = task.GetTaskInfo().GetName()
	}
	ei := e.executorInput(comp, task, env, taskName)
	eiJSON, _ := protojson.Marshal(ei)
	compJSON, _ := protojson.Marshal(comp)

	publishLogs := os.Getenv("PUBLISH_LOGS")
	logLevel := os.Getenv("PIPELINE_LOG_LEVEL")
	if logLevel == "" {
		logLevel = "1"
	}
	ml := config.GetMLPipelineServerConfig()
	md := metadata.GetMetadataConfig()
	launcherCmd := []string{
		component.KFPLauncherPath,
		"--pipeline_name", e.spec.GetPipelineInfo().GetName(),
		"--run_id", e.o.runID,
		"--execution_id", estExecutionID,
		"--executor_input", string(eiJSON),
		"--component_spec", string(compJSON),
		"--pod_name", "$(" + component.EnvPodName + ")",
		"--pod_uid", "$(" + component.EnvPodUID + ")",
		"--ml_pipeline_server_address", ml.Address,
		"--ml_pipeline_server_port", ml.Port,
		"--mlmd_server_address", md.Address,
		"--mlmd_server_port", md.Port,
		"--publish_logs", publishLogs,
	}
	if e.o.cacheDisabled {
		launcherCmd = append(launcherCmd, "--cache_disabled")
	}
	if logLevel != "1" {
		launcherCmd = append(launcherCmd, "--log_level", logLevel)
	}
	if publishLogs == "true" {
		launcherCmd = append(launcherCmd, "--publish_logs", publishLogs)
	}
	launcherCmd = append(launcherCmd, "--")

	userCmdArgs := append(resolveContainerArgs(ctr.GetCommand(), ei), resolveContainerArgs(ctr.GetArgs(), ei)...)
	main := k8score.Container{
		Name:    "main",
		Command: launcherCmd,
		Args:    userCmdArgs,
		Image:   resolveImage(ctr.GetImage(), ei),
	}
	setOnPod := taskConfigSetOnPod(comp)
	if setOnPod[pipelinespec.TaskConfigPassthroughType_ENV] {
		for _, ev := range ctr.GetEnv() {
			main.Env = append(main.Env, k8score.EnvVar{Name: ev.GetName(), Value: ev.GetValue()})
		}
	}
	if setOnPod[pipelinespec.TaskConfigPassthroughType_RESOURCES] {
		main.Resources = containerResources(ctr.GetResources(), ei)
	}
	ps := &k8score.PodSpec{Containers: []k8score.Container{main}}
	e.extendPodSpecPatch(ps, k8sCfg, setOnPod, env)
	b, _ := json.Marshal(ps)
	return string(b)
}

// taskConfigSetOnPod mirrors getTaskConfigOptions' second result.
func taskConfigSetOnPod(comp *pipelinespec.ComponentSpec) map[pipelinespec.TaskConfigPassthroughType_TaskConfigPassthroughTypeEnum]bool {
	setOnPod := map[pipelinespec.TaskConfigPassthroughType_TaskConfigPassthroughTypeEnum]bool{
		pipelinespec.TaskConfigPassthroughType_RESOURCES:                true,
		pipelinespec.TaskConfigPassthroughType_ENV:                      true,
		pipelinespec.TaskConfigPassthroughType_KUBERNETES_AFFINITY:      true,
		pipelinespec.TaskConfigPassthroughType_KUBERNETES_TOLERATIONS:   true,
		pipelinespec.TaskConfigPassthroughType_KUBERNETES_NODE_SELECTOR: true,
		pipelinespec.TaskConfigPassthroughType_KUBERNETES_VOLUMES:       true,
	}
	for _, pt := range comp.GetTaskConfigPassthroughs() {
		setOnPod[pt.GetField()] = pt.GetApplyToTask()
	}
	return setOnPod
}

func (e *estimator) inputArtifact(name string, t *pipelinespec.ArtifactTypeSchema) *pipelinespec.RuntimeArtifact {
	uri := defaultPipelineRoot + "/"
	uri += pad(e.o.artifactURIBytes - len(uri))
	// {"estimate":"..."} of --artifact-metadata-bytes.
	meta, _ := structpb.NewStruct(map[string]any{"estimate": pad(e.o.artifactMetadataBytes - len(`{"estimate":""}`))})
	return &pipelinespec.RuntimeArtifact{Name: name, Type: t, Uri: uri, Metadata: meta}
}

// executorInput mirrors what the container driver resolves (inputs) and provisions (outputs).
func (e *estimator) executorInput(comp *pipelinespec.ComponentSpec, task *pipelinespec.PipelineTaskSpec, env kfpEnv, taskName string) *pipelinespec.ExecutorInput {
	resolved := e.resolveTaskInputs(task, env)
	params := map[string]*structpb.Value{}
	for name, def := range comp.GetInputDefinitions().GetParameters() {
		v, bound := resolved[name]
		if !bound {
			if def.GetDefaultValue() == nil {
				continue
			}
			v = def.GetDefaultValue()
		}
		if v == nil {
			v = structpb.NewStringValue(pad(e.o.runtimeParameterBytes))
		}
		params[name] = v
	}
	artifacts := map[string]*pipelinespec.ArtifactList{}
	for name, def := range comp.GetInputDefinitions().GetArtifacts() {
		binding, bound := task.GetInputs().GetArtifacts()[name]
		if !bound && def.GetIsOptional() {
			continue
		}
		n := 1
		if def.GetIsArtifactList() {
			n = e.o.iterations
			if c, ok := e.loopCounts[binding.GetTaskOutputArtifact().GetProducerTask()]; ok {
				n = c
			}
		}
		list := &pipelinespec.ArtifactList{}
		for i := 0; i < n; i++ {
			list.Artifacts = append(list.Artifacts, e.inputArtifact(name, def.GetArtifactType()))
		}
		artifacts[name] = list
	}
	return &pipelinespec.ExecutorInput{
		Inputs:  &pipelinespec.ExecutorInput_Inputs{ParameterValues: params, Artifacts: artifacts},
		Outputs: e.provisionOutputs(comp.GetOutputDefinitions(), taskName),
	}
}

func (e *estimator) provisionOutputs(spec *pipelinespec.ComponentOutputsSpec, taskName string) *pipelinespec.ExecutorInput_Outputs {
	root := e.o.pipelineRoot
	if root == "" {
		root = defaultPipelineRoot
	}
	runRoot := metadata.GenerateOutputURI(root, []string{e.spec.GetPipelineInfo().GetName(), e.o.runID}, true)
	outputs := &pipelinespec.ExecutorInput_Outputs{
		Artifacts:  map[string]*pipelinespec.ArtifactList{},
		Parameters: map[string]*pipelinespec.ExecutorInput_OutputParameter{},
	}
	artifacts := map[string]*pipelinespec.ComponentOutputsSpec_ArtifactSpec{}
	for k, v := range spec.GetArtifacts() {
		artifacts[k] = v
	}
	if os.Getenv("PUBLISH_LOGS") == "true" {
		artifacts["executor-logs"] = &pipelinespec.ComponentOutputsSpec_ArtifactSpec{
			ArtifactType: &pipelinespec.ArtifactTypeSchema{Kind: &pipelinespec.ArtifactTypeSchema_SchemaTitle{SchemaTitle: "system.Artifact"}},
		}
	}
	taskRoot := metadata.GenerateOutputURI(runRoot, []string{taskName, estOutputURISalt}, false)
	for name, a := range artifacts {
		outputs.Artifacts[name] = &pipelinespec.ArtifactList{Artifacts: []*pipelinespec.RuntimeArtifact{{
			Name:     name,
			Uri:      metadata.GenerateOutputURI(taskRoot, []string{name}, false),
			Type:     a.GetArtifactType(),
			Metadata: a.GetMetadata(),
		}}}
	}
	for name := range spec.GetParameters() {
		outputs.Parameters[name] = &pipelinespec.ExecutorInput_OutputParameter{OutputFile: fmt.Sprintf("/tmp/kfp/outputs/%s", name)}
	}
	if local, err := component.LocalPathForURI(taskRoot); err == nil {
		outputs.OutputFile = local + "/output_metadata.json"
	} else {
		outputs.OutputFile = component.OutputMetadataFilepath
	}
	return outputs
}

var inputParameterRe = regexp.MustCompile(`\{\{\$\.inputs\.parameters\['(.+?)']}}`)

func pbValueToString(v *structpb.Value) string {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue
	case *structpb.Value_NumberValue:
		n := k.NumberValue
		if n == float64(int64(n)) {
			return fmt.Sprintf("%d", int64(n))
		}
		return fmt.Sprintf("%g", n)
	case *structpb.Value_BoolValue:
		if k.BoolValue {
			return "true"
		}
		return "false"
	case *structpb.Value_NullValue:
		return ""
	default:
		b, err := json.Marshal(v.AsInterface())
		if err != nil {
			return fmt.Sprintf("%v", v.AsInterface())
		}
		return string(b)
	}
}

func resolvePlaceholders(arg string, ei *pipelinespec.ExecutorInput) string {
	return inputParameterRe.ReplaceAllStringFunc(arg, func(m string) string {
		sub := inputParameterRe.FindStringSubmatch(m)
		if v, ok := ei.GetInputs().GetParameterValues()[sub[1]]; ok {
			return pbValueToString(v)
		}
		return m
	})
}

// resolveContainerArgs mirrors the driver's: input-parameter placeholders and IfPresent clauses are
// resolved; output placeholders and {{$}} are left to the launcher.
func resolveContainerArgs(args []string, ei *pipelinespec.ExecutorInput) []string {
	var out []string
	for _, arg := range args {
		if strings.Contains(arg, "$.outputs") {
			out = append(out, arg)
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(arg), `{"IfPresent":`) {
			var c struct {
				IfPresent struct {
					InputName string `json:"InputName"`
					Then      any    `json:"Then"`
					Else      any    `json:"Else"`
				} `json:"IfPresent"`
			}
			if err := json.Unmarshal([]byte(arg), &c); err != nil {
				out = append(out, arg)
				continue
			}
			v, present := ei.GetInputs().GetParameterValues()[c.IfPresent.InputName]
			if present {
				if _, null := v.GetKind().(*structpb.Value_NullValue); null {
					present = false
				}
			}
			chosen := c.IfPresent.Else
			if present {
				chosen = c.IfPresent.Then
			}
			switch x := chosen.(type) {
			case string:
				out = append(out, resolvePlaceholders(x, ei))
			case []any:
				for _, it := range x {
					if s, ok := it.(string); ok {
						out = append(out, resolvePlaceholders(s, ei))
					}
				}
			}
			continue
		}
		out = append(out, resolvePlaceholders(arg, ei))
	}
	return out
}

var channelRe = regexp.MustCompile(`^\{\{\$\.inputs\.parameters\['(.+?)']}}$`)

func resolveImage(image string, ei *pipelinespec.ExecutorInput) string {
	if m := channelRe.FindStringSubmatch(image); m != nil {
		if v, ok := ei.GetInputs().GetParameterValues()[m[1]]; ok {
			return v.GetStringValue()
		}
	}
	return image
}

func quantity(newStyle string, old float64, oldFmt string, ei *pipelinespec.ExecutorInput) (k8sres.Quantity, bool) {
	s := ""
	switch {
	case newStyle != "":
		s = resolveImage(newStyle, ei)
	case old != 0:
		s = fmt.Sprintf(oldFmt, old)
	default:
		return k8sres.Quantity{}, false
	}
	q, err := k8sres.ParseQuantity(s)
	if err != nil {
		return k8sres.Quantity{}, false
	}
	return q, true
}

func containerResources(r *pipelinespec.PipelineDeploymentConfig_PipelineContainerSpec_ResourceSpec, ei *pipelinespec.ExecutorInput) k8score.ResourceRequirements {
	res := k8score.ResourceRequirements{Limits: k8score.ResourceList{}, Requests: k8score.ResourceList{}}
	if q, ok := quantity(r.GetResourceMemoryLimit(), r.GetMemoryLimit(), "%vG", ei); ok {
		res.Limits[k8score.ResourceMemory] = q
	}
	if q, ok := quantity(r.GetResourceMemoryRequest(), r.GetMemoryRequest(), "%vG", ei); ok {
		res.Requests[k8score.ResourceMemory] = q
	}
	if q, ok := quantity(r.GetResourceCpuLimit(), r.GetCpuLimit(), "%v", ei); ok {
		res.Limits[k8score.ResourceCPU] = q
	}
	if q, ok := quantity(r.GetResourceCpuRequest(), r.GetCpuRequest(), "%v", ei); ok {
		res.Requests[k8score.ResourceCPU] = q
	}
	if acc := r.GetAccelerator(); acc != nil {
		typ := acc.GetType()
		if acc.GetResourceType() != "" {
			typ = resolveImage(acc.GetResourceType(), ei)
		}
		count := ""
		if acc.GetResourceCount() != "" {
			count = resolveImage(acc.GetResourceCount(), ei)
		} else if acc.GetCount() > 0 {
			count = fmt.Sprintf("%v", acc.GetCount())
		}
		if typ != "" && count != "" {
			if q, err := k8sres.ParseQuantity(count); err == nil {
				res.Limits[k8score.ResourceName(typ)] = q
			}
		}
	}
	return res
}

// paramString resolves a name given as an InputParameterSpec (a constant or a parent-DAG input);
// unknown names count as 63 characters, the longest Kubernetes name label.
func paramString(spec *pipelinespec.TaskInputsSpec_InputParameterSpec, env kfpEnv) string {
	switch k := spec.GetKind().(type) {
	case *pipelinespec.TaskInputsSpec_InputParameterSpec_RuntimeValue:
		if s := k.RuntimeValue.GetConstant().GetStringValue(); s != "" {
			return s
		}
	case *pipelinespec.TaskInputsSpec_InputParameterSpec_ComponentInputParameter:
		if v := env[k.ComponentInputParameter]; v != nil && v.GetStringValue() != "" {
			return v.GetStringValue()
		}
	}
	return pad(63)
}

// Executor-config fields extendPodSpecPatch turns into pod spec parts that are mirrored below; any other
// field counts as twice its JSON size (an env var of that length).
var mirroredK8sFields = map[string]bool{
	"secretAsVolume": true, "secretAsEnv": true, "pvcMount": true, "nodeSelector": true, "podMetadata": true,
	"imagePullSecret": true, "imagePullPolicy": true, "configMapAsVolume": true, "configMapAsEnv": true,
	"activeDeadlineSeconds": true, "fieldPathAsEnv": true, "tolerations": true, "emptyDirMounts": true,
	"securityContext": true,
}

func (e *estimator) extendPodSpecPatch(ps *k8score.PodSpec, cfg *kubernetesplatform.KubernetesExecutorConfig, setOnPod map[pipelinespec.TaskConfigPassthroughType_TaskConfigPassthroughTypeEnum]bool, env kfpEnv) {
	c := &ps.Containers[0]
	volumes := setOnPod[pipelinespec.TaskConfigPassthroughType_KUBERNETES_VOLUMES]
	envOn := setOnPod[pipelinespec.TaskConfigPassthroughType_ENV]
	for _, m := range cfg.GetPvcMount() {
		name := ""
		switch {
		case m.GetPvcNameParameter() != nil:
			name = paramString(m.GetPvcNameParameter(), env)
		case m.GetConstant() != "":
			name = m.GetConstant()
		case m.GetComponentInputParameter() != "":
			if v := env[m.GetComponentInputParameter()]; v != nil && v.GetStringValue() != "" {
				name = v.GetStringValue()
			} else {
				name = pad(63)
			}
		default:
			name = pad(63)
		}
		if volumes {
			ps.Volumes = append(ps.Volumes, k8score.Volume{Name: name, VolumeSource: k8score.VolumeSource{
				PersistentVolumeClaim: &k8score.PersistentVolumeClaimVolumeSource{ClaimName: name}}})
			c.VolumeMounts = append(c.VolumeMounts, k8score.VolumeMount{Name: name, MountPath: m.GetMountPath(), SubPath: m.GetSubPath()})
		}
	}
	if p := cfg.GetImagePullPolicy(); p != "" {
		c.ImagePullPolicy = k8score.PullPolicy(p)
	}
	if ns := cfg.GetNodeSelector(); ns != nil && setOnPod[pipelinespec.TaskConfigPassthroughType_KUBERNETES_NODE_SELECTOR] {
		if ns.GetNodeSelectorJson() != nil {
			ps.NodeSelector = map[string]string{"estimate": pad(e.o.runtimeParameterBytes)}
		} else {
			ps.NodeSelector = ns.GetLabels()
		}
	}
	if tols := cfg.GetTolerations(); tols != nil && setOnPod[pipelinespec.TaskConfigPassthroughType_KUBERNETES_TOLERATIONS] {
		for _, t := range tols {
			if t.GetTolerationJson() != nil {
				ps.Tolerations = append(ps.Tolerations, k8score.Toleration{Key: "estimate", Value: pad(e.o.runtimeParameterBytes)})
				continue
			}
			ps.Tolerations = append(ps.Tolerations, k8score.Toleration{
				Key: t.GetKey(), Operator: k8score.TolerationOperator(t.GetOperator()), Value: t.GetValue(),
				Effect: k8score.TaintEffect(t.GetEffect()), TolerationSeconds: t.TolerationSeconds,
			})
		}
	}
	for _, s := range cfg.GetSecretAsVolume() {
		name := s.GetSecretName()
		if s.GetSecretNameParameter() != nil {
			name = paramString(s.GetSecretNameParameter(), env)
		}
		optional := s.Optional != nil && *s.Optional
		if volumes {
			ps.Volumes = append(ps.Volumes, k8score.Volume{Name: name, VolumeSource: k8score.VolumeSource{
				Secret: &k8score.SecretVolumeSource{SecretName: name, Optional: &optional}}})
			c.VolumeMounts = append(c.VolumeMounts, k8score.VolumeMount{Name: name, MountPath: s.GetMountPath()})
		}
	}
	for _, s := range cfg.GetSecretAsEnv() {
		name := s.GetSecretName()
		if s.GetSecretNameParameter() != nil {
			name = paramString(s.GetSecretNameParameter(), env)
		}
		for _, kv := range s.GetKeyToEnv() {
			sel := &k8score.SecretKeySelector{Key: kv.GetSecretKey(), Optional: s.Optional}
			sel.Name = name
			if envOn {
				c.Env = append(c.Env, k8score.EnvVar{Name: kv.GetEnvVar(), ValueFrom: &k8score.EnvVarSource{SecretKeyRef: sel}})
			}
		}
	}
	for _, m := range cfg.GetConfigMapAsVolume() {
		name := m.GetConfigMapName()
		if m.GetConfigMapNameParameter() != nil {
			name = paramString(m.GetConfigMapNameParameter(), env)
		}
		optional := m.Optional != nil && *m.Optional
		if volumes {
			ps.Volumes = append(ps.Volumes, k8score.Volume{Name: name, VolumeSource: k8score.VolumeSource{
				ConfigMap: &k8score.ConfigMapVolumeSource{LocalObjectReference: k8score.LocalObjectReference{Name: name}, Optional: &optional}}})
			c.VolumeMounts = append(c.VolumeMounts, k8score.VolumeMount{Name: name, MountPath: m.GetMountPath()})
		}
	}
	for _, m := range cfg.GetConfigMapAsEnv() {
		name := m.GetConfigMapName()
		if m.GetConfigMapNameParameter() != nil {
			name = paramString(m.GetConfigMapNameParameter(), env)
		}
		for _, kv := range m.GetKeyToEnv() {
			sel := &k8score.ConfigMapKeySelector{Key: kv.GetConfigMapKey(), Optional: m.Optional}
			sel.Name = name
			if envOn {
				c.Env = append(c.Env, k8score.EnvVar{Name: kv.GetEnvVar(), ValueFrom: &k8score.EnvVarSource{ConfigMapKeyRef: sel}})
			}
		}
	}
	for _, s := range cfg.GetImagePullSecret() {
		name := s.GetSecretName()
		if s.GetSecretNameParameter() != nil {
			name = paramString(s.GetSecretNameParameter(), env)
		}
		ps.ImagePullSecrets = append(ps.ImagePullSecrets, k8score.LocalObjectReference{Name: name})
	}
	for _, f := range cfg.GetFieldPathAsEnv() {
		if envOn {
			c.Env = append(c.Env, k8score.EnvVar{Name: f.GetName(), ValueFrom: &k8score.EnvVarSource{
				FieldRef: &k8score.ObjectFieldSelector{FieldPath: f.GetFieldPath()}}})
		}
	}
	if t := cfg.GetActiveDeadlineSeconds(); t > 0 {
		ps.ActiveDeadlineSeconds = &t
	}
	for _, d := range cfg.GetEmptyDirMounts() {
		var size *k8sres.Quantity
		if d.GetSizeLimit() != "" {
			if q, err := k8sres.ParseQuantity(d.GetSizeLimit()); err == nil {
				size = &q
			}
		}
		ps.Volumes = append(ps.Volumes, k8score.Volume{Name: d.GetVolumeName(), VolumeSource: k8score.VolumeSource{
			EmptyDir: &k8score.EmptyDirVolumeSource{Medium: k8score.StorageMedium(d.GetMedium()), SizeLimit: size}}})
		c.VolumeMounts = append(c.VolumeMounts, k8score.VolumeMount{Name: d.GetVolumeName(), MountPath: d.GetMountPath()})
	}
	// The security context the SDK set (set_security_context), as k8s.go extendPodSpecPatch applies it with
	// no administrator defaults (the standard install sets none): the identity fields, and every
	// capability dropped.
	if sc := cfg.GetSecurityContext(); sc != nil {
		if c.SecurityContext == nil {
			c.SecurityContext = &k8score.SecurityContext{}
		}
		if sc.RunAsUser != nil {
			c.SecurityContext.RunAsUser = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			c.SecurityContext.RunAsGroup = sc.RunAsGroup
		}
		if sc.RunAsNonRoot != nil {
			c.SecurityContext.RunAsNonRoot = sc.RunAsNonRoot
		}
		c.SecurityContext.Capabilities = &k8score.Capabilities{Drop: []k8score.Capability{"ALL"}}
	}
	// Everything else (ephemeral volumes, affinity, shared memory, fields added later): twice its JSON size.
	raw, err := protojson.Marshal(cfg)
	if err != nil {
		return
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return
	}
	for _, k := range sortedKeys(fields) {
		if !mirroredK8sFields[k] {
			c.Env = append(c.Env, k8score.EnvVar{Name: "KFP_BACKEND_CHECK_ESTIMATE_" + k, Value: pad(2 * len(fields[k]))})
		}
	}
}
