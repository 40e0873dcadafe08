"""The production topology (docker-compose.yml, docker/) agrees with the code.

No Docker engine runs where the tests run, so the compose file is checked two ways:
against the code (the variables ``modelcanary/config.py`` reads, the CLI's real commands
and options, the ports the commands are told to listen on, MLflow's host allowlist) and,
when a ``docker-compose`` / ``docker compose`` binary is installed, by its own validator
(``config -q`` needs no engine).
"""

from __future__ import annotations

import base64
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import typer
import yaml

from modelcanary.config import ENV_PREFIX, ENV_VARS, load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKER_DIR = REPO / "docker"
PROMETHEUS_FILE = DOCKER_DIR / "prometheus.yml"
GRAFANA_DIR = DOCKER_DIR / "grafana"

#: Images we do not build: each maintained by the project it packages (or a Docker
#: official image). Anything else must be built from this repository.
OFFICIAL_IMAGES = {
    "apache/kafka": "Apache Kafka's image",
    "postgres": "Docker official image",
    "prom/prometheus": "the Prometheus project's image",
    "grafana/grafana": "Grafana Labs' image",
}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")
# A compose service addressed by name and port, as in kafka:9092 or http://mlflow:5000.
_SERVICE_ADDRESS = re.compile(r"(?<![\w.-])(?P<host>[a-z][a-z0-9-]*):(?P<port>\d{2,5})\b")
_LOCAL_ADDRESS = re.compile(r"(?:localhost|127\.0\.0\.1):(?P<port>\d{2,5})\b")


def resolve(value: str) -> str:
    """Compose interpolation with an empty environment: every ``${X:-d}`` becomes ``d``."""

    def default(match: re.Match[str]) -> str:
        return (match["default"] or "") if match["op"] in (":-", "-") else ""

    return _INTERPOLATION.sub(default, value).replace("$$", "$")


def resolved(node: Any) -> Any:
    if isinstance(node, str):
        return resolve(node)
    if isinstance(node, list):
        return [resolved(item) for item in node]
    if isinstance(node, dict):
        return {key: resolved(item) for key, item in node.items()}
    return node


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, dict):
        for key, item in node.items():
            yield str(key)
            yield from strings(item)
    elif node is not None:
        yield str(node)


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return resolved(compose()["services"])


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def entrypoint(service: dict[str, Any]) -> list[str]:
    """The program a service runs: our image's ENTRYPOINT unless the service overrides it."""
    if "entrypoint" in service:
        return list(service["entrypoint"])
    return ["modelcanary"] if "build" in service else []


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    assert isinstance(cmd, list), f"command {cmd!r}: write it as a list (exec form)"
    return [str(part) for part in cmd]


def modelcanary_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services().items() if entrypoint(s) == ["modelcanary"]}


def container_port(spec: Any) -> int:
    """Target port of a ``ports`` / ``expose`` entry: 3000, "3001:3000", "127.0.0.1:80:80/tcp"."""
    if isinstance(spec, dict):
        return int(spec["target"])
    return int(str(spec).split("/")[0].rsplit(":", 1)[-1])


def host_port(spec: Any) -> int | None:
    if isinstance(spec, dict):
        return int(spec["published"]) if spec.get("published") else None
    parts = str(spec).split("/")[0].split(":")
    return int(parts[-2]) if len(parts) >= 2 else None


def listening_ports(service: dict[str, Any]) -> set[int]:
    specs = [*service.get("expose", []), *service.get("ports", [])]
    return {container_port(spec) for spec in specs}


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def docker_yaml_files() -> list[Path]:
    return sorted(DOCKER_DIR.rglob("*.yml"))


# -- environment variables -------------------------------------------------------------


def test_compose_sets_only_variables_config_reads() -> None:
    set_here: set[str] = set()
    for name, service in services().items():
        for var in environment(service):
            if var.startswith(ENV_PREFIX):
                assert var in ENV_VARS, f"{name}: {var} is read by no code (config.ENV_VARS)"
                set_here.add(var)
    assert {f"{ENV_PREFIX}KAFKA_BOOTSTRAP", f"{ENV_PREFIX}MLFLOW_URI"} <= set_here
    for match in _INTERPOLATION.finditer(COMPOSE_FILE.read_text()):
        if match["name"].startswith(ENV_PREFIX):
            assert match["name"] in ENV_VARS, f"${{{match['name']}}} is read by no code"


