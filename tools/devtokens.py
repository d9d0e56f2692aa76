"""Print development bearer tokens for each kind of caller: `make tokens` (or `python -m tools.devtokens`).

Also writes the record API's own token (for the consent decision API) to var/dev/record-api.token and, once, the
bulk-export pseudonym secret to var/dev/export-pseudonym.key (docker-compose mounts both).
"""

from __future__ import annotations

import argparse

from shared.settings import DEV_DIR, ServiceSettings
from tools.devkeys import PROFILES, ensure_export_key, ensure_signing_key, mint

# The longest dev token: `make run` and docker-compose set SCR_MAX_TOKEN_LIFETIME_SECONDS to this, because the
# record API's token for the decision API is written once and nothing renews it there. Production keeps the
# one-hour default and renews that token in its Secret.
DEV_MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600


def write_service_token(hours: int = 24) -> str:
    """The token the record API presents to the consent service in the embedded default and compose."""
    settings = ServiceSettings()
    key, _ = ensure_signing_key(DEV_DIR)
    token = mint(key, PROFILES["record-api"], issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                 lifetime=hours * 3600)
    path = DEV_DIR / "record-api.token"
    path.write_text(token)
    path.chmod(0o600)
    return token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", nargs="?", choices=sorted(PROFILES), help="print only this token")
    parser.add_argument("--hours", type=int, default=8,
                        help="token lifetime; the services refuse tokens living longer than "
                             "SCR_MAX_TOKEN_LIFETIME_SECONDS (24 hours in `make run` and compose, 1 hour by default)")
    args = parser.parse_args()
    settings = ServiceSettings()
    key, _ = ensure_signing_key(DEV_DIR)
    write_service_token()
    ensure_export_key(DEV_DIR)
    for name in [args.profile] if args.profile else PROFILES:
        token = mint(key, PROFILES[name], issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                     lifetime=args.hours * 3600)
        print(token if args.profile else f"{name}:\n  {token}\n")


if __name__ == "__main__":
    main()
