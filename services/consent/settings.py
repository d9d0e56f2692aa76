"""Consent service settings (SCR_ environment variables)."""

from shared.settings import PublicBaseUrl, ServiceSettings


class ConsentSettings(ServiceSettings):
    service_name: str = "consent"
    port: int = 8003
    # Where clinicians' systems reach this service (through the gateway), for the absolute URLs of its FHIR Consent
    # API (Location, fullUrl); set it in production, as for the record API (chart: services.consent.extraConfig).
    public_base_url: PublicBaseUrl = None
    # DESIGN.md default: a clinical role with a reason may break glass over an objection (vital interests).
    break_glass_overrides_objection: bool = True
    # People whose parsed consents are held in memory for decisions (least recently used dropped first).
    consent_cache_size: int = 100_000
    # The record.changed import and consent.changed cache invalidation run in background threads.
    consumers_enabled: bool = True
    # Request bodies (preferences, Consent resources, decision requests) over this are refused with 413.
    max_body_bytes: int = 1024 * 1024
