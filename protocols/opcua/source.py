"""Reading an OPC UA server: nodes by namespace URI or browse path, polled or subscribed."""

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509

from protocols.base import (
    DeviceState,
    DeviceUnreachable,
    SourceError,
    WriteFailed,
    WriteRefused,
)
from protocols.opcua.config import PATH_ELEMENT, OpcUaDevice, OpcUaIdentity, OpcUaSecurity, OpcUaTag
from protocols.opcua.trust import (
    TrustFolder,
    TrustStoreError,
    load_trust_folder,
    subject,
    thumbprint,
)
from protocols.writes import check_write
from shared.clock import Clock
from shared.invariants import required
from shared.readings import DataType, Quality, Reading, Value, datetime_to_us, value_fits

log = logging.getLogger(__name__)

VARIANT_OF = {
    DataType.BOOL: ua.VariantType.Boolean,
    DataType.INT16: ua.VariantType.Int16,
    DataType.UINT16: ua.VariantType.UInt16,
    DataType.INT32: ua.VariantType.Int32,
    DataType.UINT32: ua.VariantType.UInt32,
    DataType.INT64: ua.VariantType.Int64,
    DataType.UINT64: ua.VariantType.UInt64,
    DataType.FLOAT32: ua.VariantType.Float,
    DataType.FLOAT64: ua.VariantType.Double,
    DataType.STRING: ua.VariantType.String,
}
TYPE_OF_VARIANT: dict[ua.VariantType, DataType] = {
    **{variant: data_type for data_type, variant in VARIANT_OF.items()},
    ua.VariantType.SByte: DataType.INT16,
    ua.VariantType.Byte: DataType.UINT16,
}
POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
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


# Timestamps outside these bounds are not times a machine measured: OPC UA's null DateTime
# (1601-01-01), its maximum (9999-12-31, seen from real servers after a write), clocks never set.
VALID_FROM_US = datetime_to_us(datetime(2000, 1, 1, tzinfo=UTC))
VALID_UNTIL_US = datetime_to_us(datetime(2100, 1, 1, tzinfo=UTC))


def _valid_us(moment: datetime | None) -> int | None:
    """A timestamp in microseconds, or None if it is missing, null or out of range."""
    if moment is None:
        return None
    if moment.tzinfo is None:  # OPC UA times are UTC
        moment = moment.replace(tzinfo=UTC)
    us = datetime_to_us(moment)
    return us if VALID_FROM_US <= us < VALID_UNTIL_US else None


def stamp_and_quality(data: ua.DataValue, poll_us: int) -> tuple[int, int | None, Quality]:
    """A DataValue's reading time, server time and quality, after OPC UA Part 4.

    The source timestamp is the reading's time. Without a valid one the value's time is not
    known: the server timestamp (else the poll time) stands in and the quality drops to
    uncertain. A server timestamp that is null or out of range counts as missing.
    """
    quality = quality_of(data.StatusCode)
    server_us = _valid_us(data.ServerTimestamp)
    source_us = _valid_us(data.SourceTimestamp)
    if source_us is not None:
        return source_us, server_us, quality
    if quality is not Quality.BAD:
        quality = Quality.UNCERTAIN
    return (server_us if server_us is not None else poll_us), server_us, quality


def data_type_of(type_id: ua.NodeId) -> DataType | None:
    """The data type of a node whose DataType attribute is one of the built-in types we read."""
    identifier = type_id.Identifier
    if type_id.NamespaceIndex != 0 or not isinstance(identifier, int):
        return None
    # The built-in DataType nodes i=1..25 are numbered like the variant types.
    try:
        return TYPE_OF_VARIANT.get(ua.VariantType(identifier))
    except ValueError:
        return None


async def read_attributes(
    client: Client, items: Sequence[tuple[ua.NodeId, AttributeIds]]
) -> list[ua.DataValue]:
    """One Read service call, asking for source and server timestamps both."""
    parameters = ua.ReadParameters()
    parameters.MaxAge = 0
    parameters.TimestampsToReturn = ua.TimestampsToReturn.Both
    parameters.NodesToRead = [
        ua.ReadValueId(NodeId=node_id, AttributeId=attribute) for node_id, attribute in items
    ]
    results: list[ua.DataValue] = await client.uaclient.read(parameters)
    return results


