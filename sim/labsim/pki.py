"""Lab CA, server certificates and SSH keys (EC / ed25519 for speed).

As PE since 2019.0 (puppet.com/docs/puppet/7/server/intermediate_ca; real-world-findings §1 row 2)
the CA that signs the servers is an intermediate under a self-signed root, and the CA bundle
(`ca.pem`) holds both: intermediate first, then root. Servers present only their own certificate,
so a client must trust both to verify them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(name: str, *, issuer: tuple[bytes, bytes] | None = None) -> tuple[bytes, bytes]:
    """A CA certificate and key: self-signed, or signed by `issuer` (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key: ec.EllipticCurvePrivateKey = key
    issuer_name = subject
    if issuer is not None:
        issuer_cert = x509.load_pem_x509_certificate(issuer[0])
        loaded = serialization.load_pem_private_key(issuer[1], password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        signer_key, issuer_name = loaded, issuer_cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    cert = builder.sign(signer_key, hashes.SHA256())
    return _pem_cert(cert), _pem_key(key)


def split_pem(bundle: bytes | str) -> list[str]:
    """The certificates of a PEM bundle, each as its own PEM text ([] when none parses)."""
    data = bundle.encode() if isinstance(bundle, str) else bundle
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        return []
    return [c.public_bytes(serialization.Encoding.PEM).decode() for c in certs]


def make_server_cert(
    ca_cert_pem: bytes, ca_key_pem: bytes, name: str, address: str
) -> tuple[bytes, bytes]:
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    short = name.split(".", 1)[0]
    sans: list[x509.GeneralName] = [x509.DNSName(name), x509.DNSName(short)]
    sans.append(x509.IPAddress(ipaddress.ip_address(address)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=1825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _pem_cert(cert), _pem_key(key)


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)
