"""k8s/ against a real Kubernetes v1.37.2 API server (etcd + kube-apiserver on loopback, tests/k8s_apiserver.py).

* Every kustomization (base, overlays/gpu, overlays/s3, run-namespace) is applied server-side (dry run, so each
  one is judged as a first apply onto a cluster that holds only the namespaces: base and the overlays share names),
  strict field validation, every object accepted; base and run-namespace are then applied for real and read back.
* Pod Security admission: a Pod made from each Deployment/StatefulSet template is admitted (server dry run) in
  the ``restricted`` namespace; a privileged pod is refused there (and admitted where no policy is enforced).
* RBAC, decided by the server, for the pipeline service account: ``kubectl auth can-i`` impersonating it and with
  its own (static) token, over what the KFP 2.17.0 driver/launcher and the Argo v4.0.5 executor do (``RBAC``,
  with source citations) and what they must not; the allowed calls are then made with the token.
* Argo's full ``Workflow`` CRD (from the Argo Workflows Go module the KFP backend check builds with) is applied,
  and the Workflow the KFP 2.17.0 backend's compiler makes of each package of the default config (data,
  generation-0, both chain windows, report; run as autophagy-pipeline) is created (server dry run, strict) in
  ``kubeflow``: accepted, nothing pruned.
* The NetworkPolicies are stored as written, each one restricting egress (enforcing them needs a network plugin;
  the reachability matrices of test_k8s_manifests.py keep their meaning); the scratch PVC is accepted.
* Install: ``kubectl apply -k`` of a checkout without the generated credential files is refused naming the file;
  after k8s/make-secrets.sh it is accepted.
* The task pods the KFP 2.17.0 backend makes of a chain run (executor template + pod-spec-patch) pass Pod Security
  ``restricted`` in ``kubeflow``, and are refused without the security context the pipeline sets.

No controller manager runs, so the fixture creates what it would: each namespace's ``default`` ServiceAccount.

Time: fixture plus every test here, binaries cached: ~15 s on two cores (measured 12.4-14.6 s in pytest, 13-15 s
with the interpreter's start; the server is ready ~3 s after its start). A cold build of the binaries runs first,
inside the first test (7 min 40 s on two cores from empty Go caches, see k8s/README.md).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import k8s_helpers as h
import pytest
import yaml
from k8s_apiserver import PIPELINE_USER, k8s_apiserver  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(3600)  # a cold build of kube-apiserver and etcd runs in the first fixture

NAMESPACE, RUN_NAMESPACE = "autophagy", "kubeflow"
WORKLOAD_KUSTOMIZATIONS = ("base", "overlays/gpu", "overlays/s3")  # run-namespace makes no pods
KFP = "kubeflow/pipelines 2.17.0 backend/src/v2/"
ARGO = "argoproj/argo-workflows v4.0.5 "

#: (verb, resource[/name], extra kubectl arguments, allowed, why) for system:serviceaccount:kubeflow:autophagy-pipeline,
#: in namespace kubeflow unless the extra arguments name another scope.
#: Allowed rows: every Kubernetes API call the KFP 2.17.0 driver/launcher and Argo's executor make with the pod's
#: token for our pipelines (no PVC creation, no pipeline-job time placeholders, no Argo artifacts but the logs).
RBAC = [
    (
        "create",
        "workflowtaskresults.argoproj.io",
        (),
        True,
        ARGO + "workflow/executor/taskresult.go:95 createTaskResult (wait container, via executor.go:895, :938)",
    ),
    (
        "patch",
        "workflowtaskresults.argoproj.io",
        (),
        True,
        ARGO + "workflow/executor/taskresult.go:43 patchTaskResult, :61 patchTaskResultLabels (executor.go:867)",
    ),
    (
        "get",
        "pods",
        (),
        True,
        KFP + "component/launcher_v2.go:607 retryIndexFromPodAnnotation (:583-590: --publish_logs true and no "
        "KFP_RETRY_INDEX, which compiler/argocompiler/common.go:65 sets only with a retryStrategy); "
        "driver/k8s.go:1198 publishDriverExecution (PVC create/delete tasks only)",
    ),
    (
        "get",
        "configmaps/kfp-launcher",
        (),
        True,
        KFP + "config/env.go:73 FromConfigMap (driver/root_dag.go:103, component/importer_launcher.go:331); "
        "Forbidden is an error there, only NotFound falls back to defaults",
    ),
    (
        "get",
        "secrets/mlpipeline-minio-artifact",
        (),
        True,
        KFP + "objectstore/object_store.go:391 getS3BucketCredential (component/launcher_v2.go:269, :878, "
        "importer_launcher.go:310; name: config/env.go:41); " + ARGO + "workflow/executor/executor.go:788 "
        "GetSecrets, from workflow/artifacts/artifacts.go:49, :54 when the wait container archives the logs "
        "(cmd/argoexec/commands/wait.go:86; KFP's workflow-controller-configmap-patch.yaml: archiveLogs, "
        "this Secret)",
    ),
    # Not needed by any of them (Get only, never List/Watch), or never to be allowed.
    ("list", "pods", (), False, "KFP and Argo's executor only Get their own pod"),
    ("watch", "pods", (), False, "idem"),
    ("create", "pods", (), False, "pods are made by Argo's controller, not by the run"),
    ("delete", "pods", (), False, ""),
    ("create", "pods", ("--subresource=exec",), False, "no exec"),
    ("get", "pods", ("--subresource=exec",), False, "no exec (websocket upgrade)"),
    ("get", "pods", ("--subresource=log",), False, "no logs"),
    ("list", "secrets", (), False, "no other Secret of the namespace"),
    ("get", "secrets/autophagy-tracking-credentials", (), False, "the kubelet injects it as env"),
    ("get", "secrets/postgres-superuser", (), False, ""),
    ("list", "secrets", ("--all-namespaces",), False, "no Secret cluster-wide"),
    ("get", "secrets/mlpipeline-minio-artifact", ("--namespace", NAMESPACE), False, "nothing outside kubeflow"),
    ("list", "configmaps", (), False, "only kfp-launcher, by name"),
    ("get", "configmaps/autophagy-tracking", (), False, "the kubelet injects it as env"),
    ("create", "roles.rbac.authorization.k8s.io", (), False, "no RBAC objects"),
    ("create", "rolebindings.rbac.authorization.k8s.io", (), False, ""),
    ("create", "clusterroles.rbac.authorization.k8s.io", ("--all-namespaces",), False, ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ("--all-namespaces",), False, ""),
    (
        "get",
        "workflows.argoproj.io",
        (),
        False,
        KFP + "cmd/driver/main.go:178 reads its Workflow only for pipeline-job time placeholders, which we do not use",
    ),
    ("create", "persistentvolumeclaims", (), False, KFP + "driver/k8s.go:967 only for kfp.kubernetes.CreatePVC"),
]


def _list(objects: list[dict]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def _identity(obj: dict) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _items(stdout: str) -> list[dict]:
    """The objects of kubectl's ``-o json``: one object, a List, or (``create`` of several) objects in a row."""
    decoder, items, text, at = json.JSONDecoder(), [], stdout.strip(), 0
    while at < len(text):
        obj, at = decoder.raw_decode(text, at)
        items += obj["items"] if obj["kind"] == "List" else [obj]
        at = len(text) - len(text[at:].lstrip())
    return items