def _variant_value(data: ua.DataValue) -> Any:
    return data.Value.Value if data.Value is not None else None


class _TrustStore(TrustStore):
    """asyncua's trust store, filled from our folder loader, refusing without a traceback."""

    def __init__(self, folder: Path) -> None:
        super().__init__([folder], [])
        self._folder = folder
        self._contents = TrustFolder((), ())
        self._store: x509.verification.Store | None = None

    async def load(self) -> None:
        """Read the folder again (certificates may have been added since the last connect)."""
        self._contents = await asyncio.to_thread(load_trust_folder, self._folder)
        self._store = x509.verification.Store(list(self._contents.certificates))

    def is_trusted(self, certificate: x509.Certificate) -> bool:
        """The certificate is in the folder, or issued by a CA certificate there."""
        if self._store is None:
            return False
        verifier = self.policy_builder.store(self._store).build_client_verifier()
        try:
            verifier.verify(certificate, [])
        except x509.verification.VerificationError:
            return False
        return True

    def is_revoked(self, certificate: x509.Certificate) -> bool:
        """A revocation list in the folder lists the certificate."""
        return self._contents.is_revoked(certificate)


class ServerCertificateRefused(UaError):
    """The server's certificate failed validation; `status` says why."""

    def __init__(self, status: ua.StatusCode, certificate: x509.Certificate) -> None:
        super().__init__(status.name)
        self.status = status
        self.certificate = certificate


def _refusing_validator(validator: CertificateValidator) -> Any:
    """The validator, raising ServerCertificateRefused (asyncua logs a ServiceError each time)."""

    async def validate(certificate: x509.Certificate, server: ua.ApplicationDescription) -> None:
        try:
            await validator.validate(certificate, server)
        except ServiceError as exc:
            status = ua.StatusCode(ua.UInt32(exc.code))
            raise ServerCertificateRefused(status, certificate) from None

    return validate


async def prepare_client(client: Client, security: OpcUaSecurity, identity: OpcUaIdentity) -> None:
    """Set a client's session timeout, secure channel and user identity from configuration."""
    client.session_timeout = SESSION_TIMEOUT_MS
    if security.policy != "None":
        client.application_uri = security.application_uri
        store = _TrustStore(required(security.trust_store, "the trust store"))
        await store.load()
        client.certificate_validator = _refusing_validator(
            CertificateValidator(
                CertificateValidatorOptions.TIME_RANGE
                | CertificateValidatorOptions.TRUSTED
                | CertificateValidatorOptions.REVOKED
                | CertificateValidatorOptions.PEER_SERVER,
                store,
            )
        )
        await client.set_security(
            POLICIES[security.policy],
            certificate=required(security.certificate, "the agent's certificate"),
            private_key=required(security.private_key, "the agent's private key"),
            mode=getattr(ua.MessageSecurityMode, security.mode),
        )
    if identity.type == "username":
        client.set_user(required(identity.username, "the user name"))
        client.set_password(required(identity.password, "the password").get_secret_value())
    elif identity.type == "certificate":
        await client.load_client_certificate(
            str(required(identity.certificate, "the user certificate"))
        )
        await client.load_private_key(required(identity.private_key, "the user's private key"))


class _Changes:
    """Subscription handler: keeps data change notifications until the poller collects them."""

    def __init__(self, source: "OpcUaSource") -> None:
        self._source = source
        self.pending: list[Reading] = []
        self.failed: str | None = None

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        index = data.monitored_item.ClientHandle - 1
        tag = self._source.tags[index]
        self.pending.append(
            self._source.reading_of(tag, data.monitored_item.Value, self._source.now_us())
        )

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        self.failed = f"subscription status {status.Status}"


