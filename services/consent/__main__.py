"""Run the consent service: `python -m services.consent`."""

from services.consent.app import create_app
from services.consent.settings import ConsentSettings
from shared.service import serve

if __name__ == "__main__":
    serve(ConsentSettings(), create_app)  # type: ignore[arg-type]
