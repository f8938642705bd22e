"""No secret in the repository: every tracked file outside the listed test fixtures is scanned."""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.api.keys import new_key

ROOT = Path(__file__).resolve().parents[2]

# A value that stands for a secret instead of being one: a template or format field
# (`{password}`, `${DB_PASSWORD}`, `<key>`, `%(password)s`), an elision, or the word itself
# as in the documented shape `postgresql://user:password@host`.
_PLACEHOLDER = re.compile(r"(?i)^(?:[{$<%]|\*+$|\.\.\.|x+$|password$)")

RULES: dict[str, re.Pattern[str]] = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"(?i)aws_secret_access_key['\"]?\s*[:=]\s*['\"]?"
        r"(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
    ),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}"),
    "Slack token": re.compile(r"\bxox[abeoprs]-[A-Za-z0-9-]{10,}"),
    "Slack webhook": re.compile(r"hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/\w+"),
    # collector/api/keys.py: pwk_<8 hex prefix>_<token_urlsafe(24), 32 characters>.
    "Plantwire API key": re.compile(r"\bpwk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}"),
    "password in a URL": re.compile(
        r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:(?P<value>[^\s/@'\"]+)@[^\s/@'\"]"
    ),
    "secret assigned a literal": re.compile(
        r"(?i)\b[\w.-]*(?:password|passwd|secret|token|api_?key)[\w.-]*['\"]?\s*[:=]\s*"
        r"(?P<quote>['\"])(?P<value>[^'\"\s]{6,})(?P=quote)"
    ),
}

# Files that hold a secret on purpose, each with the reason; a listed file that no longer
# holds one fails the scan, so the list cannot outgrow its reasons.
FIXTURES: dict[str, str] = {
    "tests/unit/test_problems.py": (
        "a made-up database URL with a password, to check the 500 response never repeats it"
    ),
    "tests/integration/test_programs.py": (
        "made-up database and broker URLs with passwords, to check the logs never repeat them"
    ),
    "tests/integration/test_opcua_driver.py": (
        "the user and password of an OPC UA server the test itself starts"
    ),
    "tests/unit/test_config.py": "a made-up broker password, to check the environment sets it",
    "tests/ship/test_helm.py": "made-up credentials of external Secrets, to render the chart",
}


@dataclass(frozen=True)
class Finding:
    """One suspected secret; the value itself is never reported, only where it is."""

    path: str
    line: int
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}"


def scan(text: str, path: str = "<text>") -> list[Finding]:
    """Every suspected secret in `text`."""
    findings = []
    for rule, pattern in RULES.items():
        for match in pattern.finditer(text):
            value = match.groupdict().get("value")
            if value is not None and _PLACEHOLDER.match(value):
                continue
            line = text.count("\n", 0, match.start()) + 1
            findings.append(Finding(path, line, rule))
    return sorted(findings, key=lambda finding: (finding.line, finding.rule))


def tracked_files() -> list[str]:
    """The repository's files as git knows them (committed or staged), relative to its root."""
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    )
    return [name for name in listing.stdout.decode().split("\0") if name]


def scan_file(path: str) -> list[Finding]:
    """The findings in one tracked file; binary files (a NUL byte) and deleted ones are skipped."""
    file = ROOT / path
    if not file.is_file():
        return []  # deleted in the work tree, not yet in the index
    data = file.read_bytes()
    if b"\0" in data:
        return []
    return scan(data.decode("utf-8", errors="replace"), path)


def test_no_tracked_file_outside_the_fixtures_holds_a_secret() -> None:
    files = tracked_files()
    assert "pyproject.toml" in files  # the listing really is this repository
    findings = [finding for path in files if path not in FIXTURES for finding in scan_file(path)]
    assert not findings, "secrets in tracked files:\n" + "\n".join(map(str, findings))


@pytest.mark.parametrize("path", sorted(FIXTURES))
def test_every_listed_fixture_is_tracked_and_still_holds_what_it_is_listed_for(path: str) -> None:
    assert path in tracked_files()
    assert scan_file(path), f"{path} holds no secret any more: take it off the list"


# Built by concatenation so that this file does not hold the strings it checks for.
CAUGHT = [
    ("private key", "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEow..."),
    ("private key", "-----BEGIN " + "OPENSSH PRIVATE KEY-----"),
    ("private key", "-----BEGIN " + "PRIVATE KEY-----"),
    ("AWS access key id", "aws_access_key_id = " + "AKIA" + "Q3EGRIYNKX7W2B5L"),
    (
        "AWS secret access key",
        "aws_secret_access_key" + ": " + "q7Lm2/Xv9Rt4" + "Kp8Wz3+Bn6Yc1Hd5Fg0Js7Ae4Uoi",
    ),
    ("GitHub token", "token " + "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"),
    ("GitHub token", "github_pat_" + "11ABCDEFG0" + "a1B2c3D4e5" * 6),
    ("Slack token", "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("Slack webhook", "https://hooks.slack" + ".com/services/T0123ABCD/B0123ABCD/a1b2c3d4e5f6"),
    ("Plantwire API key", "Authorization: Bearer " + "pwk_3f9a1c07_" + "Zx8-q_" * 6),
    ("password in a URL", "postgresql://collector:" + "s3cr3t-pw" + "@db.plant:5432/plant"),
    ("secret assigned a literal", "password" + '="correct-horse-battery"'),
    ("secret assigned a literal", "  db_password" + ": 'correct-horse-battery'"),
    ("secret assigned a literal", '{"client_secret"' + ': "0123456789abcdef"}'),
]


@pytest.mark.parametrize(("rule", "text"), CAUGHT)
def test_the_scanner_catches_each_kind_of_secret(rule: str, text: str) -> None:
    assert rule in {finding.rule for finding in scan(text)}


def test_a_key_the_collector_makes_is_caught() -> None:
    key, _ = new_key()
    assert [finding.rule for finding in scan(f"KEY={key}")] == ["Plantwire API key"]


def test_findings_name_the_line_but_never_the_value() -> None:
    value = "correct-horse-" + "battery"
    (finding,) = scan(f"first line\nsecond line\npassword = '{value}'\n", "config/x.yaml")
    assert str(finding) == "config/x.yaml:3: secret assigned a literal"
    assert value not in str(finding)


PASSED = [
    'password = os.environ["PLANTWIRE_DB_PASSWORD"]',
    'password: ""',
    "password: '${PLANTWIRE_DB_PASSWORD}'",
    'url = f"postgresql://postgres:{password}@127.0.0.1:{port}/plant"',
    "postgresql://postgres@127.0.0.1:5432/plant",
    "libpq URL, postgresql://user:password@host:port/dbname.",
    "--set externalDatabase.url=postgresql://plantwire:PASSWORD@db:5432/plantwire",
    "url: postgresql://collector:<password>@db:5432/plant",
    "KEY=pwk_3f9a1c07_...   # the key that api-key create printed",
    "TEST_KEY = f\"pwk_7e57ab1e_{'k' * 32}\"",
    "token = secrets.token_urlsafe(24)",
    "-----BEGIN CERTIFICATE-----",
]


@pytest.mark.parametrize("text", PASSED)
def test_references_placeholders_and_certificates_are_not_secrets(text: str) -> None:
    assert scan(text) == []