def _pod_from_template(workload: dict) -> dict:
    """The Pod a controller makes of a workload's template (a StatefulSet adds its claim templates' volumes)."""
    spec = copy.deepcopy(h.pod_spec(workload))
    name = workload["metadata"]["name"]
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volume = claim["metadata"]["name"]
        spec.setdefault("volumes", []).append(
            {"name": volume, "persistentVolumeClaim": {"claimName": f"{volume}-{name}-0"}}
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": spec,
        "metadata": {
            "name": f"{name}-0",
            "namespace": workload["metadata"]["namespace"],
            "labels": h.pod_template_labels(workload),
        },
    }


def _task_pod() -> dict:
    """A pipeline task's pod as Argo creates it: service account autophagy-pipeline, restricted settings."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "task", "namespace": RUN_NAMESPACE},
        "spec": {
            "serviceAccountName": "autophagy-pipeline",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example.com/ml/autophagy:test",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def cluster(k8s_apiserver):
    """The server, with namespaces autophagy and kubeflow (Pod Security ``restricted`` enforced) and the
    ``default`` ServiceAccounts the controller manager would make (the ServiceAccount admission plugin needs them)."""
    namespaces = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }
        for ns in (NAMESPACE, RUN_NAMESPACE)
    ]
    accounts = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}
        for ns in (NAMESPACE, RUN_NAMESPACE, "default")
    ]
    k8s_apiserver.kubectl("create", "-f", "-", stdin=_list(namespaces + accounts))
    return k8s_apiserver


@pytest.fixture(scope="module")
def applied(cluster):
    """base and run-namespace applied for real, and what a KFP install holds in kubeflow: ConfigMap kfp-launcher,
    Secret mlpipeline-minio-artifact (placeholder values) and a task pod running as autophagy-pipeline."""
    for kustomization in ("base", "run-namespace"):
        cluster.kubectl(
            "apply",
            "--server-side",
            "--validate=strict",
            "--field-manager=autophagy-test",
            "-f",
            "-",
            stdin=_list(h.render(kustomization)),
        )
    kfp = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kfp-launcher", "namespace": RUN_NAMESPACE},
            "data": {"defaultPipelineRoot": "minio://mlpipeline/v2/artifacts"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mlpipeline-minio-artifact", "namespace": RUN_NAMESPACE},
            "stringData": {"accesskey": "placeholder", "secretkey": "placeholder"},
        },
        _task_pod(),
    ]
    cluster.kubectl("create", "-f", "-", stdin=_list(kfp))
    return cluster


@pytest.fixture(scope="module")
def argo_crds(cluster) -> dict[str, dict]:
    """Argo's full CRDs for workflows and workflowtaskresults, applied and Established. They come from the
    github.com/argoproj/argo-workflows/v4 module at the version tests/kfp_backend/go.mod pins (v4.0.5)."""
    if shutil.which("go") is None:
        if os.environ.get("AUTOPHAGY_REQUIRE_K8S_SERVER") == "1":
            raise RuntimeError("`go` is needed to locate Argo's CRDs in the module cache")
        pytest.skip("`go` is needed to locate Argo's CRDs in the module cache")
    proc = subprocess.run(
        ["go", "mod", "download", "-json", "github.com/argoproj/argo-workflows/v4"],
        cwd=h.REPO_ROOT / "tests" / "kfp_backend",
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    module = json.loads(proc.stdout)
    assert module["Version"] == "v4.0.5", module
    crds = {}
    for name in ("workflows", "workflowtaskresults"):
        path = Path(module["Dir"]) / "manifests" / "base" / "crds" / "full" / f"argoproj.io_{name}.yaml"
        cluster.kubectl("apply", "--server-side", "--validate=strict", "-f", str(path))
        crds[name] = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 2.6 MB
    deadline = time.monotonic() + 60  # `kubectl wait` fails while a new CRD has no conditions yet
    while True:
        stored = _items(
            cluster.kubectl(
                "get", "-o", "json", "crd/workflows.argoproj.io", "crd/workflowtaskresults.argoproj.io"
            ).stdout
        )
        if all(
            any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"].get("conditions") or [])
            for crd in stored
        ):
            return crds
        assert time.monotonic() < deadline, [crd.get("status") for crd in stored]
        time.sleep(0.2)


# --- every kustomization, and Pod Security admission ----------------------------------------------------------


@pytest.mark.parametrize("kustomization", h.KUSTOMIZATIONS)
def test_every_object_of_the_kustomization_is_accepted(cluster, kustomization):
    objects = h.render(kustomization)
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "--field-manager=autophagy-test",
        "-o",
        "json",
        "-f",
        "-",
        stdin=_list(objects),
    )
    assert sorted(map(_identity, _items(proc.stdout))) == sorted(map(_identity, objects))
    assert "Warning" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("kustomization", WORKLOAD_KUSTOMIZATIONS)
def test_pod_templates_pass_the_restricted_profile(cluster, kustomization):
    pods = [_pod_from_template(w) for w in h.workloads(h.render(kustomization))]
    assert {p["metadata"]["name"] for p in pods} == {"mlflow-0", "postgres-0"}
    assert all(p["metadata"]["namespace"] == NAMESPACE for p in pods)
    proc = cluster.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-o", "json", "-f", "-", stdin=_list(pods)
    )
    assert len(_items(proc.stdout)) == len(pods)
    assert "Warning" not in proc.stderr, proc.stderr


def test_a_privileged_pod_is_refused_by_pod_security_admission(cluster):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": NAMESPACE},
        "spec": {
            "containers": [
                {"name": "main", "image": "registry.example.com/busybox:1", "securityContext": {"privileged": True}}
            ]
        },
    }
    refused = cluster.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False)
    print(refused.stderr.strip())
    assert refused.returncode != 0
    assert 'pods "privileged" is forbidden: violates PodSecurity "restricted:latest"' in refused.stderr
    assert 'privileged (container "main" must not set securityContext.privileged=true)' in refused.stderr
    # The same pod where no policy is enforced: the refusal above came from the namespace's Pod Security level.
    pod["metadata"]["namespace"] = "default"
    cluster.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))


# --- what is stored --------------------------------------------------------------------------------------------


def test_applied_objects_are_stored(applied):
    for kustomization in ("base", "run-namespace"):
        objects = h.render(kustomization)
        stored = _items(applied.kubectl("get", "-o", "json", "-f", "-", stdin=_list(objects)).stdout)
        assert sorted(map(_identity, stored)) == sorted(map(_identity, objects))
    namespace = json.loads(applied.kubectl("get", "namespace", NAMESPACE, "-o", "json").stdout)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_network_policies_are_stored_as_written(applied):
    written = {o["metadata"]["name"]: o["spec"] for o in h.render("base") if o["kind"] == "NetworkPolicy"}
    stored = _items(applied.kubectl("get", "networkpolicies", "-n", NAMESPACE, "-o", "json").stdout)
    assert {o["metadata"]["name"]: o["spec"] for o in stored} == written


def test_scratch_pvc_is_accepted(applied):
    pvc = json.loads(applied.kubectl("get", "pvc", "autophagy-scratch", "-n", RUN_NAMESPACE, "-o", "json").stdout)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert pvc["status"]["phase"] == "Pending"  # no provisioner here


# --- RBAC ------------------------------------------------------------------------------------------------------


def test_rbac_of_the_pipeline_service_account(applied, argo_crds):
    """Each row asked twice: impersonating the service account, and with its own token (token file)."""
    answers, wrong = [], []
    for verb, resource, extra, allowed, _ in RBAC:
        scope = () if {"--all-namespaces", "--namespace"} & set(extra) else ("--namespace", RUN_NAMESPACE)
        args = ("auth", "can-i", verb, resource, *scope, *extra)
        impersonated = applied.kubectl(*args, f"--as={PIPELINE_USER}", check=False)
        with_token = applied.kubectl(*args, user="pipeline", check=False)
        got = {p.stdout.strip() for p in (impersonated, with_token)}
        answers.append(f"{' '.join((verb, resource, *extra))}: {'/'.join(sorted(got))}")
        if got != {"yes" if allowed else "no"} or "Warning" in impersonated.stderr + with_token.stderr:
            wrong.append((answers[-1], impersonated.stderr, with_token.stderr))
    print("\n".join(answers))
    assert not wrong, wrong


def test_the_pipeline_token_makes_the_runtime_calls(applied, argo_crds):
    """The allowed rows as the REST calls the driver/launcher/executor make, with the service account's token."""

    def call(method: str, path: str, body: dict | None = None, **kwargs) -> dict:
        status, answer = applied.request(method, path, body, user="pipeline", **kwargs)
        assert status in (200, 201), (method, path, status, answer.get("message"))
        return answer

    core = f"/api/v1/namespaces/{RUN_NAMESPACE}"
    assert call("GET", f"{core}/pods/task")["metadata"]["uid"]
    assert call("GET", f"{core}/configmaps/kfp-launcher")["data"]
    assert call("GET", f"{core}/secrets/mlpipeline-minio-artifact")["data"]["accesskey"]
    results = f"/apis/argoproj.io/v1alpha1/namespaces/{RUN_NAMESPACE}/workflowtaskresults"
    name = "autophagy-chain-x7k2p-123"
    call(
        "POST",
        results,
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "WorkflowTaskResult",
            "metadata": {
                "name": name,
                "labels": {
                    "workflows.argoproj.io/workflow": "autophagy-chain-x7k2p",
                    "workflows.argoproj.io/report-outputs-completed": "false",
                },
            },
        },
    )
    patched = call(
        "PATCH",
        f"{results}/{name}",
        {"phase": "Succeeded", "outputs": {"exitCode": "0"}},
        content_type="application/merge-patch+json",
    )
    assert patched["phase"] == "Succeeded"
    status, answer = applied.request("GET", f"{core}/secrets/autophagy-tracking-credentials", user="pipeline")
    assert status == 403, answer


