"""Serving certificates: generated with `cryptography` (self-managed CA), and reloaded without a
restart. gunicorn's gthread worker builds the TLS context for every accepted connection through
the `ssl_context` hook; the hook returns a cached context that is rebuilt when the certificate or
key file changes (checked at most once a second), so a rotated certificate is served from the
next handshake on, with no restart and no failed request. Files are read through symlinks, as a
Secret volume mounted without subPath presents them. TLS 1.2 is the floor."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pem:
    cert: bytes
    key: bytes


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def new_ca(*, common_name: str = "aim-engine-webhook-ca", days: int = 3650) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def new_serving_cert(ca: Pem, *, dns_names: Sequence[str], ip_addresses: Sequence[str] = (), days: int = 365) -> Pem:
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0] if dns_names else ip_addresses[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def not_after(cert_pem: bytes) -> float:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class ReloadingContext:
    """A server SSLContext that follows the certificate files."""

    def __init__(
        self, certfile: str, keyfile: str, *, check_interval: float = 1.0, on_load: Callable[[float], None] | None = None
    ) -> None:
        self.certfile, self.keyfile = certfile, keyfile
        self.check_interval = check_interval
        self.on_load = on_load
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] = ()
        self._checked = 0.0
        self._context = self._build()

    def _files_stamp(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for p in (self.certfile, self.keyfile):
            st = os.stat(p)  # follows symlinks: a Secret volume's ..data swap changes the target
            out += [os.path.realpath(p), st.st_mtime_ns, st.st_size, st.st_ino]
        return tuple(out)

    def _build(self) -> ssl.SSLContext:
        stamp = self._files_stamp()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.certfile, self.keyfile)
        ctx.set_alpn_protocols(["http/1.1"])
        self._stamp = stamp
        if self.on_load:
            self.on_load(not_after(Path(self.certfile).read_bytes()))
        return ctx

    def current(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked < self.check_interval:
            return self._context
        with self._lock:
            self._checked = now
            try:
                if self._files_stamp() != self._stamp:
                    self._context = self._build()
                    log.info("serving certificate reloaded from %s", self.certfile)
            except (OSError, ssl.SSLError, ValueError) as e:
                # A half-written rotation: keep serving the previous certificate, retry next check.
                log.warning("certificate reload failed, keeping the previous one: %s", e)
        return self._context
