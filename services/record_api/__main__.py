"""Run the record_api service: `python -m services.record_api`."""

from services.record_api.app import create_app
from services.record_api.settings import RecordApiSettings
from shared.service import serve

if __name__ == "__main__":
    serve(RecordApiSettings(), create_app)  # type: ignore[arg-type]
