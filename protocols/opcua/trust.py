"""The trust store: a folder of server and CA certificates (PEM or DER) and revocation lists."""

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from shared.errors import ConfigError

CERTIFICATE_SUFFIXES = (".der", ".pem", ".crt", ".cer")
CRL_SUFFIXES = (".crl",)


class TrustStoreError(ConfigError):
    """The trust store folder is missing, empty, or holds a file that is not what its name says."""


@dataclass(frozen=True)
class TrustFolder:
    """What a trust store folder holds."""

    certificates: tuple[x509.Certificate, ...]
    revocation_lists: tuple[x509.CertificateRevocationList, ...]

    def is_revoked(self, certificate: x509.Certificate) -> bool:
        """Tell whether a revocation list of the certificate's issuer lists it."""
        return any(
            crl.issuer == certificate.issuer
            and crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
            for crl in self.revocation_lists
        )


_T = TypeVar("_T")


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data


def _load(path: Path, pem: Callable[[bytes], _T], der: Callable[[bytes], _T], what: str) -> _T:
    """Read a file and parse it as PEM or DER, whatever its name; TrustStoreError if neither."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustStoreError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return pem(data) if _is_pem(data) else der(data)
    except ValueError as exc:
        raise TrustStoreError(f"{path}: not a PEM or DER {what}") from exc


def read_certificates(path: Path) -> list[x509.Certificate]:
    """The certificates in one file, PEM (one or more) or DER, whatever its name."""
    return _load(
        path,
        x509.load_pem_x509_certificates,
        lambda data: [x509.load_der_x509_certificate(data)],
        "certificate",
    )


def _read_crl(path: Path) -> x509.CertificateRevocationList:
    return _load(path, x509.load_pem_x509_crl, x509.load_der_x509_crl, "revocation list")


def load_trust_folder(folder: Path) -> TrustFolder:
    """Every certificate and revocation list in the folder; raise TrustStoreError if it has none."""
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise TrustStoreError(f"{folder} {what}")
    certificates: list[x509.Certificate] = []
    revocation_lists: list[x509.CertificateRevocationList] = []
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if suffix in CERTIFICATE_SUFFIXES:
            certificates.extend(read_certificates(path))
        elif suffix in CRL_SUFFIXES:
            revocation_lists.append(_read_crl(path))
    if not certificates:
        raise TrustStoreError(
            f"{folder} holds no certificate ({', '.join(CERTIFICATE_SUFFIXES)} files);"
            " add the server's with: plantwire-agent trust opc.tcp://... --trust-store"
            f" {folder}"
        )
    return TrustFolder(tuple(certificates), tuple(revocation_lists))


def thumbprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, as colon-separated hex pairs."""
    digest = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def subject(certificate: x509.Certificate) -> str:
    """The certificate's subject, e.g. CN=simulator,O=Plant."""
    return certificate.subject.rfc4514_string()


def store_certificate(folder: Path, certificate: x509.Certificate) -> Path:
    """Save a certificate (DER) into the trust store under a name from its subject; return it."""
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else "server"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", common_name).strip("._") or "server"
    fingerprint = thumbprint(certificate).replace(":", "")[:16].lower()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-{fingerprint}.der"
    path.write_bytes(certificate.public_bytes(Encoding.DER))
    return path