def test_every_modelcanary_service_has_valid_settings_for_external_services() -> None:
    ours = modelcanary_services()
    assert {"topics", "serving-1", "serving-2", "evaluator", "controller"} <= ours.keys()
    for name, service in ours.items():
        env = environment(service)
        settings = load_settings(env)  # raises ConfigError naming the field
        # Unset, a process would look for (or `up` would start) embedded services.
        assert settings.kafka_bootstrap, f"{name}: MODELCANARY_KAFKA_BOOTSTRAP is not set"
        assert settings.mlflow_uri, f"{name}: MODELCANARY_MLFLOW_URI is not set"


def test_topic_layout_is_the_same_for_every_component_and_the_broker() -> None:
    ours = modelcanary_services()
    layouts = {
        (s.topics.prefix, s.partitions)
        for s in (load_settings(environment(svc)) for svc in ours.values())
    }
    assert len(layouts) == 1, f"components disagree on topics: {layouts}"
    ((_, partitions),) = layouts
    # A topic auto-created by the broker must get the partition count we create topics with.
    broker_default = environment(services()["kafka"]).get("KAFKA_NUM_PARTITIONS")
    assert broker_default == str(partitions)


# -- commands ---------------------------------------------------------------------------


# Typer (0.29+) ships its own copy of click; MLflow uses click itself.
CLI_ERRORS = (click.ClickException, typer.TyperException)


@functools.cache
def cli(program: str) -> Any:
    if program == "modelcanary":
        import modelcanary.cli.commands  # noqa: F401  (attaches the commands to `app`)
        from modelcanary.cli.app import app

        return typer.main.get_command(app)
    if program == "mlflow":
        from mlflow.cli import cli as mlflow_cli

        return mlflow_cli
    raise AssertionError(f"{program}: no known command line to check this entrypoint against")


def parse(program: str, args: list[str]) -> Any:
    """Parse ``args`` as the CLI would (types, unknown options); invoke nothing."""
    command, path = cli(program), [program]
    while getattr(command, "commands", None) is not None:  # a group: descend
        assert args, f"{' '.join(path)}: no subcommand given"
        name, args = args[0], args[1:]
        sub = command.commands.get(name)
        assert sub is not None, f"{' '.join(path)} has no command {name!r}"
        command, path = sub, [*path, name]
    return command.make_context(" ".join(path), list(args))


def test_services_run_real_commands_with_valid_options() -> None:
    checked = set()
    for name, service in services().items():
        program = entrypoint(service)
        if not program:
            continue  # an image we do not build runs its own default command
        assert len(program) == 1, f"{name}: entrypoint {program}"
        try:
            parse(program[0], command(service))
        except CLI_ERRORS as exc:
            pytest.fail(f"{name}: `{' '.join(program + command(service))}`: {exc.format_message()}")
        checked.add(command(service)[0])
    assert {"serve", "evaluate", "control", "up", "server"} <= checked


def test_the_command_check_rejects_what_the_cli_would_reject() -> None:
    with pytest.raises(AssertionError, match="no command 'serves'"):
        parse("modelcanary", ["serves"])
    with pytest.raises(CLI_ERRORS, match="--prot"):
        parse("modelcanary", ["serve", "--prot", "3000"])
    with pytest.raises(CLI_ERRORS, match="integer"):
        parse("modelcanary", ["serve", "--port", "three"])
    with pytest.raises(CLI_ERRORS, match="--serve-artefacts"):
        parse("mlflow", ["server", "--serve-artefacts"])


# -- ports --------------------------------------------------------------------------------


def referenced_addresses() -> set[tuple[str, int]]:
    """Every ``service:port`` the compose file and docker/*.yml name (URLs, listeners, targets)."""
    names = services().keys()
    # Image names (grafana/grafana:11.3.0) look like addresses; they are checked elsewhere.
    texts = [
        text
        for service in services().values()
        for key, value in service.items()
        if key not in ("image", "build")
        for text in strings(value)
    ]
    texts += [s for path in docker_yaml_files() for s in strings(yaml.safe_load(path.read_text()))]
    return {
        (m["host"], int(m["port"]))
        for text in texts
        for m in _SERVICE_ADDRESS.finditer(text)
        if m["host"] in names
    }


