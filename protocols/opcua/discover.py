"""Browsing an OPC UA server into a ready-to-paste device configuration."""

import re
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.object_ids import ObjectIds

from protocols.opcua.source import SESSION_TIMEOUT_MS, data_type_of

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


async def discover(
    endpoint: str, *, depth: int = 8, include_server: bool = False, timeout: float = 10.0
) -> tuple[list[dict[str, Any]], list[str]]:
    """Browse from the Objects folder; return tag entries and notes on skipped variables."""
    client = Client(endpoint, timeout=timeout)
    client.session_timeout = SESSION_TIMEOUT_MS
    async with client:
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
                        tags.append(
                            {"name": tag_name(child_path), "node": text, "type": data_type.value}
                        )
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
