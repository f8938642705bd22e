"""Commissioning an OPC UA server: its certificate, and its variables as tag entries."""

import asyncio
import re
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto.uacrypto import x509_from_der
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError
from cryptography import x509

from protocols.base import DeviceUnreachable
from protocols.opcua.config import OpcUaIdentity, OpcUaSecurity
from protocols.opcua.source import (
    ServerCertificateRefused,
    data_type_of,
    prepare_client,
)
from protocols.opcua.trust import subject, thumbprint

_NETWORK_ERRORS = (OSError, asyncio.TimeoutError, UaError, ConnectionError)
_CURRENT_WRITE = 1 << ua.AccessLevel.CurrentWrite

_SERVER_OBJECT = ua.NodeId(ua.Int32(ObjectIds.Server))


def node_text(node_id: ua.NodeId, namespaces: list[str]) -> str:
    """A node id as `nsu=<uri>;...`, stable when the server renumbers its namespaces."""
    text: str = node_id.to_string()
    if node_id.NamespaceIndex == 0:
        return text
    _, _, identifier = text.partition(";")
    return f"nsu={namespaces[node_id.NamespaceIndex]};{identifier}"


def tag_name(path: list[str]) -> str:
    """A tag name from browse names: dots between levels, other punctuation to underscores."""
    return ".".join(re.sub(r"[^A-Za-z0-9_-]+", "_", part).strip("_") or "_" for part in path)


async def server_certificates(endpoint: str, *, timeout: float = 10.0) -> list[x509.Certificate]:
    """The distinct certificates a server names in its endpoints (GetEndpoints, no session)."""
    client = Client(endpoint, timeout=timeout)
    try:
        endpoints = await client.connect_and_get_server_endpoints()
    except _NETWORK_ERRORS as exc:
        raise DeviceUnreachable(f"cannot get the endpoints of {endpoint}: {exc!r}") from exc
    found: dict[str, x509.Certificate] = {}
    for description in endpoints:
        if description.ServerCertificate:
            # The field may hold a chain; the server's own certificate comes first.
            certificate = x509_from_der(description.ServerCertificate)  # type: ignore[no-untyped-call]
            found.setdefault(thumbprint(certificate), certificate)
    return list(found.values())


async def _writable(node: Node) -> bool:
    """AccessLevel and UserAccessLevel both allow this session's user to write the value."""
    for attribute in (AttributeIds.AccessLevel, AttributeIds.UserAccessLevel):
        data = await node.read_attribute(attribute)
        level = data.Value.Value if data.Value is not None else None
        if not isinstance(level, int) or not level & _CURRENT_WRITE:
            return False
    return True


async def discover(
    endpoint: str,
    *,
    security: OpcUaSecurity | None = None,
    identity: OpcUaIdentity | None = None,
    depth: int = 8,
    include_server: bool = False,
    timeout: float = 10.0,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Browse from the Objects folder; return tag entries and notes on skipped variables."""
    client = Client(endpoint, timeout=timeout)
    await prepare_client(client, security or OpcUaSecurity(), identity or OpcUaIdentity())
    try:
        await client.connect()
    except ServerCertificateRefused as exc:
        certificate = exc.certificate
        raise DeviceUnreachable(
            f"{endpoint}: the server's certificate is refused ({exc.status.name}): subject"
            f" {subject(certificate)}, SHA-256 {thumbprint(certificate)}; if it is the right"
            f" server, trust it with: plantwire-agent trust {endpoint} --trust-store DIR"
        ) from exc
    except _NETWORK_ERRORS as exc:
        raise DeviceUnreachable(f"cannot connect to {endpoint}: {exc!r}") from exc
    try:
        return await _browse(client, depth=depth, include_server=include_server)
    except _NETWORK_ERRORS as exc:
        raise DeviceUnreachable(f"{endpoint}: browsing failed: {exc!r}") from exc
    finally:
        await client.disconnect()


async def _browse(
    client: Client, *, depth: int, include_server: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    namespaces: list[str] = await client.get_namespace_array()
    tags: list[dict[str, Any]] = []
    skipped: list[str] = []
    seen: set[ua.NodeId] = set()

    async def visit(node: Node, path: list[str], level: int) -> None:
        for child in await node.get_children():
            if child.nodeid in seen or (not include_server and child.nodeid == _SERVER_OBJECT):
                continue
            seen.add(child.nodeid)
            name = (await child.read_browse_name()).Name
            node_class = await child.read_node_class()
            child_path = [*path, name]
            if node_class == ua.NodeClass.Variable:
                type_id = await child.read_data_type()
                data_type = data_type_of(type_id)
                text = node_text(child.nodeid, namespaces)
                if data_type is None:
                    skipped.append(f"{text} ({'/'.join(child_path)}): type {type_id}")
                else:
                    tag: dict[str, Any] = {
                        "name": tag_name(child_path),
                        "node": text,
                        "type": data_type.value,
                    }
                    if await _writable(child):
                        tag["writable"] = True
                    tags.append(tag)
            if level < depth and node_class in (ua.NodeClass.Object, ua.NodeClass.Variable):
                await visit(child, child_path, level + 1)

    await visit(client.nodes.objects, [], 1)
    taken: dict[str, int] = {}
    for tag in tags:
        count = taken.get(tag["name"], 0)
        taken[tag["name"]] = count + 1
        if count:
            tag["name"] = f"{tag['name']}_{count + 1}"
    return tags, skipped
