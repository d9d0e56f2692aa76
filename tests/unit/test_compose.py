"""docker-compose.yml is validated structurally (no Docker engine runs here): it must start PostgreSQL, the
official Kafka image and the three services in real mode, with settings the services actually read."""

from pathlib import Path

import yaml

from services.consent.settings import ConsentSettings
from services.ingest.settings import IngestSettings
from services.record_api.settings import RecordApiSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"consent": ConsentSettings, "record_api": RecordApiSettings, "ingest": IngestSettings}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_peers_and_the_three_services() -> None:
    services = compose()["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert set(SETTINGS) <= set(services)


def test_each_service_runs_in_real_mode_on_its_default_port_with_a_readiness_check() -> None:
    services = compose()["services"]
    for name, settings_cls in SETTINGS.items():
        service = services[name]
        env = service["environment"]
        assert env["SCR_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["SCR_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        default_port = settings_cls.model_fields["port"].default
        assert env["SCR_PORT"] == str(default_port)
        assert f"{default_port}:{default_port}" in service["ports"]
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert service["command"] == ["python", "-m", f"services.{name}"]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_every_scr_variable_in_compose_is_a_setting_the_service_reads() -> None:
    services = compose()["services"]
    for name, settings_cls in SETTINGS.items():
        fields = set(settings_cls.model_fields)
        for variable in services[name]["environment"]:
            assert variable.startswith("SCR_")
            assert variable.removeprefix("SCR_").lower() in fields, f"{name}: {variable} is not a setting"


def test_dockerfile_installs_the_packages_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for part in ("COPY shared", "COPY services", "pip install .", "USER 10001"):
        assert part in text
