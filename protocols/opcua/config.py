"""Configuration of an OPC UA server and the nodes read from it."""

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.config import Duration, StrictModel, require_unique
from shared.readings import DataType

NODE_ID = re.compile(r"^(?:(?:nsu=[^;]+|ns=\d+);)?(?:i=\d+|s=.+|g=[0-9a-fA-F-]{36}|b=.+)$")


class OpcUaTag(StrictModel):
    """One variable node."""

    name: str = Field(min_length=1, max_length=200, description="Tag name, unique per device.")
    node: str = Field(
        description="Node id; prefer `nsu=<namespace URI>;s=...` over a namespace index."
    )
    type: DataType | None = Field(
        default=None, description="Expected data type; taken from the server's value if omitted."
    )

    @field_validator("node")
    @classmethod
    def _check_node(cls, node: str) -> str:
        if not NODE_ID.match(node):
            raise ValueError(
                "expected a node id such as 'nsu=urn:example;s=Line1.Speed' or 'ns=2;i=7'"
            )
        return node


class OpcUaDevice(StrictModel):
    """An OPC UA server polled on an interval."""

    type: Literal["opcua"] = Field(description="Selects the OPC UA driver.")
    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^/]+$",
        description="Device name, unique per agent; no '/'.",
    )
    endpoint: str = Field(
        pattern=r"^opc\.tcp://", description="Endpoint URL, opc.tcp://host:port/path."
    )
    poll_interval: Duration = Field(default=1.0, gt=0, description="Time between polls.")
    timeout: Duration = Field(default=4.0, gt=0, description="Per-request timeout.")
    max_nodes_per_read: int = Field(
        default=1000, ge=1, description="Upper bound on nodes per Read; the server's limit wins."
    )
    tags: list[OpcUaTag] = Field(min_length=1, description="Nodes to read.")

    @model_validator(mode="after")
    def _unique_tags(self) -> "OpcUaDevice":
        require_unique((tag.name for tag in self.tags), "tag names")
        return self
