"""``--web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit's format.

The file format is the one every Prometheus exporter shares
(prometheus/exporter-toolkit ``docs/web-configuration.md``): ``tls_server_config``
(``cert_file``/``key_file`` or inline ``cert``/``key``, ``client_ca_file``/
``client_ca``, ``client_auth_type``, ``min_version``, ``max_version``),
``http_server_config.headers`` and ``basic_auth_users`` (bcrypt hashes). Keys
degrade does not implement (``cipher_suites``, ``curve_preferences``,
``client_allowed_sans``, ``rate_limit``, ...) are refused by name rather than
silently ignored: a security setting that is not applied must not look applied.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from degrade.errors import InputError

__all__ = ["WebConfig", "load_web_config"]

_TLS_KEYS = {
    "cert_file",
    "key_file",
    "cert",
    "key",
    "client_ca_file",
    "client_ca",
    "client_auth_type",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
}
_TLS_REFUSED = {"cipher_suites", "curve_preferences", "client_allowed_sans"}
_HEADERS = {
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
}
_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's tls.ClientAuthType names (exporter-toolkit passes them through)
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


@dataclass
class WebConfig:
    """What a web config file asks for (``None`` / empty: plain HTTP, no auth)."""

    path: str
    ssl_context: ssl.SSLContext | None = None
    basic_auth_users: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def auth(self):
        if not self.basic_auth_users:
            return None
        from ._http import basic_auth_checker

        return basic_auth_checker(self.basic_auth_users)


def _err(path, msg: str) -> InputError:
    return InputError(
        f"--web.config.file {path}: {msg} (format: prometheus/exporter-toolkit "
        "docs/web-configuration.md)"
    )


def load_web_config(path: str | os.PathLike) -> WebConfig:
    """Read and validate a web config file; one clear :class:`InputError` for anything wrong."""
    from degrade._optional import import_optional

    yaml = import_optional("yaml", "agent", package="pyyaml")
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise _err(p, f"cannot read it ({exc})") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _err(p, f"not valid YAML ({str(exc).splitlines()[0]})") from exc
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise _err(p, "expected a mapping at the top level")
    unknown = set(doc) - {"tls_server_config", "http_server_config", "basic_auth_users"}
    if unknown:
        raise _err(p, f"{', '.join(sorted(unknown))}: not supported by degrade's agent")
    cfg = WebConfig(path=str(p))
    tls = doc.get("tls_server_config")
    if tls:
        cfg.ssl_context = _ssl_context(p, tls)
    http = doc.get("http_server_config") or {}
    if not isinstance(http, dict) or set(http) - {"headers", "http2"}:
        raise _err(
            p,
            "http_server_config: only 'headers' (and 'http2', ignored: HTTP/1.1 only) are supported",
        )
    headers = http.get("headers") or {}
    if not isinstance(headers, dict) or set(headers) - _HEADERS:
        raise _err(p, f"http_server_config.headers: expected some of {sorted(_HEADERS)}")
    cfg.headers = {k: str(v) for k, v in headers.items() if v not in (None, "")}
    users = doc.get("basic_auth_users") or {}
    if not isinstance(users, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in users.items()
    ):
        raise _err(p, "basic_auth_users: expected a mapping of user name to bcrypt hash")
    for user, hashed in users.items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise _err(
                p,
                f"basic_auth_users.{user}: expected a bcrypt hash ($2y$...), e.g. from "
                "`htpasswd -nBC 10 '' | tr -d ':\\n'`",
            )
    if users:
        import_optional("bcrypt", "agent")
    cfg.basic_auth_users = dict(users)
    return cfg


def _pem_file(p, tls: dict[str, Any], file_key: str, inline_key: str, tmp: list[str]) -> str | None:
    if tls.get(file_key) and tls.get(inline_key):
        raise _err(p, f"tls_server_config: give {file_key} or {inline_key}, not both")
    if tls.get(inline_key):
        fd, name = tempfile.mkstemp(prefix="degrade-tls-", suffix=".pem")
        with os.fdopen(fd, "w") as f:
            f.write(str(tls[inline_key]))
        tmp.append(name)
        return name
    value = tls.get(file_key)
    if value is None:
        return None
    f = Path(value)
    if not f.is_absolute():
        f = p.parent / f  # exporter-toolkit resolves paths against the config file's directory
    if not f.is_file():
        raise _err(p, f"tls_server_config.{file_key}: {f} is not a readable file")
    return str(f)


def _ssl_context(p, tls: Any) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        raise _err(p, "tls_server_config: expected a mapping")
    refused = set(tls) & _TLS_REFUSED
    if refused:
        raise _err(
            p,
            f"tls_server_config.{', '.join(sorted(refused))}: not supported by degrade's agent; "
            "terminate TLS in a sidecar (e.g. kube-rbac-proxy) if you need it",
        )
    unknown = set(tls) - _TLS_KEYS - _TLS_REFUSED
    if unknown:
        raise _err(p, f"tls_server_config.{', '.join(sorted(unknown))}: unknown key")
    tmp: list[str] = []
    try:
        cert = _pem_file(p, tls, "cert_file", "cert", tmp)
        key = _pem_file(p, tls, "key_file", "key", tmp)
        if cert is None or key is None:
            raise _err(
                p,
                "tls_server_config: both a certificate (cert_file) and a key (key_file) are required",
            )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise _err(
                p, f"tls_server_config: cannot load the certificate and key ({exc})"
            ) from exc
        lo, hi = tls.get("min_version", "TLS12"), tls.get("max_version", "TLS13")
        for name, v in (("min_version", lo), ("max_version", hi)):
            if v not in _VERSIONS:
                raise _err(
                    p, f"tls_server_config.{name}: {v!r}, expected one of {sorted(_VERSIONS)}"
                )
        ctx.minimum_version, ctx.maximum_version = _VERSIONS[lo], _VERSIONS[hi]
        auth_type = tls.get("client_auth_type", "NoClientCert")
        if auth_type == "RequireAnyClientCert":
            raise _err(
                p,
                "tls_server_config.client_auth_type RequireAnyClientCert (a certificate nobody "
                "verifies) is not supported; use RequireAndVerifyClientCert",
            )
        if auth_type not in _CLIENT_AUTH:
            raise _err(
                p,
                f"tls_server_config.client_auth_type {auth_type!r}: expected one of "
                f"{sorted(_CLIENT_AUTH)}",
            )
        ca = _pem_file(p, tls, "client_ca_file", "client_ca", tmp)
        if _CLIENT_AUTH[auth_type] != ssl.CERT_NONE:
            if ca is None:
                raise _err(
                    p, f"tls_server_config.client_auth_type {auth_type} needs client_ca_file"
                )
            ctx.load_verify_locations(ca)
            ctx.verify_mode = _CLIENT_AUTH[auth_type]
        return ctx
    finally:
        for name in tmp:
            os.unlink(name)
