"""The OPC UA trust store folder, and check-config reporting what is wrong with it."""

import datetime
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from agent.cli import main as agent_main
from protocols.opcua.trust import (
    TrustStoreError,
    load_trust_folder,
    store_certificate,
    subject,
    thumbprint,
)

NOW = datetime.datetime.now(datetime.UTC)


def self_signed(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def test_pem_bundles_and_der_files_under_any_usual_name(tmp_path: Path) -> None:
    one, two, three = (self_signed(name)[0] for name in ("one", "two", "three"))
    pem = one.public_bytes(Encoding.PEM) + two.public_bytes(Encoding.PEM)
    (tmp_path / "bundle.CRT").write_bytes(pem)
    (tmp_path / "three.cer").write_bytes(three.public_bytes(Encoding.DER))
    (tmp_path / "notes.txt").write_text("ignored: not named like a certificate")
    folder = load_trust_folder(tmp_path)
    assert {subject(c) for c in folder.certificates} == {"CN=one", "CN=two", "CN=three"}


def test_revocation_lists_in_the_folder_revoke_by_issuer_and_serial(tmp_path: Path) -> None:
    certificate, key = self_signed("revoked")
    other, _ = self_signed("kept")
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(certificate.serial_number)
        .revocation_date(NOW)
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(certificate.issuer)
        .last_update(NOW)
        .next_update(NOW + datetime.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "ca.der").write_bytes(certificate.public_bytes(Encoding.DER))
    (tmp_path / "ca.crl").write_bytes(crl.public_bytes(Encoding.PEM))
    folder = load_trust_folder(tmp_path)
    assert folder.is_revoked(certificate)
    assert not folder.is_revoked(other)


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("x"), "is not a folder"),
        (lambda p: p.mkdir(), "holds no certificate"),
        (lambda p: (p.mkdir(), (p / "server.crt").write_text("garbage")), "server.crt: not a PEM"),
    ],
)
def test_unusable_folders_are_refused_with_a_reason(
    tmp_path: Path, prepare: object, message: str
) -> None:
    store = tmp_path / "store"
    prepare(store)  # type: ignore[operator]
    with pytest.raises(TrustStoreError, match=message):
        load_trust_folder(store)


def test_stored_certificate_is_der_named_after_its_subject(tmp_path: Path) -> None:
    certificate, _ = self_signed("Press 7 / line 2")
    path = store_certificate(tmp_path / "new", certificate)
    assert path.parent == tmp_path / "new"
    assert path.name.startswith("Press_7_line_2-")
    assert path.suffix == ".der"
    assert x509.load_der_x509_certificate(path.read_bytes()) == certificate
    assert len(thumbprint(certificate).split(":")) == 32


def test_check_config_reports_the_trust_store_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "agent.der").write_bytes(b"")
    device = {
        "name": "press",
        "type": "opcua",
        "endpoint": "opc.tcp://press:4840",
        "security": {
            "policy": "Basic256Sha256",
            "certificate": str(tmp_path / "agent.der"),
            "private_key": str(tmp_path / "missing.pem"),
            "trust_store": str(tmp_path / "empty"),
        },
        "tags": [{"name": "t", "node": "i=2259"}],
    }
    config = {
        "agent": {"id": "a"},
        "buffer": {"path": str(tmp_path / "b.sqlite")},
        "mqtt": {"url": "mqtt://localhost:1883"},
        "devices": [{**device, "name": "plain", "security": {}}, device],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    assert agent_main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "devices.1.security.trust_store: " in err
    assert "empty holds no certificate" in err
    assert "devices.1.security.private_key: " in err
    assert "devices.0" not in err
    certificate, _ = self_signed("server")
    (tmp_path / "empty" / "server.cer").write_bytes(certificate.public_bytes(Encoding.DER))
    (tmp_path / "missing.pem").write_text("a key")
    assert agent_main(["check-config", str(path)]) == 0
    assert "OK: agent a, 2 devices" in capsys.readouterr().out


def test_an_unreadable_file_in_the_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "server.der").symlink_to(tmp_path / "moved-away.der")
    with pytest.raises(
        TrustStoreError, match=r"server\.der: cannot read: No such file or directory$"
    ):
        load_trust_folder(tmp_path)
