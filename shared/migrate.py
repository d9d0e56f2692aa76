"""Apply the store migrations to SCR_DATABASE_URL: `python -m shared.migrate` (a Helm hook Job runs this)."""

import sys

from shared.db import migrate
from shared.settings import ServiceSettings


def main() -> None:
    settings = ServiceSettings()
    try:
        migrate(settings.database_url)
    except Exception as exc:  # one clear line for the operator, not a traceback
        print(f"migrate: failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        raise SystemExit(2) from None
    print("migrate: schema is up to date")


if __name__ == "__main__":
    main()
