"""Serving the simulated machine over OPC UA with asyncua's server."""

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server

from protocols.opcua.source import VARIANT_OF
from protocols.simulator.machine import Machine, SimTag
from shared.readings import Value, us_to_datetime

NAMESPACE_URI = "urn:plantwire:simulator"
SERVER_URI = "urn:plantwire:simulator:server"
# OPC UA's null DateTime ("no timestamp") and the largest one, which real servers have sent.
NULL_DATETIME = ua.DateTime(1601, 1, 1, tzinfo=UTC)
MAX_DATETIME = ua.DateTime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
_UNSET = object()


def node_name(tag: SimTag) -> str:
    """The string identifier of a tag's node, e.g. Machine.Temperature."""
    return f"Machine.{tag.opcua_name}"


@dataclass(frozen=True)
class OpcUaServerSecurity:
    """Secure endpoints and user accounts; the default is one unsecured, anonymous endpoint."""

    certificate: Path | None = None
    private_key: Path | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    allow_anonymous: bool = True


class _Users:
    """asyncua user manager: checks user names and passwords.

    Which token types are accepted at all (anonymous, user name, X.509) is set with the
    server's identity tokens; an X.509 user is accepted once asyncua verified its signature.
    """

    def __init__(self, security: OpcUaServerSecurity) -> None:
        self._security = security

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None:
            if self._security.users.get(username) == password:
                return User(role=UserRole.User, name=username)
            return None
        return User(role=UserRole.User)


def ua_datetime(moment: datetime) -> ua.DateTime:
    """An aware datetime as OPC UA's DateTime, in UTC."""
    moment = moment.astimezone(UTC)
    return ua.DateTime(
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
        tzinfo=UTC,
    )


async def prepare_server(server: Server, endpoint: str, security: OpcUaServerSecurity) -> None:
    """Initialise a simulator's asyncua server: endpoint, security, identities, quiet logs."""
    await server.init()
    server.set_endpoint(endpoint)
    server.set_server_name("Plantwire machine simulator")
    await server.set_application_uri(SERVER_URI)
    if security.certificate is not None and security.private_key is not None:
        await server.load_certificate(str(security.certificate))
        await server.load_private_key(security.private_key)
        server.set_security_policy(
            [
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
                ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
            ]
        )
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    tokens: list[type] = [ua.UserNameIdentityToken, ua.X509IdentityToken]
    if security.allow_anonymous:
        tokens.append(ua.AnonymousIdentityToken)
    server.set_identity_tokens(tokens)
    for name in ("asyncua.server", "asyncua.common", "asyncua.uaprotocol"):
        logging.getLogger(name).setLevel(logging.ERROR)
    server.subscribe_server_callback(CallbackType.PostRead, _return_asked_timestamps)


def new_server(security: OpcUaServerSecurity) -> Server:
    """An asyncua server checking user names and passwords against `security.users`."""
    return Server(user_manager=_Users(security))  # type: ignore[arg-type]


class OpcUaMachineServer:
    """An OPC UA server with one Machine object whose variables follow the simulated machine.

    Writable tags' nodes accept writes from clients, which the machine then takes over.
    Reads return only the timestamps the client asked for (TimestampsToReturn), as Part 4
    requires. Tags named in `broken_timestamps` are served as faulty servers serve them: the
    null DateTime as source timestamp and 9999-12-31 as server timestamp.
    """

    def __init__(
        self,
        machine: Machine,
        tags: Sequence[SimTag],
        host: str,
        port: int,
        security: OpcUaServerSecurity | None = None,
    ) -> None:
        self._machine = machine
        self._tags = tags
        self._security = security or OpcUaServerSecurity()
        self.endpoint = f"opc.tcp://{host}:{port}/plantwire/sim"
        self._server = new_server(self._security)
        self._node_ids: dict[str, ua.NodeId] = {}
        self._published: dict[str, object] = {}
        self._published_version = -1
        self.broken_timestamps: set[str] = set()

    async def start(self) -> None:
        """Create the address space and start listening."""
        server = self._server
        await prepare_server(server, self.endpoint, self._security)
        namespace = await server.register_namespace(NAMESPACE_URI)
        machine_object = await server.nodes.objects.add_object(
            ua.NodeId(ua.String("Machine"), ua.Int16(namespace)),
            ua.QualifiedName("Machine", namespace),
        )
        for tag in self._tags:
            node_id = ua.NodeId(ua.String(node_name(tag)), ua.Int16(namespace))
            variant = ua.Variant(self._machine.values[tag.name], VARIANT_OF[tag.data_type])
            variable = await machine_object.add_variable(
                node_id, ua.QualifiedName(tag.opcua_name, namespace), variant
            )
            if tag.writable:
                await variable.set_writable()
            self._node_ids[tag.name] = node_id
        await self.publish()
        await server.start()

    async def _take_client_writes(self) -> None:
        """Hand values that clients wrote to writable nodes over to the machine."""
        written: dict[str, Value] = {}
        for tag in self._tags:
            if not tag.writable:
                continue
            value = self._server.read_attribute_value(self._node_ids[tag.name])
            current = value.Value.Value if value.Value is not None else None
            if current is not None and current != self._published.get(tag.name, _UNSET):
                written[tag.name] = current
        if written:
            self._machine.set(self._machine.updated_us, **written)
            self._published.update(written)

    async def publish(self) -> None:
        """Write the values changed since the last publish, stamped with the machine's time."""
        await self._take_client_writes()
        machine = self._machine
        if machine.version == self._published_version:
            return
        moment = us_to_datetime(machine.updated_us) if machine.updated_us else datetime.now(UTC)
        stamp = ua_datetime(moment)
        for tag in self._tags:
            value = machine.values[tag.name]
            if self._published.get(tag.name, _UNSET) == value:
                continue
            broken = tag.name in self.broken_timestamps
            data = ua.DataValue(
                ua.Variant(value, VARIANT_OF[tag.data_type]),
                SourceTimestamp=NULL_DATETIME if broken else stamp,
                ServerTimestamp=MAX_DATETIME if broken else stamp,
            )
            await self._server.write_attribute_value(self._node_ids[tag.name], data)
            self._published[tag.name] = value
        self._published_version = machine.version

    async def stop(self) -> None:
        """Stop listening and close every session."""
        await self._server.stop()


async def _return_asked_timestamps(event: ServerItemCallback, dispatcher: Any) -> None:
    """Drop the timestamps a Read did not ask for (asyncua's server returns both regardless)."""
    wanted = event.request_params.TimestampsToReturn
    source = wanted in (ua.TimestampsToReturn.Source, ua.TimestampsToReturn.Both)
    server = wanted in (ua.TimestampsToReturn.Server, ua.TimestampsToReturn.Both)
    results: list[ua.DataValue] = event.response_params
    for i, data in enumerate(results):
        # A copy: the result is the address space's own DataValue.
        results[i] = dataclasses.replace(
            data,
            SourceTimestamp=data.SourceTimestamp if source else None,
            SourcePicoseconds=data.SourcePicoseconds if source else None,
            ServerTimestamp=data.ServerTimestamp if server else None,
            ServerPicoseconds=data.ServerPicoseconds if server else None,
        )
