"""Record API settings (SCR_ environment variables)."""


from pydantic import SecretStr

from services.record_api.population.deprivation import SYNTHETIC_TABLE as SYNTHETIC_IMD_TABLE
from shared.settings import DEV_DIR, PublicBaseUrl, ServiceSettings


class RecordApiSettings(ServiceSettings):
    service_name: str = "record_api"
    port: int = 8001
    # The URL clients reach the record API at (https://scr.example.nhs.uk, or with a path prefix), used for every
    # absolute URL in an answer: Bundle links and fullUrl, Content-Location, the export manifest. Set it in
    # production: unset, those URLs are built from the request's Host header, which any caller chooses.
    public_base_url: PublicBaseUrl = None
    consent_url: str = "http://127.0.0.1:8003"
    # The record API's own bearer token for the consent decision API, read from a file the platform rotates
    # (a Kubernetes projected token, or the dev token `make run` writes).
    consent_token_file: str = str(DEV_DIR / "record-api.token")
    consent_timeout_seconds: float = 3.0
    # Decisions are cached per person and dropped on consent.changed; the TTL is only a safety net for a
    # missed event (e.g. while the broker was unreachable).
    decision_cache_ttl_seconds: float = 30.0
    decision_cache_size: int = 20_000
    default_page_size: int = 50
    max_page_size: int = 1000
    # How many candidate persons one Patient search page may examine before it returns a short page with a
    # next link; bounds the work a broad demographic search can cause.
    patient_search_scan_limit: int = 500
    max_break_glass_reason_length: int = 1000

    # Population health (services/record_api/population, docs/POPULATION.md). The pseudonymisation secret is
    # never in code or config maps: a mounted secret file (preferred) or an environment variable, >= 32 bytes.
    export_pseudonym_key_file: str | None = None
    export_pseudonym_key: SecretStr | None = None
    # Counts below this are suppressed (with secondary suppression) in published aggregates.
    population_suppression_threshold: int = 10
    # Postcode -> LSOA -> IMD decile table the operator supplies (CSV: postcode,lsoa_code,imd_decile).
    imd_lookup_file: str = str(SYNTHETIC_IMD_TABLE)
    # Export jobs run in a background thread in each replica that has the worker on; any replica may claim one.
    export_worker_enabled: bool = True
    export_poll_seconds: float = 2.0
    export_chunk_rows: int = 1000  # NDJSON lines per stored chunk: what one replica holds in memory at a time
    export_file_max_resources: int = 100_000  # a type's output is split into files of at most this many
    export_stale_seconds: float = 300.0  # a running job whose worker stopped beating is re-queued after this
    export_retention_hours: float = 24.0  # finished jobs and their files are deleted after this
    consent_page_size: int = 5000  # people per page when fetching the secondary-use exclusions
