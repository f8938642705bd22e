"""Batch payload version 3: poll blocks back to back, a tag dictionary sent by reference.

Version 2 repeats a timestamp, a sequence number and the tag dictionary in every batch.
Version 3 sends one timestamp per block (unless its readings differ), one sequence number
per block, and names the agent's dictionary by its hash; the dictionary itself travels only
when the agent believes the collector lacks it. Everything after the header may be zlib
compressed. docs/protocol.md describes the layout.
"""

import hashlib
import json
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field

from shared.blocks import Block, BlockFlags, little_endian
from shared.errors import WireError
from shared.wire import MAGIC, PREAMBLE, BatchIdentity, read_header

WIRE_V3 = 3
HASH_PATTERN = r"^[0-9a-f]{32}$"
BLOCK_TABLE_BYTES = 20  # first_seq int64, ts int64, n uint32
READING_BYTES = 14  # val float64, t uint32, q uint8, kind uint8


class BatchHeaderV3(BatchIdentity):
    """The JSON header of a version 3 batch."""

    blocks: int = Field(ge=1, description="Number of blocks; n >= blocks.")
    tags: str = Field(pattern=HASH_PATTERN, description="Hash of the agent's tag dictionary.")
    rts: bool = Field(default=False, description="Whether a per-reading ts column is sent.")
    sts: bool = Field(default=False, description="Whether the server timestamp column is sent.")
    z: bool = Field(default=False, description="Whether dictionary and body are zlib-compressed.")
    texts: list[str] = Field(
        default_factory=list, description="Values of kind text (strings, huge integers), in order."
    )

    def body_bytes(self) -> int:
        """The uncompressed body's length this header implies."""
        per_reading = READING_BYTES + 8 * self.rts + 8 * self.sts
        return self.blocks * BLOCK_TABLE_BYTES + self.n * per_reading


def dictionary_bytes(tags: Sequence[tuple[str, str, str]]) -> bytes:
    """The canonical JSON of a dictionary: device, name and type per tag index, columnar."""
    return json.dumps(
        {
            "device": [t[0] for t in tags],
            "name": [t[1] for t in tags],
            "type": [t[2] for t in tags],
        },
        separators=(",", ":"),
    ).encode()


def dictionary_hash(raw: bytes) -> str:
    """The name a dictionary is referred to by: 128 bits of its SHA-256, in hex."""
    return hashlib.sha256(raw.rstrip(b" ")).hexdigest()[:32]


def encode_batch_v3(
    agent: str,
    epoch: int,
    blocks: Sequence[Block],
    *,
    dict_hash: str,
    dictionary: bytes | None = None,
    compress: bool = True,
) -> bytes:
    """Concatenate blocks into a version 3 batch; send `dictionary` along when given."""
    n = sum(b.n for b in blocks)
    rts = any(b.flags & BlockFlags.RTS for b in blocks)
    sts = any(b.flags & BlockFlags.STS for b in blocks)
    texts = [text for b in blocks if b.flags & BlockFlags.TEXTS for text in b.texts()]
    header: dict[str, object] = {
        "agent": agent,
        "epoch": epoch,
        "batch": blocks[0].first_seq,
        "n": n,
        "blocks": len(blocks),
        "tags": dict_hash,
    }
    for flag, present in (("rts", rts), ("sts", sts), ("z", compress), ("texts", texts)):
        if present:
            header[flag] = present
    parts: list[bytes | memoryview] = [
        little_endian(array("q", [b.first_seq for b in blocks])),
        little_endian(array("q", [b.ts for b in blocks])),
        little_endian(array("I", [b.n for b in blocks])),
        *(b.column("val") for b in blocks),
    ]
    if rts:
        parts.extend(_timestamps(b) for b in blocks)
    if sts:
        parts.extend(_server_timestamps(b) for b in blocks)
    for name in ("t", "q", "kind"):
        parts.extend(b.column(name) for b in blocks)
    encoded_header = json.dumps(header, separators=(",", ":")).encode()
    inline = dictionary or b""
    if compress:
        inline += b" " * (-len(inline) % 8)
        rest = zlib.compress(b"".join([inline, *parts]), 1)
    else:
        # Pad so the body starts 8-byte aligned, where a reader can map its columns in place.
        if inline:
            inline += b" " * (-(PREAMBLE.size + len(encoded_header) + len(inline)) % 8)
        else:
            encoded_header += b" " * (-(PREAMBLE.size + len(encoded_header)) % 8)
        rest = b"".join([inline, *parts])
    preamble = PREAMBLE.pack(MAGIC, WIRE_V3, len(encoded_header), len(inline))
    return b"".join([preamble, encoded_header, rest])


def _timestamps(block: Block) -> bytes | memoryview:
    if block.flags & BlockFlags.RTS:
        return block.column("ts")
    return little_endian(array("q", [block.ts])) * block.n


def _server_timestamps(block: Block) -> bytes | memoryview:
    if block.flags & BlockFlags.STS:
        return block.column("sts")
    return bytes(8 * block.n)


@dataclass(frozen=True, slots=True)
class SectionsV3:
    """A version 3 payload cut into its parts, decompressed, lengths checked."""

    header: BatchHeaderV3
    dictionary: bytes  # empty when the batch only names its dictionary
    body: memoryview


def split_v3(raw: bytes, max_inflated: int | None = None) -> SectionsV3:
    """Check a version 3 payload's header and lengths; inflate it if compressed.

    With `max_inflated`, a header implying a longer dictionary and body is refused before
    anything is inflated.
    """
    _, version, header_length, dictionary_length = PREAMBLE.unpack_from(raw)
    if version != WIRE_V3:
        raise WireError(f"expected wire version {WIRE_V3}, not {version}", reason="version")
    header_end = PREAMBLE.size + header_length
    if header_end > len(raw):
        raise WireError("header runs past the end", reason="malformed")
    header = read_header(raw, header_end, BatchHeaderV3)
    if header.blocks > header.n:
        raise WireError(f"{header.blocks} blocks cannot hold {header.n} readings", reason="schema")
    expected = dictionary_length + header.body_bytes()
    if max_inflated is not None and expected > max_inflated:
        raise WireError(
            f"dictionary and body would take {expected} bytes; at most {max_inflated} are allowed",
            reason="too_large",
        )
    rest: bytes | memoryview = memoryview(raw)[header_end:]
    if header.z:
        inflater = zlib.decompressobj()
        try:
            # Never inflate past what the header announces: a small payload must not be
            # able to claim gigabytes of memory.
            rest = inflater.decompress(rest, expected + 1)
        except zlib.error as exc:
            raise WireError(
                f"compressed sections do not inflate: {exc}", reason="malformed"
            ) from exc
        if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
            raise WireError(
                f"compressed sections inflate to more than the {expected} bytes the header"
                " implies, or do not end",
                reason="schema",
            )
    if len(rest) != expected:
        raise WireError(
            f"dictionary and body have {len(rest)} bytes; the header implies {expected}",
            reason="schema",
        )
    view = memoryview(rest)
    dictionary = bytes(view[:dictionary_length])
    if dictionary and dictionary_hash(dictionary) != header.tags:
        raise WireError("the dictionary sent does not match its hash", reason="schema")
    return SectionsV3(header, dictionary, view[dictionary_length:])