class OpcUaSource:
    """An OPC UA server whose configured nodes are read in batches or subscribed to."""

    def __init__(self, config: OpcUaDevice, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self.tags: Sequence[OpcUaTag] = config.tags
        self._client: Client | None = None
        self._node_ids: list[ua.NodeId | None] = []
        self._chunk = config.max_nodes_per_read
        # Types learnt from the server, so bad readings carry the same type as good ones.
        self._types: dict[str, DataType] = {t.name: t.type for t in config.tags if t.type}
        self._index = {tag.name: i for i, tag in enumerate(config.tags)}
        self._changes: _Changes | None = None
        self._subscription: Subscription | None = None
        self._state = DeviceState.DISCONNECTED
        self._refused = False  # the server's certificate was refused at the last connect

    @property
    def name(self) -> str:
        """The device's name."""
        return self._config.name

    @property
    def state(self) -> DeviceState:
        """Current connection state."""
        return self._state

    def now_us(self) -> int:
        """The clock's wall time."""
        return self._clock.time_us()

    async def connect(self) -> None:
        """Connect with the configured security, resolve nodes, and subscribe if configured."""
        self._state = DeviceState.CONNECTING
        config = self._config
        client = Client(config.endpoint, timeout=config.timeout)
        try:
            await prepare_client(client, config.security, config.identity)
            await client.connect()
        except ServerCertificateRefused as exc:
            await self._give_up(client)
            self._server_refused(exc)
            raise DeviceUnreachable(
                f"{self.name}: server certificate refused ({exc.status.name})"
            ) from exc
        except TrustStoreError as exc:
            await self._give_up(client)
            raise DeviceUnreachable(f"{self.name}: security.trust_store: {exc}") from exc
        except _CONNECT_ERRORS as exc:
            await self._give_up(client)
            raise DeviceUnreachable(
                f"{self.name}: cannot connect to {config.endpoint}: {exc!r}"
            ) from exc
        if self._refused:
            self._refused = False
            log.info("%s: the server's certificate is accepted again", self.name)
        try:
            self._node_ids = await self._resolve(client)
            self._chunk = await self._server_read_limit(client)
            await self._learn_types(client)
            if config.mode == "subscribe":
                await self._subscribe(client)
        except _CONNECT_ERRORS as exc:
            await self._give_up(client)
            raise DeviceUnreachable(f"{self.name}: cannot set up the session: {exc!r}") from exc
        self._client = client
        self._state = DeviceState.CONNECTED

    async def _give_up(self, client: Client) -> None:
        await _disconnect_quietly(client)
        self._state = DeviceState.DISCONNECTED

    def _server_refused(self, refused: ServerCertificateRefused) -> None:
        """Say once, not on every reconnect, which certificate is refused and how to trust it."""
        if self._refused:
            return
        self._refused = True
        certificate = refused.certificate
        log.error(
            "%s: refusing the server's certificate (%s): subject %s, SHA-256 %s; if it is the"
            " right server, trust it with: plantwire-agent trust %s --trust-store %s",
            self.name,
            refused.status.name,
            subject(certificate),
            thumbprint(certificate),
            self._config.endpoint,
            self._config.security.trust_store,
        )

    async def _resolve(self, client: Client) -> list[ua.NodeId | None]:
        """Node ids of every tag; None (and a warning) for one that does not resolve."""
        namespaces: list[str] = await client.get_namespace_array()
        resolved: list[ua.NodeId | None] = []
        for tag in self.tags:
            try:
                resolved.append(await self._resolve_one(client, namespaces, tag))
            except (LookupError, UaStatusCodeError) as exc:
                log.warning("%s/%s: %s; its readings will be bad", self.name, tag.name, exc)
                resolved.append(None)
        return resolved

    async def _resolve_one(self, client: Client, namespaces: list[str], tag: OpcUaTag) -> ua.NodeId:
        def index_of(uri: str) -> int:
            if uri not in namespaces:
                raise LookupError(f"the server has no namespace {uri!r}")
            return namespaces.index(uri)

        if tag.node is not None:
            text = tag.node
            if text.startswith("nsu="):
                namespace_uri, _, rest = text[4:].partition(";")
                text = f"ns={index_of(namespace_uri)};{rest}"
            return ua.NodeId.from_string(text)
        elements = []
        for element in required(tag.path, "the tag's browse path").strip("/").split("/"):
            match = PATH_ELEMENT.match(element)
            match = required(match, "a validated browse path element")
            uri: str | None = match.group("uri") or self._config.namespace
            if uri is None:
                raise LookupError(f"path element {element!r} needs {{uri}} or a device namespace")
            elements.append(f"{index_of(uri)}:{match.group('name')}")
        node = await client.nodes.objects.get_child(elements)
        return node.nodeid

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

    async def _learn_types(self, client: Client) -> None:
        """Take each untyped tag's type from its node's DataType, so writes work at once."""
        untyped = [
            i
            for i, (tag, node_id) in enumerate(zip(self.tags, self._node_ids, strict=True))
            if node_id is not None and tag.type is None
        ]
        per_read = max(1, self._chunk // 2)  # two attributes per node
        for start in range(0, len(untyped), per_read):
            chunk = untyped[start : start + per_read]
            items = [
                (node_id, attribute)
                for i in chunk
                if (node_id := self._node_ids[i]) is not None
                for attribute in (AttributeIds.DataType, AttributeIds.ValueRank)
            ]
            values = await read_attributes(client, items)
            for i, type_value, rank_value in zip(chunk, values[0::2], values[1::2], strict=True):
                type_id, rank = _variant_value(type_value), _variant_value(rank_value)
                # ValueRank -1, -2, -3 allow a scalar; 0 and above mean arrays, not read here.
                if isinstance(type_id, ua.NodeId) and (rank is None or rank < 0):
                    data_type = data_type_of(type_id)
                    if data_type is not None:
                        self._types[self.tags[i].name] = data_type

    async def _subscribe(self, client: Client) -> None:
        config = self._config
        self._changes = _Changes(self)
        self._subscription = await client.create_subscription(
            config.publishing_interval * 1000, self._changes
        )
        requests = []
        for i, (tag, node_id) in enumerate(zip(self.tags, self._node_ids, strict=True)):
            if node_id is None:
                continue
            parameters = ua.MonitoringParameters()
            parameters.ClientHandle = i + 1
            parameters.SamplingInterval = config.sampling_interval * 1000
            parameters.QueueSize = config.queue_size
            parameters.DiscardOldest = True
            if tag.deadband:
                data_filter = ua.DataChangeFilter()
                data_filter.Trigger = ua.DataChangeTrigger.StatusValue
                data_filter.DeadbandType = 1 if tag.deadband_type == "absolute" else 2
                data_filter.DeadbandValue = tag.deadband
                parameters.Filter = data_filter
            item = ua.MonitoredItemCreateRequest()
            item.ItemToMonitor = ua.ReadValueId(NodeId=node_id, AttributeId=AttributeIds.Value)
            item.MonitoringMode = ua.MonitoringMode.Reporting
            item.RequestedParameters = parameters
            requests.append(item)
        results = await self._subscription.create_monitored_items(requests)
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, ua.StatusCode):
                tag = self.tags[request.RequestedParameters.ClientHandle - 1]
                log.warning("%s/%s: cannot subscribe: %s", self.name, tag.name, result)

    async def read(self) -> list[Reading]:
        """Poll mode: read every node. Subscribe mode: the changes received since last call."""
        client = self._client
        if client is None:
            raise DeviceUnreachable(f"{self.name}: not connected")
        if self._changes is not None:
            return await self._collect(client, self._changes)
        readings: list[Reading] = []
        now_us = self._clock.time_us()
        unresolved = [i for i, node_id in enumerate(self._node_ids) if node_id is None]
        wanted = [i for i, node_id in enumerate(self._node_ids) if node_id is not None]
        for start in range(0, len(wanted), self._chunk):
            chunk = wanted[start : start + self._chunk]
            items = [
                (node_id, AttributeIds.Value)
                for i in chunk
                if (node_id := self._node_ids[i]) is not None
            ]
            try:
                values = await read_attributes(client, items)
            except _CONNECT_ERRORS as exc:
                self._state = DeviceState.DISCONNECTED
                raise DeviceUnreachable(f"{self.name}: read failed: {exc!r}") from exc
            now_us = self._clock.time_us()
            readings.extend(
                self.reading_of(self.tags[i], value, now_us)
                for i, value in zip(chunk, values, strict=True)
            )
        readings.extend(self._bad(self.tags[i], now_us) for i in unresolved)
        return readings

    async def _collect(self, client: Client, changes: _Changes) -> list[Reading]:
        if changes.failed is not None:
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(f"{self.name}: {changes.failed}")
        try:
            await client.check_connection()
        except _CONNECT_ERRORS as exc:
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(f"{self.name}: connection lost: {exc!r}") from exc
        readings, changes.pending = changes.pending, []
        return readings

    def reading_of(self, tag: OpcUaTag, data: ua.DataValue, now_us: int) -> Reading:
        """A reading from a DataValue, polled or notified: quality and times as Part 4 says."""
        ts_us, server_ts_us, quality = stamp_and_quality(data, now_us)
        variant = data.Value
        data_type = tag.type
        value: Value | None = None
        if variant is not None and variant.Value is not None:
            served_type = TYPE_OF_VARIANT.get(variant.VariantType)
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

    def _bad(self, tag: OpcUaTag, ts_us: int) -> Reading:
        data_type = self._types.get(tag.name, DataType.FLOAT64)
        return Reading(self.name, tag.name, data_type, ts_us, None, Quality.BAD)

    async def read_tag(self, tag_name: str) -> Value | None:
        """Read one tag's node now, whatever the mode (a subscription's changes stay queued)."""
        index = self._index.get(tag_name)
        if index is None:
            raise SourceError(f"{self.name}/{tag_name}: no such tag")
        client = self._client
        if client is None:
            raise DeviceUnreachable(f"{self.name}: not connected")
        node_id = self._node_ids[index]
        if node_id is None:
            raise SourceError(f"{self.name}/{tag_name}: its node did not resolve on the server")
        try:
            values = await read_attributes(client, [(node_id, AttributeIds.Value)])
        except _CONNECT_ERRORS as exc:
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(f"{self.name}: read failed: {exc!r}") from exc
        return self.reading_of(self.tags[index], values[0], self.now_us()).value

    async def write(self, tag_name: str, value: Value) -> None:
        """Write a writable tag's node, with the variant type the server expects."""
        index = self._index.get(tag_name)
        tag = self.tags[index] if index is not None else None
        data_type = self._types.get(tag_name) if tag else None
        if tag is not None and tag.writable and data_type is None:
            if self._client is None:  # types are learnt on connect
                raise DeviceUnreachable(f"{self.name}: not connected")
            raise WriteRefused(
                f"{self.name}/{tag_name}: the node's data type is not a built-in one Plantwire"
                " writes, and no value was read yet; set the tag's `type`"
            )
        check_write(self.name, tag, tag_name, data_type or DataType.FLOAT64, value)
        index = required(index, "the tag's index")
        data_type = required(data_type, "the tag's data type")
        node_id = self._node_ids[index] if index < len(self._node_ids) else None
        if self._client is None or node_id is None:
            raise DeviceUnreachable(f"{self.name}: not connected")
        if data_type.python_type is float:
            value = float(value)
        node = self._client.get_node(node_id)
        try:
            await node.write_value(ua.DataValue(ua.Variant(value, VARIANT_OF[data_type])))
        except UaStatusCodeError as exc:
            raise WriteFailed(f"{self.name}/{tag_name}: server refused the write: {exc}") from exc
        except _CONNECT_ERRORS as exc:
            self._state = DeviceState.DISCONNECTED
            raise DeviceUnreachable(f"{self.name}: write failed: {exc!r}") from exc
        log.info("%s/%s written: %r", self.name, tag_name, value)

    def unreachable_readings(self, ts_us: int) -> list[Reading]:
        """One bad reading per tag."""
        return [self._bad(tag, ts_us) for tag in self.tags]

    async def close(self) -> None:
        """Delete the subscription, close the session and the connection."""
        if self._client is not None:
            await _disconnect_quietly(self._client)
            self._client = None
        self._changes = None
        self._subscription = None
        self._state = DeviceState.DISCONNECTED


async def _disconnect_quietly(client: Client) -> None:
    try:
        await client.disconnect()
    except (*_CONNECT_ERRORS, AttributeError):
        log.debug("disconnect from an already broken OPC UA connection", exc_info=True)
