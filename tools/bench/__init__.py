"""The benchmark harness: `python -m tools.bench` (or `make bench`) sets up PostgreSQL, Kafka and the services,
ingests a synthetic ICS population through every feed and writes docs/BENCHMARKS.md."""
