"""TLS for the sandbox Kubernetes API: a generated CA and a serving certificate.

kubectl (like every client-go program) refuses to send a bearer token over plain http,
so the sandbox serves HTTPS as a real apiserver does: a throw-away CA signs a serving
certificate for ``127.0.0.1``/``localhost``, and the kubeconfig carries the CA as
``certificate-authority-data`` so clients verify the server without ``insecure``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from core import certbuild


@dataclass(frozen=True)
class ServingTls:
    """Files of one sandbox server's TLS: ``ca_file`` (what clients trust),
    ``cert_file`` and ``key_file`` (what the server presents)."""

    ca_pem: str
    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """An SSL context trusting only the sandbox CA (for httpx in tests)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def make_serving_tls(directory: str | Path, *, hosts: tuple[str, ...] = ()) -> ServingTls:
    """Generates a CA (``kubernetes-ca`` as kubeadm names it) and a serving certificate
    for ``kube-apiserver`` valid for 127.0.0.1, ::1, localhost and ``hosts``; writes the
    PEM files into ``directory`` (keys mode 0600)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certbuild.ca_builder(
        ca_key.public_key(),
        certbuild.subject("kubernetes-ca"),
        start=now,
        days=30,
        path_length=None,
        usage=certbuild.key_usage(key_cert_sign=True, digital_signature=True),
    ).sign(ca_key, hashes.SHA256())
    key = ec.generate_private_key(ec.SECP256R1())
    dns_names = ["localhost", "kubernetes.default.svc"]
    ips = ["127.0.0.1", "::1"]
    for host in hosts:
        try:
            ips.append(str(ipaddress.ip_address(host)))
        except ValueError:
            dns_names.append(host)
    cert = certbuild.server_builder(
        key.public_key(),
        common_name="kube-apiserver",
        issuer=ca.subject,
        issuer_ski=x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
        start=now,
        end=now + dt.timedelta(days=30),
        dns_names=dns_names,
        ip_addresses=ips,
    ).sign(ca_key, hashes.SHA256())
    ca_pem = certbuild.cert_pem(ca).encode()
    return ServingTls(
        ca_pem=ca_pem.decode(),
        ca_file=_write(out / "ca.crt", ca_pem, 0o644),
        cert_file=_write(out / "apiserver.crt", certbuild.cert_pem(cert).encode(), 0o644),
        key_file=_write(out / "apiserver.key", certbuild.key_pem(key).encode()),
    )