def test_addresses_point_at_ports_their_service_listens_on() -> None:
    refs = referenced_addresses()
    expected = {("kafka", 9092), ("kafka", 9093), ("mlflow", 5000), ("postgres", 5432)}
    assert expected | {("serving-1", 3000), ("prometheus", 9090)} <= refs
    all_services = services()
    for host, port in sorted(refs):
        listening = listening_ports(all_services[host])
        assert port in listening, f"{host}:{port} is named, but {host} listens on {listening}"


def test_commands_and_healthchecks_use_the_ports_a_service_listens_on() -> None:
    for name, service in services().items():
        listening = listening_ports(service)
        port = option(command(service), "--port")
        if port is not None:
            assert int(port) in listening, f"{name}: --port {port} but listens on {listening}"
        probe = " ".join(strings(service.get("healthcheck", {}).get("test", [])))
        for match in _LOCAL_ADDRESS.finditer(probe):
            assert int(match["port"]) in listening, f"{name}: healthcheck probes {match[0]}"


def test_kafka_listens_where_clients_are_told_to_connect() -> None:
    kafka = services()["kafka"]
    env = environment(kafka)
    listeners = {int(item.rsplit(":", 1)[1]) for item in env["KAFKA_LISTENERS"].split(",")}
    assert listening_ports(kafka) == listeners
    advertised = {item.split("://")[1] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, service in modelcanary_services().items():
        for address in environment(service)["MODELCANARY_KAFKA_BOOTSTRAP"].split(","):
            assert address in advertised, f"{name}: {address} is not an advertised listener"
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "CLUSTER_ID: 16 bytes"


def test_published_host_ports_do_not_collide() -> None:
    published = [
        (host_port(spec), name)
        for name, service in services().items()
        for spec in service.get("ports", [])
        if host_port(spec) is not None
    ]
    ports = [port for port, _ in published]
    assert len(ports) == len(set(ports)), f"host ports used twice: {sorted(published)}"


def test_mlflow_accepts_the_host_header_its_clients_send() -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    mlflow = services()["mlflow"]
    allowed = [h.strip() for h in environment(mlflow)["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")]
    clients = {
        urlsplit(environment(s)["MODELCANARY_MLFLOW_URI"]).netloc
        for s in modelcanary_services().values()
    }
    # A browser on the host, through the published port.
    clients |= {f"localhost:{host_port(spec)}" for spec in mlflow.get("ports", [])}
    assert "mlflow:5000" in clients
    for host in sorted(clients):
        assert is_allowed_host_header(allowed, host), f"MLflow would answer 403 to Host {host}"
    assert not is_allowed_host_header(allowed, "attacker.example:5000")


# -- start order and health -------------------------------------------------------------------


def test_start_order_waits_on_health_checks_and_one_shot_jobs() -> None:
    all_services = services()
    for name, service in all_services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions, not a list"
        for target, spec in depends.items():
            condition = spec.get("condition")
            if condition == "service_completed_successfully":
                assert all_services[target].get("restart", "no") == "no", f"{target} restarts"
            else:
                assert condition == "service_healthy", f"{name} -> {target}: {condition}"
                assert all_services[target].get("healthcheck", {}).get("test"), (
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )


def test_modelcanary_processes_start_after_kafka_mlflow_and_the_topics() -> None:
    for name, service in modelcanary_services().items():
        depends = {t: spec["condition"] for t, spec in service.get("depends_on", {}).items()}
        assert depends.get("kafka") == "service_healthy", name
        assert depends.get("mlflow") == "service_healthy", name
        if name != "topics":
            assert depends.get("topics") == "service_completed_successfully", name
    assert services()["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_only_portless_workers_and_the_one_shot_job_go_unprobed() -> None:
    # Serving, MLflow and the infrastructure are probed; evaluator and controller have no
    # port to probe (nothing waits on them) and the topics job exits.
    unprobed = {n for n, s in services().items() if not s.get("healthcheck")}
    assert unprobed == {"evaluator", "controller", "topics"}


def test_scale_out_shape() -> None:
    all_services = services()
    serving = [n for n, s in modelcanary_services().items() if command(s)[0] == "serve"]
    assert len(serving) >= 2, "at least two serving replicas"
    assert int(all_services["evaluator"].get("deploy", {}).get("replicas", 1)) >= 2
    for name in ("evaluator", "controller"):
        assert "container_name" not in all_services[name], f"{name} could not be scaled"


# -- images ----------------------------------------------------------------------------------


def test_images_are_built_here_or_official_and_pinned() -> None:
    built_names = set()
    for name, service in services().items():
        if "build" in service:
            build = service["build"]
            dockerfile = REPO / build["context"] / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
            built_names.add(service.get("image"))
            continue
        image = service["image"]
        repository, _, tag = image.partition(":")
        assert repository in OFFICIAL_IMAGES, f"{name}: {image} is neither built here nor official"
        assert tag and tag != "latest", f"{name}: pin a version of {repository}"
    assert len(built_names) == 1, f"one image for all our services, found {built_names}"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER_DIR / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_the_one_non_root_image() -> None:
    instructions = dockerfile_instructions()
    assert ("FROM", "python:3.11-slim") in instructions
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    entrypoints = [json.loads(arg) for op, arg in instructions if op == "ENTRYPOINT"]
    assert entrypoints[-1] == ["modelcanary"]
    # The MLflow service runs a postgresql:// store: the driver comes with the `postgres` extra.
    uri = option(command(services()["mlflow"]), "--backend-store-uri") or ""
    assert uri.startswith("postgresql://")
    assert any("'postgres'" in arg for op, arg in instructions if op == "RUN")


def test_dockerfile_copies_only_what_the_build_context_contains() -> None:
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore, ".dockerignore is an allowlist"
    for op, arg in dockerfile_instructions():
        if op != "COPY" or arg.startswith("--from"):
            continue
        *sources, _ = arg.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert source in allowed, f"COPY {source}: excluded by .dockerignore"


# -- monitoring ---------------------------------------------------------------------------------


def test_prometheus_scrapes_every_serving_replica() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        if job.get("metrics_path", "/metrics") == "/metrics"
        for static in job["static_configs"]
        for target in static["targets"]
    }
    serving = {
        f"{name}:{option(command(s), '--port')}"
        for name, s in modelcanary_services().items()
        if command(s)[0] == "serve"
    }
    assert targets == serving


def test_mounted_files_exist() -> None:
    mounted = {}
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
                mounted[target] = REPO / source
    assert mounted["/etc/prometheus/prometheus.yml"] == REPO / "docker/prometheus.yml"


def test_grafana_is_provisioned_with_the_dashboard_and_its_datasource() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text()
    )
    uids = {source["uid"] for source in datasources["datasources"]}
    providers = yaml.safe_load(
        (GRAFANA_DIR / "provisioning/dashboards/modelcanary.yml").read_text()
    )
    grafana_mounts = {
        str(v).split(":")[1]: str(v).split(":")[0] for v in services()["grafana"]["volumes"]
    }
    for provider in providers["providers"]:
        source = REPO / grafana_mounts[provider["options"]["path"]]
        dashboards = sorted(source.glob("*.json"))
        assert dashboards, f"no dashboard in {source}"
        for path in dashboards:
            dashboard = json.loads(path.read_text())
            for panel in dashboard["panels"]:
                used = {panel["datasource"]["uid"]}
                used |= {t["datasource"]["uid"] for t in panel.get("targets", [])}
                assert used <= uids, f"{path.name}: {panel['title']} uses {used - uids}"
                assert all(t["expr"] for t in panel["targets"]), panel["title"]


# -- docker-compose's own validation --------------------------------------------------------------


def compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_docker_compose_validates_the_file() -> None:
    binary = compose_binary()
    if binary is None:
        pytest.skip(
            "neither docker-compose nor `docker compose` is installed (.ci/run installs it)"
        )
    result = subprocess.run(
        [*binary, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr or result.stdout
