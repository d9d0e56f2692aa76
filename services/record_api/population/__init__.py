"""Population health: FHIR Bulk Data export and inequality-aware aggregates for secondary use, with the
National Data Opt-out and objections applied, sensitive data excluded and small numbers suppressed."""
