"""The client of a Kubeflow Pipelines API server: reachability, authentication, readable errors.

Authentication uses the KFP SDK's own mechanisms, nothing autophagy-specific:

* ``token_path`` (or ``$KF_PIPELINES_SA_TOKEN_PATH``): a file holding a bearer token, re-read on
  every request (``kfp.client.ServiceAccountTokenVolumeCredentials``) -- a projected
  ServiceAccount token in a pod, or a file written by ``kubectl create token ...``;
* ``existing_token`` (or ``$KF_PIPELINES_TOKEN``): a bearer token obtained elsewhere, sent as
  ``Authorization: Bearer ...`` (``kfp.Client(existing_token=...)``);
* ``cookies`` (or ``$KF_PIPELINES_COOKIES``, or a file holding them): the ``Cookie`` header of a
  browser session behind Dex/oauth2-proxy in multi-user Kubeflow, e.g. ``authservice_session=...``
  or ``oauth2_proxy_kubeflow=...`` copied from the browser (``kfp.Client(cookies=...)``);
* none: a plain client (port-forward, or a cluster without auth); the KFP client's context
  file ``~/.config/kfp/context.json`` still supplies cookies/headers if you keep one.

The runs' pods use the ServiceAccount ``cluster.service_account`` (kfp-kubernetes 2.17.3 has no
per-task setter, so it is each run's ``service_account``; :class:`autophagy.pipelines.submit.KfpBackend`).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from autophagy.pipelines.errors import PipelineSubmitError

HOST_ENV = "KF_PIPELINES_ENDPOINT"  # the kfp SDK's own variable for the API host
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # the kfp SDK's own variable for a token file
TOKEN_ENV = "KF_PIPELINES_TOKEN"  # a bearer token (kept out of the command line, where `ps` shows it)
COOKIES_ENV = "KF_PIPELINES_COOKIES"  # the Cookie header of a Dex/oauth2-proxy session
HEALTHZ = "/apis/v2beta1/healthz"


def check_reachable(host: str, timeout: float = 10.0) -> None:
    """Fail fast, naming ``host``, when nothing answers HTTP there within ``timeout`` seconds.

    Any HTTP answer counts as reachable (an auth proxy's 302/401/403 included): only a refused
    or timed-out connection, a DNS failure or a TLS failure is reported here.
    """
    if not host.startswith(("http://", "https://")):
        raise PipelineSubmitError(f"KFP host must be an http:// or https:// URL, got {host!r}")
    try:
        with urllib.request.urlopen(host.rstrip("/") + HEALTHZ, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (TimeoutError, urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise PipelineSubmitError(
            f"cannot reach the Kubeflow Pipelines API at {host} ({reason}). Check --host (for a port-forward: "
            f"kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80, then --host http://localhost:8080)."
        ) from None


def read_cookie_file(path: str | Path) -> str:
    """The ``Cookie`` header kept in ``path`` (its text, stripped)."""
    try:
        text = Path(path).read_text().strip()
    except OSError as err:
        raise PipelineSubmitError(f"cannot read the cookie file {path} (--cookie-file): {err.strerror}") from None
    if not text:
        raise PipelineSubmitError(
            f"the cookie file {path} (--cookie-file) is empty; it should hold e.g. authservice_session=<value>"
        )
    return text


def make_client(
    host: str,
    namespace: str | None = None,
    existing_token: str | None = None,
    token_path: str | None = None,
    cookies: str | None = None,
) -> Any:
    """A ``kfp.Client`` for ``host`` with the SDK's standard authentication (module docstring)."""
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    existing_token = (existing_token or os.environ.get(TOKEN_ENV) or "").strip() or None
    cookies = (cookies or os.environ.get(COOKIES_ENV) or "").strip() or None
    for name, value in (("token", existing_token), ("cookies", cookies)):
        if value and any(c in value for c in "\r\n"):
            raise PipelineSubmitError(f"the {name} for the KFP API spans several lines; give one line")
    token_path = token_path or os.environ.get(TOKEN_PATH_ENV)
    credentials = None
    if not existing_token and token_path:
        if not Path(token_path).is_file():
            raise PipelineSubmitError(f"token file not found: {token_path} (--token-path / ${TOKEN_PATH_ENV})")
        credentials = ServiceAccountTokenVolumeCredentials(path=token_path)
    kwargs: dict[str, Any] = {
        "host": host,
        "existing_token": existing_token,
        "credentials": credentials,
        "cookies": cookies,
    }
    if namespace:
        kwargs["namespace"] = namespace
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "This client only works with KFP v2.0.0-beta.2 and later"
            return kfp.Client(**kwargs)
    except Exception as err:  # noqa: BLE001 - kfp raises ApiException, TimeoutError, urllib3 errors ...
        raise PipelineSubmitError(f"Kubeflow Pipelines at {host} did not accept the client: {describe(err)}") from None


def describe(err: Exception) -> str:
    status = getattr(err, "status", None)
    reason = getattr(err, "reason", None)
    if status:
        body = getattr(err, "body", None) or ""
        body = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
        hint = (
            " (authentication: --existing-token / $KF_PIPELINES_TOKEN, --cookies / --cookie-file / "
            "$KF_PIPELINES_COOKIES for a Dex session, or --token-path / $KF_PIPELINES_SA_TOKEN_PATH)"
            if status in (401, 403)
            else ""
        )
        return f"HTTP {status} {reason or ''}{hint} {body[:500]}".strip()
    return f"{type(err).__name__}: {err}"
