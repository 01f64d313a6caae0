"""The local engine (podman serving the Docker API) and the simulated tunnel stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import docker
import docker.errors
import pytest
import requests.exceptions
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from core.errors import ConfigError
from sandbox.engine import BUSYBOX_IMAGE, EngineHandle, start_engine
from sandbox.polling import wait_until
from sandbox.stack import CLOUDFLARED_COMMAND, deploy_stack, teardown_stack, write_data_dir
from tasks.credential_files import DATA_FILES
from tests.plugins.engine import ComposeStack
from tests.plugins.site import run_text

REPO = Path(__file__).resolve().parents[1]
REGISTERED = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INF Registered tunnel connection connIndex=(\d) "
    r"connection=[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} event=0 "
    r"ip=198\.41\.\d+\.\d+ location=[a-z]{3}\d\d protocol=quic$",
    re.M,
)


def _logs(client: docker.DockerClient, name: str, **kw: bool) -> str:
    return client.containers.get(name).logs(**kw).decode()


# --- engine -----------------------------------------------------------------------------


def test_engine_serves_the_docker_api_with_the_facts_configuration(engine: EngineHandle) -> None:
    client = engine.client()
    try:
        assert client.ping() is True
        assert "podman" in client.version()["Components"][0]["Name"].lower()
        assert client.images.get(BUSYBOX_IMAGE).tags == [BUSYBOX_IMAGE]
    finally:
        client.close()
    conf = (engine.workdir / "containers.conf").read_text()
    assert 'runtime = "/usr/sbin/runc"' in conf and 'netns = "none"' in conf
    assert 'cgroup_manager = "cgroupfs"' in conf and 'events_logger = "file"' in conf
    assert '"nofile=1024:1024", "nproc=4096:4096"' in conf
    assert engine.docker_host == f"unix://{engine.workdir}/podman.sock"
    assert set(engine.timings) == {"service_start", "image_build"}


def test_start_engine_reuses_the_running_service_of_its_workdir(engine: EngineHandle) -> None:
    again = start_engine(engine.workdir)
    assert again.pid == engine.pid
    assert again.timings == {"image_build": 0.0}


def test_busybox_image_runs_a_container_as_the_stack_user(
    engine_client: docker.DockerClient,
) -> None:
    started = time.monotonic()
    container = engine_client.containers.run(
        BUSYBOX_IMAGE,
        ["sh", "-c", "id -u; echo hello; date -u +%Y; sleep 30"],
        user="65532",
        network_mode="none",
        detach=True,
    )
    try:
        run_s = time.monotonic() - started
        deadline = time.monotonic() + 10
        while "hello" not in container.logs().decode():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert container.logs().decode().split()[:2] == ["65532", "hello"]
        started = time.monotonic()
        container.stop(timeout=0)
        stop_s = time.monotonic() - started
        container.reload()
        assert container.status == "exited"
        # timeout 0 means SIGKILL at once, not the 10 s grace period
        assert stop_s < 5 and run_s < 10
    finally:
        container.remove(force=True)


def test_engine_cli_starts_stops_and_reuses_its_storage(tmp_path: Path) -> None:
    workdir = tmp_path / "eng"

    def cli(action: str) -> subprocess.CompletedProcess[str]:
        return run_text(
            [sys.executable, "-m", "sandbox.engine", action, "--workdir", str(workdir)],
            cwd=REPO,
            timeout=60,
            check=True,
        )

    out = cli("start")
    docker_host = f"unix://{workdir}/podman.sock"
    assert out.stdout.strip() == f"DOCKER_HOST={docker_host}"
    pid = int((workdir / "podman.pid").read_text())
    client = docker.DockerClient(base_url=docker_host, version="1.41", timeout=5)
    assert client.ping()
    client.containers.run(BUSYBOX_IMAGE, ["sleep", "60"], network_mode="none", detach=True)
    assert cli("start").stdout.strip() == f"DOCKER_HOST={docker_host}"  # idempotent
    assert int((workdir / "podman.pid").read_text()) == pid

    cli("stop")
    assert not (workdir / "podman.pid").exists()
    with pytest.raises(requests.exceptions.ConnectionError):
        client.ping()
    assert (
        not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes()
    )

    again = cli("start")  # same workdir: the image is found, not rebuilt
    assert "image_build=0.000s" in again.stderr
    client = docker.DockerClient(base_url=docker_host, version="1.41", timeout=5)
    assert client.containers.list(all=True) == []  # stop removed its containers
    cli("stop")


# --- data dir ---------------------------------------------------------------------------


def test_write_data_dir_lays_out_a_compose_deployment(tmp_path: Path) -> None:
    token = "tok-secret-value-123456"
    layout = write_data_dir(tmp_path / "app" / "data", "tnl_abc", "x1.tunnel.example", token)

    assert layout.root == tmp_path / "app"
    assert sorted(p.name for p in layout.data_dir.iterdir()) == sorted(DATA_FILES)
    for name in DATA_FILES:
        path = layout.data_dir / name
        assert path.stat().st_mode & 0o777 == 0o600, name
        assert path.stat().st_uid == 65532, name
    assert (layout.data_dir / "tunnel-token").read_text() == token + "\n"
    assert (layout.data_dir / "tunnel-id").read_text() == "tnl_abc\n"
    assert (layout.data_dir / "tunnel-domain").read_text() == "x1.tunnel.example\n"
    for public in (layout.config_dir / "config.yaml", layout.compose_file):
        text = public.read_text()
        assert token not in text and "PRIVATE KEY" not in text
    assert "cert_file: /data/tls.crt" in (layout.config_dir / "config.yaml").read_text()
    assert "TUNNEL_TOKEN" in layout.compose_file.read_text()

    ca = x509.load_pem_x509_certificate((layout.data_dir / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((layout.data_dir / "tls.crt").read_bytes())
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = server.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*.x1.tunnel.example"]
    assert (server.not_valid_after_utc - server.not_valid_before_utc).days == 90
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert len((layout.data_dir / "ca.crt").read_bytes()) <= 8192


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("tunnel_id", {"tunnel_id": ""}),
        ("domain", {"domain": "a\nb"}),
        ("token", {"token": " padded "}),
    ],
)
def test_write_data_dir_names_the_bad_field(tmp_path: Path, field: str, kwargs: dict) -> None:
    args = {"tunnel_id": "tnl_1", "domain": "d.example", "token": "t", **kwargs}
    with pytest.raises(ConfigError, match=f"^{field}: must be a non-empty single line"):
        write_data_dir(tmp_path / "data", **args)
    assert not (tmp_path / "data").exists()


# --- stack ------------------------------------------------------------------------------


def test_stack_is_deployed_like_compose(compose_stack: ComposeStack) -> None:
    client, project = compose_stack.client, compose_stack.project
    assert compose_stack.containers == {
        "mcp-proxy": f"{project}-mcp-proxy-1",
        "cloudflared": f"{project}-cloudflared-1",
    }
    for service, name in compose_stack.containers.items():
        attrs = client.containers.get(name).attrs
        labels = attrs["Config"]["Labels"]
        assert labels["com.docker.compose.project"] == project
        assert labels["com.docker.compose.service"] == service
        assert labels["com.docker.compose.container-number"] == "1"
        assert labels["com.docker.compose.oneoff"] == "False"
        assert attrs["HostConfig"]["NetworkMode"] == "none"
        assert attrs["Config"]["User"] == "65532"
        assert attrs["State"]["Running"] is True
        env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
        assert ("TUNNEL_TOKEN" in env) is (service == "cloudflared")
        if service == "cloudflared":
            assert env["TUNNEL_TOKEN"] == compose_stack.token
            assert attrs["Config"]["Cmd"] == list(CLOUDFLARED_COMMAND)
        else:
            mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in attrs["Mounts"]}
            assert mounts == {
                "/etc/mcp-gateway": (str(compose_stack.config_dir), False),
                "/data": (str(compose_stack.data_dir), True),
            }
    [network] = client.networks.list(filters={"label": f"com.docker.compose.project={project}"})
    assert network.name == f"{project}_default"
    assert network.attrs["Labels"]["com.docker.compose.network"] == "default"


def test_cloudflared_logs_four_connections_in_its_console_format(
    compose_stack: ComposeStack,
) -> None:
    name = compose_stack.containers["cloudflared"]

    # cloudflared registers its four connections one after another after it starts.
    def registered_four() -> str | None:
        logs = _logs(compose_stack.client, name, stdout=False, stderr=True)
        return logs if len(REGISTERED.findall(logs)) >= 4 else None

    stderr = wait_until(registered_four, timeout=30, what="cloudflared's four connections")
    assert sorted(int(i) for i in REGISTERED.findall(stderr)) == [0, 1, 2, 3]
    assert f"INF Starting tunnel tunnelID={compose_stack.tunnel_id}" in stderr
    assert _logs(compose_stack.client, name, stdout=True, stderr=False) == ""


def test_proxy_logs_routes_on_stdout_and_suspicious_lines_on_stderr(
    compose_stack: ComposeStack,
) -> None:
    name = compose_stack.containers["mcp-proxy"]
    stdout = _logs(compose_stack.client, name, stdout=True, stderr=False)
    stderr = _logs(compose_stack.client, name, stdout=False, stderr=True)
    assert (
        f"route configured host=github.{compose_stack.domain} upstream=http://github-mcp:3000"
        in stdout
    )
    assert f"route configured host=jira.{compose_stack.domain}" in stdout
    assert "tls server certificate loaded" in stdout  # it could read /data/tls.key as 65532
    assert f"no route for host host=admin.{compose_stack.domain}" in stderr
    assert "IP validation failed: 203.0.113.7 is not a private address" in stderr
    assert "tls handshake failed" in stderr
    assert "route configured" not in stderr


def test_canary_reaches_both_logs(compose_stack: ComposeStack) -> None:
    canary = compose_stack.canary
    assert canary
    cloudflared = _logs(compose_stack.client, compose_stack.containers["cloudflared"])
    proxy = _logs(compose_stack.client, compose_stack.containers["mcp-proxy"])
    assert f'"Authorization":["Bearer {canary}"]' in cloudflared
    assert f"token:{compose_stack.token}" in cloudflared  # debug Settings line: raw token
    assert f"Authorization:[Bearer {canary}]" in proxy


def test_without_canary_no_secret_is_logged(make_stack) -> None:
    stack = make_stack(canary=None)
    for name in stack.containers.values():
        assert stack.token not in _logs(stack.client, name)
    assert "token:*****" in _logs(stack.client, stack.containers["cloudflared"])


def test_unhealthy_stack_registers_fewer_connections(make_stack) -> None:
    stack = make_stack(connections=2, suspicious=False)
    logs = _logs(stack.client, stack.containers["cloudflared"])
    assert sorted(int(i) for i in REGISTERED.findall(logs)) == [0, 1]
    assert "ERR Unable to establish connection with Cloudflare edge" in logs
    assert "IP validation failed" not in _logs(stack.client, stack.containers["mcp-proxy"])


def test_stack_keeps_logging(make_stack) -> None:
    stack = make_stack(interval_s=0.2)
    name = stack.containers["mcp-proxy"]
    before = _logs(stack.client, name).count("INFO request host=")
    time.sleep(1.0)
    assert _logs(stack.client, name).count("INFO request host=") >= before + 3


def test_deploy_stack_is_idempotent(compose_stack: ComposeStack) -> None:
    client = compose_stack.client
    ids = {n: client.containers.get(n).id for n in compose_stack.containers.values()}
    client.containers.get(compose_stack.containers["cloudflared"]).stop(timeout=0)
    again = deploy_stack(
        client, compose_stack.project, compose_stack.layout, token=compose_stack.token
    )
    assert again.containers == compose_stack.containers
    assert {n: client.containers.get(n).id for n in again.containers.values()} == ids
    assert client.containers.get(compose_stack.containers["cloudflared"]).status == "running"
    nets = client.networks.list(filters={"label": f"com.docker.compose.project={again.project}"})
    assert len(nets) == 1


def test_deploy_stack_rejects_a_bad_project_name(
    engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    layout = write_data_dir(tmp_path / "data", "tnl_1", "d.example", "tok")
    with pytest.raises(ConfigError, match="^project: 'Bad Name' is not a valid Compose"):
        deploy_stack(engine_client, "Bad Name", layout, token="tok")


def test_teardown_stack_removes_containers_and_network(compose_stack: ComposeStack) -> None:
    removed = teardown_stack(compose_stack.client, compose_stack.project)
    assert sorted(removed) == sorted(
        [*compose_stack.containers.values(), f"{compose_stack.project}_default"]
    )
    label = {"label": f"com.docker.compose.project={compose_stack.project}"}
    assert compose_stack.client.containers.list(all=True, filters=label) == []
    assert compose_stack.client.networks.list(filters=label) == []
    assert teardown_stack(compose_stack.client, compose_stack.project) == []


def test_stack_cli_up_and_down(engine: EngineHandle, tmp_path: Path) -> None:
    env = dict(os.environ, DOCKER_HOST=engine.docker_host, TUNNEL_TOKEN="tok-cli-123456")
    project = f"cli{os.getpid()}"

    def cli(*args: str) -> str:
        return run_text(
            [
                sys.executable,
                "-m",
                "sandbox.stack",
                *args,
                "--project",
                project,
                "--data-dir",
                str(tmp_path / "data"),
            ],
            cwd=REPO,
            env=env,
            timeout=60,
            check=True,
        ).stdout

    client = engine.client()
    try:
        up = cli("up", "--tunnel-id", "tnl_cli", "--domain", "cli.tunnel.example")
        assert f"cloudflared: {project}-cloudflared-1" in up
        assert (tmp_path / "data" / "tunnel-token").read_text() == "tok-cli-123456\n"
        names = {c.name for c in client.containers.list()}
        assert {f"{project}-mcp-proxy-1", f"{project}-cloudflared-1"} <= names
        down = cli("down")
        assert f"{project}-cloudflared-1" in down
        label = {"label": f"com.docker.compose.project={project}"}
        assert client.containers.list(all=True, filters=label) == []
    finally:
        teardown_stack(client, project)
        client.close()