# --- Argo's Workflow CRD and the KFP backend's Workflow -------------------------------------------------------


def test_argo_workflow_crd_is_established(cluster, argo_crds):
    crd = json.loads(cluster.kubectl("get", "crd", "workflows.argoproj.io", "-o", "json").stdout)
    assert crd["spec"]["versions"] == argo_crds["workflows"]["spec"]["versions"]  # the full schema, not pruned


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, autophagy_exe) -> dict:
    """``autophagy pipeline compile`` of the default config (runs.json, with the package paths)."""
    out = tmp_path_factory.mktemp("packages")
    subprocess.run(
        [autophagy_exe, "pipeline", "compile", "-o", str(out), "--image", "registry.example.com/ml/autophagy:test"],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return json.loads((out / "runs.json").read_text())


@pytest.mark.parametrize("kind", ["data", "generation-0", "chain", "report"])
def test_kfp_backend_workflow_is_accepted(cluster, argo_crds, compiled, kind, tmp_path):
    """Every package of ``kind`` (the default config has two chain windows), with the parameters its run gets."""
    from autophagy.pipelines.cluster import load_pipeline_config
    from autophagy.pipelines.runs import KfpRun, arguments, chain_key, seed_key
    from kfp_backend_check import check
    from kfp_backend_check import skip_if_unavailable as backend_or_skip
    from test_pipeline_backend import handoffs

    from autophagy import plan

    backend_or_skip()
    cfg, cluster_options = load_pipeline_config(None, [])
    assert cfg.name == compiled["experiment"]  # the config `pipeline compile` used
    lam, seed = plan.chains(cfg)[0]
    packages = [p for p in compiled["packages"] if p["kind"] == kind]
    assert packages
    for i, package in enumerate(packages):  # the runs as tests/test_pipeline_backend.py makes them
        run = {
            "data": KfpRun("data", "data"),
            "generation-0": KfpRun("generation-0", seed_key(seed), seed=seed),
            "report": KfpRun("report", "report"),
        }.get(kind) or KfpRun(
            "chain", chain_key(lam, seed), lam=lam, seed=seed, first=max(2, package["first"]), last=package["last"]
        )
        workflow_path = tmp_path / f"workflow-{i}.json"
        report = check(
            Path(package["path"]),
            arguments(cfg, run, handoffs(cfg)),
            workflow_out=workflow_path,
            namespace=RUN_NAMESPACE,
            service_account=cluster_options.service_account,
        )
        assert report["valid"], report["error"]
        workflow = json.loads(workflow_path.read_text())
        created = json.loads(
            cluster.kubectl(
                "create", "--dry-run=server", "--validate=strict", "-o", "json", "-f", str(workflow_path)
            ).stdout
        )
        print(
            f"{Path(package['path']).name}: Workflow {created['metadata']['name']} accepted "
            f"({workflow_path.stat().st_size} bytes, {len(created['spec']['templates'])} templates)"
        )
        assert created["kind"] == "Workflow" and created["metadata"]["namespace"] == RUN_NAMESPACE
        assert created["metadata"]["name"].startswith(workflow["metadata"]["generateName"])
        assert created["spec"]["serviceAccountName"] == "autophagy-pipeline"
        assert created["spec"] == workflow["spec"]  # nothing pruned or changed by the CRD's schema


def _task_pod_manifests(pods: list[dict]) -> list[dict]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"task-{i}", "namespace": RUN_NAMESPACE},
            "spec": {
                "serviceAccountName": "autophagy-pipeline",
                "securityContext": pod["securityContext"],
                "initContainers": pod["initContainers"],
                "containers": pod["containers"],
                "volumes": pod["volumes"],
            },
        }
        for i, pod in enumerate(pods)
    ]


