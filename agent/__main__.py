"""Entry point of plantwire-agent: checks the agent extra is installed, then runs."""

import sys

from shared.extras import require_extra


def main() -> int:
    """Run plantwire-agent."""
    require_extra("plantwire-agent", "agent", ["asyncua", "pymodbus"])
    from agent.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
