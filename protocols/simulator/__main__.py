"""Entry point of plantwire-sim: checks the drivers' libraries are installed, then runs."""

import sys

from shared.extras import require_extra


def main() -> int:
    """Run plantwire-sim."""
    require_extra("plantwire-sim", "agent", ["asyncua", "pymodbus"])
    from protocols.simulator.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