def test_task_pods_of_the_kfp_backend_pass_the_restricted_profile(applied, compiled, tmp_path):
    """Each task pod of a chain run, as the KFP 2.17.0 backend's compiler and driver make it (executor
    template + pod-spec-patch, tests/test_pipeline_security.py), is admitted by Pod Security ``restricted``
    in ``kubeflow``; the same pods without the security context the pipeline sets are refused (Argo's own
    wait/init containers come from its controller's configuration and are not part of this)."""
    from autophagy.pipelines.cluster import load_pipeline_config
    from kfp_backend_check import skip_if_unavailable as backend_or_skip
    from test_pipeline_security import executor_pods

    backend_or_skip()
    cfg, _ = load_pipeline_config(None, [])
    package = next(p for p in compiled["packages"] if p["kind"] == "chain")
    pods = _task_pod_manifests(executor_pods(package, cfg, tmp_path))
    assert len(pods) >= 10
    proc = applied.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-o", "json", "-f", "-", stdin=_list(pods)
    )
    assert len(_items(proc.stdout)) == len(pods)
    assert "Warning" not in proc.stderr, proc.stderr
    for pod in pods:  # before: no identity on the main container
        for key in ("runAsNonRoot", "runAsUser", "runAsGroup"):
            del pod["spec"]["containers"][0]["securityContext"][key]
    refused = applied.kubectl("create", "--dry-run=server", "-f", "-", stdin=_list(pods[:1]), check=False)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest": runAsNonRoot != true' in refused.stderr, refused.stderr


