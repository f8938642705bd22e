"""Log set-up shared by the programs: one line per event, timestamped, to stderr."""

import logging


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once for a program."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # pymodbus warns on every start that its datastore API changes in 4.0; we pin below 4.
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    for noisy in ("asyncua", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
