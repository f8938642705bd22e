"""Log set-up shared by the programs: one line per event, timestamped, to stderr."""

import logging
from datetime import UTC, datetime


class IsoFormatter(logging.Formatter):
    """Log lines stamped in ISO 8601 with their UTC offset, e.g. 2026-11-26T14:03:11.123+00:00."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """The record's creation time in UTC, to the millisecond, offset included."""
        # UTC like the readings themselves, and with the offset so no reader has to guess.
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds")


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once for a program."""
    handler = logging.StreamHandler()
    handler.setFormatter(IsoFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # pymodbus warns on every start that its datastore API changes in 4.0 (we pin below 4),
    # and logs an ERROR on every request timeout; the driver reports a device's failures
    # itself, once each way, so only pymodbus's critical messages are worth a line.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    for noisy in ("asyncua", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
