"""The edge's TLS certificate for the local stack: self-signed for localhost and 127.0.0.1,
made at first start (and again when it nears its end), kept in the state folder, never committed.
Clients trust it explicitly: curl --cacert var/gateway/tls/edge.crt https://localhost:8443/..."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def ensure_certificate(directory: Path) -> tuple[Path, Path]:
    certificate, private_key = directory / "edge.crt", directory / "edge.key"
    if certificate.exists() and private_key.exists():
        existing = x509.load_pem_x509_certificate(certificate.read_bytes())
        if existing.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=30):
            return certificate, private_key
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Clinic Mesh local edge")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    private_key.touch(mode=0o600)
    private_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return certificate, private_key
