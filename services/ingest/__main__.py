"""Run the ingest service: `python -m services.ingest`."""

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.service import serve

if __name__ == "__main__":
    serve(IngestSettings(), create_app)  # type: ignore[arg-type]
