"""A single-node Apache Kafka broker in KRaft mode, run from the Maven Central jars in .peers/kafka/lib."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tools.peers.ports import free_port, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_LIB = REPO_ROOT / ".peers" / "kafka" / "lib"

_LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
"""


def _cluster_id() -> str:
    """16 random bytes in URL-safe base64 (Kafka's Uuid form), never starting with '-', which StorageTool's
    argument parser would read as an option."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


class KafkaBroker:
    """Combined broker+controller node on free loopback ports; data survives stop()/start() for restart tests."""

    def __init__(self, base_dir: str | None = None, heap: str = "512m") -> None:
        if not any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
            raise RuntimeError("Kafka jars missing; run `make kafka` (fetches them from Maven Central)")
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="scr-kafka-"))
        self.port = free_port()
        self.controller_port = free_port()
        self.heap = heap
        self._proc: subprocess.Popen[bytes] | None = None
        self._cluster_id = _cluster_id()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        props = self.base / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "inter.broker.listener.name=PLAINTEXT",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.base / 'data'}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "",
                ]
            )
        )
        (self.base / "log4j2.properties").write_text(_LOG4J2.format(log=self.base / "server.log"))
        return props

    def _java(self, *args: str) -> list[str]:
        return ["java", "-cp", f"{KAFKA_LIB}/*", *args]

    def start(self, timeout: float = 90) -> KafkaBroker:
        self.base.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", self._cluster_id, "-c", str(props), "-g"),
            check=True, capture_output=True,
        )
        jvm = [
            f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.base / 'logs'}",
            f"-Dlog4j2.configurationFile={self.base / 'log4j2.properties'}",
        ]
        cmd = ["java", *jvm, "-cp", f"{KAFKA_LIB}/*", "kafka.Kafka", str(props)]
        out = open(self.base / "stdout.log", "ab")  # noqa: SIM115 - handed to the child process
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        if not wait_for_port(self.port, timeout):
            self.stop()
            raise RuntimeError(f"Kafka broker did not open port {self.port}; see {self.base}/server.log")
        self._wait_metadata(timeout)
        return self

    def _wait_metadata(self, timeout: float) -> None:
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout
        while True:
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
                admin.list_topics()
                admin.close()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def create_topics(self, names: list[str], partitions: int = 1) -> None:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            for name in names:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        finally:
            admin.close()

    def stop(self, timeout: float = 30) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
