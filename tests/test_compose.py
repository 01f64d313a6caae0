"""The Compose adapter against the real podman engine (Docker Engine API)."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time

import docker
import docker.errors
import pytest

from core.errors import ConfigError, StepFailed, TransientError
from tasks.compose import capture, project_containers, remaining, stop_project
from tasks.compose_restore import recreate_from_inspect, wait_running
from tests.plugins.engine import ComposeStack

REGISTERED = re.compile(
    rb"^\S+ \S+ INF Registered tunnel connection connIndex=(\d) "
    rb"connection=[0-9a-f-]{36} event=0 ip=[\d.]+ location=\w+ protocol=quic$",
    re.M,
)


def _env(inspect: dict) -> dict[str, str]:
    return dict(e.split("=", 1) for e in inspect["Config"]["Env"])


def test_project_containers_finds_both_services_by_label(compose_stack: ComposeStack) -> None:
    containers = project_containers(compose_stack.client, compose_stack.project)
    assert sorted(c.name for c in containers) == sorted(compose_stack.containers.values())
    assert {c.labels["com.docker.compose.service"] for c in containers} == {
        "mcp-proxy",
        "cloudflared",
    }


def test_capture_returns_logs_inspect_and_proxy_config(compose_stack: ComposeStack) -> None:
    result = capture(compose_stack.client, compose_stack.project, deadline_s=5)

    assert result.timed_out == [] and result.errors == {}
    assert [c.name for c in result.containers] == sorted(compose_stack.containers.values())
    cloudflared = result.by_service("cloudflared")
    proxy = result.by_service("mcp-proxy")
    assert cloudflared is not None and proxy is not None
    assert not cloudflared.partial and not proxy.partial
    # stderr (cloudflared's console) and stdout are both there, with timestamps
    assert sorted(int(i) for i in REGISTERED.findall(cloudflared.logs)) == [0, 1, 2, 3]
    assert b"route configured host=github." in proxy.logs
    assert b"IP validation failed: 203.0.113.7 is not a private address" in proxy.logs
    assert b"tls handshake failed" in proxy.logs and b"no route for host" in proxy.logs
    assert re.match(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", proxy.logs)
    # raw capture: the canary is there, the caller redacts
    assert compose_stack.canary is not None
    assert compose_stack.canary.encode() in cloudflared.logs
    assert compose_stack.canary.encode() in proxy.logs
    # inspect documents are the engine's, env included (the lead redacts them)
    assert cloudflared.inspect["Name"].lstrip("/") == f"{compose_stack.project}-cloudflared-1"
    assert _env(cloudflared.inspect)["TUNNEL_TOKEN"] == compose_stack.token
    assert cloudflared.inspect["State"]["Running"] is True
    # proxy config read from inside the container equals the file on disk
    assert result.proxy_config == (compose_stack.config_dir / "config.yaml").read_bytes()
    assert result.elapsed_s < 15  # liveness: bounded by the 5 s default deadline


def test_capture_since_limits_the_log_window(compose_stack: ComposeStack) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    result = capture(compose_stack.client, compose_stack.project, since=future)
    assert len(result.containers) == 2
    assert all(c.logs == b"" for c in result.containers)
    assert result.proxy_config is not None


def test_capture_of_an_unknown_project_is_empty(engine_client: docker.DockerClient) -> None:
    result = capture(engine_client, "no-such-project-here")
    assert result.containers == [] and result.timed_out == [] and result.proxy_config is None


def test_capture_rejects_bad_parameters(engine_client: docker.DockerClient) -> None:
    with pytest.raises(StepFailed, match="deadline_s: must be positive"):
        capture(engine_client, "p", deadline_s=0)
    with pytest.raises(ConfigError, match="project: must be a non-empty"):
        capture(engine_client, "")


def test_capture_deadline_is_honoured_when_the_engine_hangs(
    compose_stack: ComposeStack, interposer
) -> None:
    stalled_id = compose_stack.client.containers.get(compose_stack.containers["cloudflared"]).id

    def hook(line: str) -> str | None:
        return "stall" if f"/containers/{stalled_id}/logs" in line else None

    relay = interposer(hook)
    client = relay.client()
    started = time.monotonic()
    result = capture(client, compose_stack.project, deadline_s=1.0)
    elapsed = time.monotonic() - started

    # A liveness bound, not a speed target: the stalled read would otherwise never end.
    assert elapsed < 6, f"capture took {elapsed:.2f}s for a 1s deadline"
    assert result.timed_out == [compose_stack.containers["cloudflared"]]
    cloudflared = result.by_service("cloudflared")
    assert cloudflared is not None and cloudflared.partial and cloudflared.logs == b""
    assert cloudflared.inspect["Config"]["Labels"]["com.docker.compose.service"] == "cloudflared"
    proxy = result.by_service("mcp-proxy")
    assert proxy is not None and not proxy.partial and b"route configured" in proxy.logs
    assert result.proxy_config is not None
    assert any(f"/containers/{stalled_id}/logs" in s for s in relay.seen)


def test_capture_deadline_covers_a_hung_listing(compose_stack: ComposeStack, interposer) -> None:
    relay = interposer(
        lambda line: "stall" if line.startswith("GET /v") and "/containers/json" in line else None
    )
    started = time.monotonic()
    with pytest.raises(TransientError, match="did not answer within 0.5s") as info:
        capture(relay.client(), compose_stack.project, deadline_s=0.5)
    assert time.monotonic() - started < 6  # liveness: the stalled listing never answers
    assert info.value.retryable


def test_stop_project_removes_everything_and_spares_other_projects(
    make_stack, engine_client: docker.DockerClient
) -> None:
    target = make_stack()
    bystander = make_stack()

    result = stop_project(engine_client, target.project)

    assert result.stopped == sorted(target.containers.values())
    assert result.removed_containers == sorted(target.containers.values())
    assert result.removed_networks == [f"{target.project}_default"]
    assert remaining(engine_client, target.project) == []
    assert engine_client.containers.list(all=True, filters={"name": target.project}) == []
    running = {c.name for c in engine_client.containers.list()}
    assert set(bystander.containers.values()) <= running
    assert remaining(engine_client, bystander.project) == sorted(bystander.containers.values()) + [
        f"network {bystander.project}_default"
    ]


def test_stop_project_is_harmless_to_rerun(compose_stack: ComposeStack) -> None:
    first = stop_project(compose_stack.client, compose_stack.project)
    again = stop_project(compose_stack.client, compose_stack.project)
    assert len(first.removed_containers) == 2
    assert again.stopped == again.removed_containers == again.removed_networks == []


def test_stop_project_removes_exited_containers_without_stopping_them(
    compose_stack: ComposeStack,
) -> None:
    proxy = compose_stack.client.containers.get(compose_stack.containers["mcp-proxy"])
    proxy.kill()
    proxy.wait(timeout=10)
    result = stop_project(compose_stack.client, compose_stack.project)
    assert result.stopped == [compose_stack.containers["cloudflared"]]
    assert result.removed_containers == sorted(compose_stack.containers.values())


def test_stop_project_tolerates_a_container_vanishing_mid_stop(
    compose_stack: ComposeStack, interposer, engine_client: docker.DockerClient
) -> None:
    victim = engine_client.containers.get(compose_stack.containers["cloudflared"])

    def hook(line: str) -> str | None:
        # Someone else removes the container just before our stop reaches the engine.
        if line.startswith("POST") and f"/containers/{victim.id}/stop" in line:
            with contextlib.suppress(docker.errors.NotFound):
                engine_client.api.remove_container(victim.id, force=True)
        return None

    relay = interposer(hook)
    result = stop_project(relay.client(), compose_stack.project)

    assert any(f"/containers/{victim.id}/stop" in s for s in relay.seen)
    assert victim.name not in result.removed_containers
    assert result.removed_containers == [compose_stack.containers["mcp-proxy"]]
    assert remaining(engine_client, compose_stack.project) == []


def test_stop_project_fails_loudly_when_something_remains(
    compose_stack: ComposeStack, interposer, engine_client: docker.DockerClient
) -> None:
    proxy_id = engine_client.containers.get(compose_stack.containers["mcp-proxy"]).id
    # The engine drops the removal of one container: the verification must catch it.
    relay = interposer(
        lambda line: "stall" if line.startswith("DELETE") and proxy_id in line else None
    )
    client = relay.client(timeout=1)
    with pytest.raises(StepFailed) as info:
        stop_project(client, compose_stack.project)
    assert info.value.step == "compose.stop"
    assert compose_stack.containers["mcp-proxy"] in info.value.detail
    assert "still present after stop" in info.value.detail
    assert compose_stack.token not in info.value.detail


def test_stop_project_on_an_unreachable_engine_is_transient(tmp_path) -> None:
    client = docker.DockerClient(
        base_url=f"unix://{tmp_path}/nothing.sock", version="1.41", timeout=2
    )
    with pytest.raises(TransientError, match="engine unreachable") as info:
        stop_project(client, "whatever")
    assert info.value.retryable


def test_recreate_from_inspect_restores_with_new_token_and_is_idempotent(
    compose_stack: ComposeStack,
) -> None:
    client = compose_stack.client
    captured = capture(client, compose_stack.project)
    inspects = [c.inspect for c in captured.containers]
    stop_project(client, compose_stack.project)
    assert remaining(client, compose_stack.project) == []

    new_token = "tok-rotated-" + "x" * 20
    names = recreate_from_inspect(
        client, inspects, env_overrides={"cloudflared": {"TUNNEL_TOKEN": new_token}}
    )
    assert names == [compose_stack.containers["mcp-proxy"], compose_stack.containers["cloudflared"]]
    running = wait_running(client, compose_stack.project, ["mcp-proxy", "cloudflared"], 10)
    assert running == sorted(names)

    cloudflared = client.containers.get(compose_stack.containers["cloudflared"])
    env = _env(cloudflared.attrs)
    assert env["TUNNEL_TOKEN"] == new_token
    assert cloudflared.labels["com.docker.compose.project"] == compose_stack.project
    assert cloudflared.attrs["HostConfig"]["NetworkMode"] == "none"
    assert cloudflared.attrs["Config"]["User"] == "65532"
    assert cloudflared.attrs["Config"]["Cmd"][:2] == ["cloudflared", "tunnel"]
    proxy = client.containers.get(compose_stack.containers["mcp-proxy"])
    assert _env(proxy.attrs).get("TUNNEL_TOKEN") is None
    mounts = {m["Destination"]: m for m in proxy.attrs["Mounts"]}
    assert mounts["/etc/mcp-gateway"]["Source"] == str(compose_stack.config_dir)
    assert mounts["/etc/mcp-gateway"]["RW"] is False

    deadline = time.monotonic() + 10
    while len(REGISTERED.findall(cloudflared.logs(timestamps=True))) < 4:
        assert time.monotonic() < deadline, "recreated cloudflared never registered"
        time.sleep(0.1)
    assert new_token.encode() in cloudflared.logs()  # canary mode prints the token it runs with

    ids = {c.name: c.id for c in project_containers(client, compose_stack.project)}
    again = recreate_from_inspect(
        client, inspects, env_overrides={"cloudflared": {"TUNNEL_TOKEN": new_token}}
    )
    assert again == names
    assert {c.name: c.id for c in project_containers(client, compose_stack.project)} == ids


def test_recreate_starts_a_stopped_container_of_the_same_service(
    compose_stack: ComposeStack,
) -> None:
    client = compose_stack.client
    inspects = [c.inspect for c in capture(client, compose_stack.project).containers]
    proxy = client.containers.get(compose_stack.containers["mcp-proxy"])
    proxy.stop(timeout=0)
    recreate_from_inspect(client, inspects)
    proxy.reload()
    assert proxy.status == "running"


def test_recreate_refuses_a_name_held_by_another_project(
    make_stack, engine_client: docker.DockerClient
) -> None:
    original = make_stack(wait=False)
    inspects = [c.inspect for c in capture(engine_client, original.project).containers]
    stop_project(engine_client, original.project)
    squatter = engine_client.containers.create(
        "localhost/mcp-ir/busybox:latest",
        ["sleep", "30"],
        name=original.containers["mcp-proxy"],
        labels={"com.docker.compose.project": "someone-else"},
        network_mode="none",
    )
    try:
        with pytest.raises(StepFailed, match="held by a container of another project"):
            recreate_from_inspect(engine_client, inspects)
    finally:
        squatter.remove(force=True)


def test_recreate_errors_never_quote_environment_values(
    compose_stack: ComposeStack,
) -> None:
    client = compose_stack.client
    inspects = [c.inspect for c in capture(client, compose_stack.project).containers]
    stop_project(client, compose_stack.project)
    broken = [dict(doc, Config=dict(doc["Config"], Image="localhost/absent:1")) for doc in inspects]
    with pytest.raises((StepFailed, TransientError)) as info:
        recreate_from_inspect(client, broken)
    detail = info.value.detail
    assert "localhost/absent:1" in detail and compose_stack.containers["mcp-proxy"] in detail
    assert compose_stack.token not in detail
    assert compose_stack.canary is not None and compose_stack.canary not in detail


def test_recreate_rejects_malformed_inspect_documents(engine_client: docker.DockerClient) -> None:
    with pytest.raises(StepFailed, match=r"inspects\[0\]: Name is missing"):
        recreate_from_inspect(engine_client, [{"Config": {"Image": "x"}}])
    with pytest.raises(StepFailed, match=r"inspects\[1\] \(p-x-1\): Config.Image is missing"):
        recreate_from_inspect(
            engine_client, [{"Name": "/a", "Config": {"Image": "x"}}, {"Name": "/p-x-1"}]
        )


def test_wait_running_names_a_service_that_exited(compose_stack: ComposeStack) -> None:
    client = compose_stack.client
    inspects = [c.inspect for c in capture(client, compose_stack.project).containers]
    stop_project(client, compose_stack.project)
    # cloudflared refuses to run without a token: it exits 1, as the real one does
    recreate_from_inspect(client, inspects, env_overrides={"cloudflared": {"TUNNEL_TOKEN": ""}})
    with pytest.raises(StepFailed, match="cloudflared: exited with code 1") as info:
        wait_running(client, compose_stack.project, ["mcp-proxy", "cloudflared"], timeout_s=10)
    assert info.value.step == "compose.restore"
