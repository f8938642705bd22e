"""Configuration of an OPC UA server connection and the nodes read from it."""

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from protocols.common import DeviceBase, TagBase, check_unique_tags
from shared.config import Duration, StrictModel
from shared.readings import DataType

NODE_ID = re.compile(r"^(?:(?:nsu=[^;]+|ns=\d+);)?(?:i=\d+|s=.+|g=[0-9a-fA-F-]{36}|b=.+)$")
PATH_ELEMENT = re.compile(r"^(?:\{(?P<uri>[^}]+)\})?(?P<name>[^/{}]+)$")
SECURITY_POLICIES = ("Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")


class OpcUaTag(TagBase):
    """One variable node, named by node id or by browse path."""

    node: str | None = Field(
        default=None,
        description="Node id; prefer `nsu=<namespace URI>;s=...` over `ns=<index>;...`.",
    )
    path: str | None = Field(
        default=None,
        description="Browse path from the Objects folder, e.g. `{urn:vendor}Line/Speed`;"
        " elements without `{uri}` use the device's `namespace`.",
    )
    type: DataType | None = Field(
        default=None, description="Expected data type; taken from the server's value if omitted."
    )
    deadband_type: Literal["absolute", "percent"] = Field(
        default="absolute",
        description="Subscriptions: `deadband` is absolute or a percent of the node's EURange.",
    )

    @field_validator("node")
    @classmethod
    def _check_node(cls, node: str | None) -> str | None:
        if node is not None and not NODE_ID.match(node):
            raise ValueError(
                "expected a node id such as 'nsu=urn:example;s=Line1.Speed' or 'ns=2;i=7'"
            )
        return node

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str | None) -> str | None:
        if path is not None:
            for element in path.strip("/").split("/"):
                if not PATH_ELEMENT.match(element):
                    raise ValueError(f"bad browse path element {element!r}")
        return path

    @model_validator(mode="after")
    def _one_address(self) -> "OpcUaTag":
        if (self.node is None) == (self.path is None):
            raise ValueError("give exactly one of `node` and `path`")
        return self


class OpcUaSecurity(StrictModel):
    """Secure channel: policy, mode, the agent's certificate, and the servers it trusts."""

    policy: Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = Field(
        default="None", description="Security policy; None sends everything in clear."
    )
    mode: Literal["Sign", "SignAndEncrypt"] = Field(
        default="SignAndEncrypt", description="Message security mode."
    )
    certificate: Path | None = Field(
        default=None, description="The agent's application certificate (DER or PEM)."
    )
    private_key: Path | None = Field(default=None, description="Its private key (PEM).")
    application_uri: str = Field(
        default="urn:plantwire:agent",
        description="Must equal the URI in the certificate's subjectAltName.",
    )
    trust_store: Path | None = Field(
        default=None,
        description="Folder of trusted server and CA certificates (PEM or DER, named .der, .pem,"
        " .crt or .cer) and revocation lists (.crl); a server whose certificate is not trusted"
        " is refused. `plantwire-agent trust` adds a server's certificate.",
    )

    @model_validator(mode="after")
    def _complete(self) -> "OpcUaSecurity":
        if self.policy != "None":
            missing = [
                key
                for key in ("certificate", "private_key", "trust_store")
                if getattr(self, key) is None
            ]
            if missing:
                raise ValueError(f"policy {self.policy} needs {', '.join(missing)}")
        return self


class OpcUaIdentity(StrictModel):
    """The user the agent's session runs as."""

    type: Literal["anonymous", "username", "certificate"] = Field(
        default="anonymous", description="Anonymous, user name and password, or X.509."
    )
    username: str | None = Field(default=None, description="For type username.")
    password: SecretStr | None = Field(default=None, description="For type username.")
    certificate: Path | None = Field(default=None, description="For type certificate.")
    private_key: Path | None = Field(default=None, description="For type certificate.")

    @model_validator(mode="after")
    def _complete(self) -> "OpcUaIdentity":
        needs = {
            "username": ("username", "password"),
            "certificate": ("certificate", "private_key"),
        }
        missing = [key for key in needs.get(self.type, ()) if getattr(self, key) is None]
        if missing:
            raise ValueError(f"identity {self.type} needs {', '.join(missing)}")
        return self


class OpcUaDevice(DeviceBase):
    """An OPC UA server, polled or subscribed to."""

    type: Literal["opcua"] = Field(description="Selects the OPC UA driver.")
    endpoint: str = Field(
        pattern=r"^opc\.tcp://", description="Endpoint URL, opc.tcp://host:port/path."
    )
    timeout: Duration = Field(default=4.0, gt=0, description="Per-request timeout.")
    mode: Literal["poll", "subscribe"] = Field(
        default="poll",
        description="poll: batched reads every poll_interval; subscribe: the server reports"
        " changes (collected every poll_interval).",
    )
    sampling_interval: Duration = Field(
        default=0.5, ge=0, description="Subscriptions: how often the server samples a node."
    )
    publishing_interval: Duration = Field(
        default=1.0, gt=0, description="Subscriptions: how often the server sends changes."
    )
    queue_size: int = Field(
        default=10, ge=1, description="Subscriptions: changes the server keeps per node."
    )
    max_nodes_per_read: int = Field(
        default=1000, ge=1, description="Upper bound on nodes per Read; the server's limit wins."
    )
    namespace: str | None = Field(
        default=None, description="Namespace URI for browse path elements without `{uri}`."
    )
    security: OpcUaSecurity = Field(
        default_factory=OpcUaSecurity, description="Secure channel settings."
    )
    identity: OpcUaIdentity = Field(
        default_factory=OpcUaIdentity, description="User identity of the session."
    )
    tags: list[OpcUaTag] = Field(min_length=1, description="Nodes to read.")

    @model_validator(mode="after")
    def _check_device(self) -> "OpcUaDevice":
        check_unique_tags(list(self.tags))
        percent = [t.name for t in self.tags if t.deadband_type == "percent" and t.deadband]
        if percent and self.mode == "poll":
            raise ValueError(f"percent deadbands need mode: subscribe (tags: {', '.join(percent)})")
        return self