def test_install_without_generated_credentials_fails_and_with_them_applies(cluster, tmp_path):
    """`kubectl apply -k` as a user runs it: on a checkout without the credential files it refuses before
    sending anything, naming the file; after k8s/make-secrets.sh every object is accepted (server dry run)."""
    checkout = tmp_path / "k8s"
    shutil.copytree(h.K8S_DIR, checkout, ignore=shutil.ignore_patterns("*.env"))
    refused = cluster.kubectl("apply", "-k", str(checkout / "base"), "--server-side", "--dry-run=server", check=False)
    assert refused.returncode != 0 and "postgres-superuser.env" in refused.stderr, refused.stderr
    assert refused.stdout == ""
    made = subprocess.run([str(checkout / "make-secrets.sh")], capture_output=True, text=True, check=True)
    assert made.stdout.count("wrote ") == 4
    applied = cluster.kubectl(
        "apply",
        "-k",
        str(checkout / "base"),
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "--field-manager=autophagy-test",
    )
    assert "secret/mlflow-auth-" in applied.stdout and "deployment.apps/mlflow serverside-applied" in applied.stdout


def test_every_stored_network_policy_restricts_egress(applied):
    for namespace in (NAMESPACE, RUN_NAMESPACE):
        stored = _items(applied.kubectl("get", "networkpolicies", "-n", namespace, "-o", "json").stdout)
        assert stored, namespace
        for policy in stored:
            assert "Egress" in policy["spec"]["policyTypes"], (namespace, policy["metadata"]["name"])
