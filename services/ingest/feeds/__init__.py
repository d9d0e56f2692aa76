"""Feed adapters: each a pure function from one inbound message to FHIR resources (no I/O)."""
