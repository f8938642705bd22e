"""Entry point of plantwire-collector: checks the collector extra is installed, then runs."""

import sys

from shared.extras import require_extra


def main() -> int:
    """Run plantwire-collector."""
    require_extra(
        "plantwire-collector", "collector", ["aiohttp", "psycopg", "psycopg_pool", "uvloop"]
    )
    from collector.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
