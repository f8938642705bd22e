"""Polling an OPC UA server: node ids resolved by namespace URI, values read in batches."""

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from protocols.base import DeviceState, DeviceUnreachable
from protocols.opcua.config import OpcUaDevice, OpcUaTag
from shared.clock import Clock
from shared.readings import DataType, Quality, Reading, Value, datetime_to_us, value_fits

log = logging.getLogger(__name__)

_VARIANT_TYPES: dict[ua.VariantType, DataType] = {
    ua.VariantType.Boolean: DataType.BOOL,
    ua.VariantType.SByte: DataType.INT16,
    ua.VariantType.Byte: DataType.UINT16,
    ua.VariantType.Int16: DataType.INT16,
    ua.VariantType.UInt16: DataType.UINT16,
    ua.VariantType.Int32: DataType.INT32,
    ua.VariantType.UInt32: DataType.UINT32,
    ua.VariantType.Int64: DataType.INT64,
    ua.VariantType.UInt64: DataType.UINT64,
    ua.VariantType.Float: DataType.FLOAT32,
    ua.VariantType.Double: DataType.FLOAT64,
    ua.VariantType.String: DataType.STRING,
}
# Ten minutes: servers commonly cap the session timeout there, and warn if asked for more.
SESSION_TIMEOUT_MS = 600_000
_CONNECT_ERRORS = (OSError, asyncio.TimeoutError, UaError, ConnectionError)


def quality_of(status: ua.StatusCode | None) -> Quality:
    """Map an OPC UA status code onto a reading quality."""
    if status is None or status.is_good():
        return Quality.GOOD
    if status.is_uncertain():
        return Quality.UNCERTAIN
    return Quality.BAD


def _us(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # OPC UA times are UTC
        moment = moment.replace(tzinfo=UTC)
    return datetime_to_us(moment)


def timestamps_us(value: ua.DataValue, fallback_us: int) -> tuple[int, int | None]:
    """(source timestamp, else server timestamp, else the read time; server timestamp)."""
    server = _us(value.ServerTimestamp)
    source = _us(value.SourceTimestamp)
    return (source if source is not None else server or fallback_us), server


class OpcUaSource:
    """An OPC UA server whose configured nodes are read in as few requests as it allows."""

    def __init__(self, config: OpcUaDevice, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._client: Client | None = None
        self._node_ids: list[ua.NodeId] = []
        self._chunk = config.max_nodes_per_read
        # Types learnt from the server, so bad readings carry the same type as good ones.
        self._types: dict[str, DataType] = {t.name: t.type for t in config.tags if t.type}
        self._state = DeviceState.DISCONNECTED

    @property
    def name(self) -> str:
        """The device's name."""
        return self._config.name

    @property
    def state(self) -> DeviceState:
        """Current connection state."""
        return self._state

    async def connect(self) -> None:
        """Connect, open a session and resolve every node id."""
        self._state = DeviceState.CONNECTING
        client = Client(self._config.endpoint, timeout=self._config.timeout)
        client.session_timeout = SESSION_TIMEOUT_MS
        try:
            await client.connect()
        except _CONNECT_ERRORS as exc:
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(
                f"{self.name}: cannot connect to {self._config.endpoint}: {exc!r}"
            ) from exc
        try:
            self._node_ids = await self._resolve(client, self._config.tags)
            self._chunk = await self._server_read_limit(client)
        except _CONNECT_ERRORS as exc:
            await _disconnect_quietly(client)
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(f"{self.name}: cannot resolve node ids: {exc}") from exc
        self._client = client
        self._state = DeviceState.CONNECTED

    async def _resolve(self, client: Client, tags: Sequence[OpcUaTag]) -> list[ua.NodeId]:
        namespaces: list[str] = await client.get_namespace_array()
        node_ids = []
        for tag in tags:
            text = tag.node
            if text.startswith("nsu="):
                uri, _, rest = text[4:].partition(";")
                if uri not in namespaces:
                    raise UaError(f"tag {tag.name}: server has no namespace {uri!r}")
                text = f"ns={namespaces.index(uri)};{rest}"
            node_ids.append(ua.NodeId.from_string(text))
        return node_ids

    async def _server_read_limit(self, client: Client) -> int:
        node = client.get_node(
            ua.NodeId(ua.Int32(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead))
        )
        try:
            limit = int(await node.read_value())
        except UaError:
            return self._config.max_nodes_per_read
        if limit <= 0:
            return self._config.max_nodes_per_read
        return min(limit, self._config.max_nodes_per_read)

    async def read(self) -> list[Reading]:
        """Read every node's value attribute."""
        if self._client is None:
            raise DeviceUnreachable(f"{self.name}: not connected")
        readings: list[Reading] = []
        tags = self._config.tags
        for start in range(0, len(tags), self._chunk):
            chunk = self._node_ids[start : start + self._chunk]
            try:
                values = await self._client.uaclient.read_attributes(chunk, AttributeIds.Value)
            except _CONNECT_ERRORS as exc:
                self._state = DeviceState.DISCONNECTED
                raise DeviceUnreachable(f"{self.name}: read failed: {exc!r}") from exc
            now_us = self._clock.time_us()
            for tag, value in zip(tags[start : start + self._chunk], values, strict=True):
                readings.append(self._reading(tag, value, now_us))
        return readings

    def _reading(self, tag: OpcUaTag, data: ua.DataValue, now_us: int) -> Reading:
        ts_us, server_ts_us = timestamps_us(data, now_us)
        quality = quality_of(data.StatusCode)
        variant = data.Value
        data_type = tag.type
        value: Value | None = None
        if variant is not None and variant.Value is not None:
            served_type = _VARIANT_TYPES.get(variant.VariantType)
            data_type = data_type or served_type
            value = variant.Value
            if data_type in (DataType.FLOAT32, DataType.FLOAT64) and type(value) is int:
                value = float(value)
            if served_type is None or data_type is None or not value_fits(data_type, value):
                log.warning(
                    "%s/%s: value %r of type %s does not fit %s; reported as bad",
                    self.name,
                    tag.name,
                    value,
                    variant.VariantType.name,
                    data_type,
                )
                value, quality = None, Quality.BAD
        if value is None:
            quality = Quality.BAD
        data_type = data_type or self._types.get(tag.name, DataType.FLOAT64)
        self._types[tag.name] = data_type
        return Reading(self.name, tag.name, data_type, ts_us, value, quality, server_ts_us)

    def unreachable_readings(self, ts_us: int) -> list[Reading]:
        """One bad reading per tag."""
        return [
            Reading(
                self.name,
                tag.name,
                self._types.get(tag.name, DataType.FLOAT64),
                ts_us,
                None,
                Quality.BAD,
            )
            for tag in self._config.tags
        ]

    async def close(self) -> None:
        """Close the session and the connection."""
        if self._client is not None:
            await _disconnect_quietly(self._client)
            self._client = None
        self._state = DeviceState.DISCONNECTED


async def _disconnect_quietly(client: Client) -> None:
    try:
        await client.disconnect()
    except _CONNECT_ERRORS:
        log.debug("disconnect from an already broken OPC UA connection", exc_info=True)
