"""Locally generated key material for Flower's TLS and SuperNode authentication.

* TLS: a private CA (EC P-256, self-signed) in the orchestrator's home signs
  the SuperLink's server certificate (SANs: the address nodes reach the
  SuperLink at, from the orchestrator's configuration, plus loopback). Participants verify the SuperLink with the CA
  certificate (``flower-supernode --root-certificates``); the CA key never
  leaves the orchestrator's home.
* SuperNode authentication: each participant home holds an EC P-256 key in
  OpenSSH format (what ``flower-supernode --auth-supernode-private-key``
  loads); the orchestrator registers its public half with ``flwr supernode
  register`` before the node connects, and a SuperLink started with
  ``--enable-supernode-auth`` refuses any node whose key it does not know.

Private keys are written 0600 in 0700 directories.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALIDITY = dt.timedelta(days=365)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "collab"), x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclass(frozen=True)
class ServerTLS:
    """Paths of the SuperLink's CA certificate, server certificate and server key."""

    ca_cert: Path
    cert: Path
    key: Path


LOOPBACK = ("127.0.0.1", "localhost")


def tls_hosts(host: str) -> tuple[str, ...]:
    """SANs for a SuperLink advertised as ``host`` (an IP or a DNS name): that address first, then loopback."""
    return tuple(dict.fromkeys((host, *LOOPBACK)))


def server_sans(cert: Path) -> list[str]:
    """The subject alternative names of a PEM certificate, as strings (what a node's TLS check matches)."""
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in names]


def server_tls(folder: Path, hosts: tuple[str, ...] = LOOPBACK) -> ServerTLS:
    """The CA and the SuperLink certificate for ``hosts`` in ``folder``, generated once (reused while present)."""
    out = ServerTLS(folder / "ca.pem", folder / "superlink.pem", folder / "superlink.key")
    if out.ca_cert.exists() and out.cert.exists() and out.key.exists():
        return out
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("collab orchestrator CA"))
        .issuer_name(_name("collab orchestrator CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(folder / "ca.key", ca_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    _write_private(out.key, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    out.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


def node_auth_key(folder: Path) -> tuple[Path, Path]:
    """(private, public) OpenSSH EC P-256 key files of a SuperNode, generated once."""
    private, public = folder / "node_auth_key", folder / "node_auth_key.pub"
    if private.exists() and public.exists():
        return private, public
    key = ec.generate_private_key(ec.SECP256R1())
    _write_private(private, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return private, public
