"""The process supervisor of socialads.local on small real processes: start with health-wait,
named errors with the log's tail, whole-group stop, stale state files."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from socialads.errors import ServiceError
from socialads.local import embedded, supervisor
from socialads.local.stack import Stack, StackConfig
from socialads.local.supervisor import ProcessRecord, Service


def python_service(
    name: str, script: str, health: Callable[[], bool] | None = None, url: str = "(none)"
) -> Service:
    """A server that is ``python -c script``, healthy when ``health()`` says so."""
    return Service(
        name=name,
        argv=(sys.executable, "-c", script),
        env={},
        health=health or (lambda: False),
        health_url=url,
    )


def test_a_server_that_dies_during_start_is_named_with_its_log_tail(tmp_path: Path) -> None:
    script = "import sys; print('cannot bind 127.0.0.1:1: address in use'); sys.exit(3)"
    launched = supervisor.launch(
        python_service("flaky", script), log=tmp_path / "flaky.log", cwd=tmp_path
    )
    with pytest.raises(ServiceError) as caught:
        supervisor.wait_healthy([launched], timeout=60)
    assert caught.value.service == "flaky"
    message = str(caught.value)
    assert message.startswith("flaky exited with code 3 before it was healthy")
    assert str(tmp_path / "flaky.log") in message
    assert message.endswith("cannot bind 127.0.0.1:1: address in use")


def test_a_server_never_healthy_times_out_with_its_url_and_log(tmp_path: Path) -> None:
    script = "import time; print('still migrating', flush=True); time.sleep(300)"
    service = python_service("slow", script, url="http://127.0.0.1:1/health")
    launched = supervisor.launch(service, log=tmp_path / "slow.log", cwd=tmp_path)
    try:
        with pytest.raises(ServiceError) as caught:
            supervisor.wait_healthy([launched], timeout=1)
        message = str(caught.value)
        assert message.startswith("slow not healthy after 1s (http://127.0.0.1:1/health)")
        assert "still migrating" in message
    finally:
        supervisor.stop({"slow": launched.record}, grace=5)
        launched.process.poll()


def test_health_wait_returns_once_the_server_answers_and_stop_frees_the_port(
    tmp_path: Path,
) -> None:
    port = supervisor.free_port()
    url = f"http://127.0.0.1:{port}/"
    service = Service(
        name="web",
        argv=(sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)),
        env={},
        health=lambda: supervisor.http_ok(url),
        health_url=url,
    )
    launched = supervisor.launch(service, log=tmp_path / "web.log", cwd=tmp_path)
    try:
        timings = supervisor.wait_healthy([launched], timeout=60)
        assert list(timings) == ["web"]
        assert launched.record.running()
    finally:
        assert supervisor.stop({"web": launched.record}, grace=10) == ["web"]
        launched.process.poll()
    assert not launched.record.running()
    assert supervisor.port_free("127.0.0.1", port)


# A leader that dies on SIGTERM and a child of it that ignores SIGTERM, in one process group.
GROUP_SCRIPT = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", (
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open('child.pid', 'w').write(str(os.getpid())); time.sleep(300)")])
time.sleep(300)
"""


def test_stop_ends_the_whole_process_group_sigkill_after_the_grace(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    service = python_service(
        "group", GROUP_SCRIPT, health=lambda: pidfile.exists() and bool(pidfile.read_text())
    )
    launched = supervisor.launch(service, log=tmp_path / "group.log", cwd=tmp_path)
    said: list[str] = []
    try:
        supervisor.wait_healthy([launched], timeout=60)
        child = int(pidfile.read_text())
        leader = launched.record.pid
        assert sorted(supervisor.group_members(leader)) == sorted([leader, child])
    finally:
        stopped = supervisor.stop({"group": launched.record}, grace=1, notify=said.append)
        launched.process.poll()
    assert stopped == ["group"]
    assert said == ["group still running 1s after SIGTERM: SIGKILL"]
    assert supervisor.group_members(leader) == []
    assert not launched.record.running()


def test_a_record_of_a_finished_or_reused_pid_is_not_running(tmp_path: Path) -> None:
    launched = supervisor.launch(
        python_service("brief", "pass"), log=tmp_path / "brief.log", cwd=tmp_path
    )
    launched.process.wait(timeout=60)
    assert not launched.record.running()
    # The pid of a live process that is not the one recorded (another start time).
    me = psutil.Process()
    reused = ProcessRecord(pid=me.pid, created=me.create_time() - 100)
    assert not reused.running()
    assert supervisor.stop({"reused": reused}, grace=1) == []
    assert me.is_running()


def test_a_damaged_state_file_reads_as_nothing_recorded(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    assert supervisor.read_state(state) == {}
    assert ProcessRecord.from_json({"pid": "twelve"}) is None
    assert ProcessRecord.from_json(["pid", 1]) is None


@pytest.mark.parametrize("content", ["{broken", "dead"])
def test_a_stale_local_server_file_is_not_trusted_and_stop_clears_it(
    tmp_path: Path, content: str
) -> None:
    """The embedded default's record of a server that is gone (killed, machine restarted)."""
    home = tmp_path / "prefect"
    home.mkdir()
    gone = supervisor.launch(python_service("gone", "pass"), log=home / "x.log", cwd=home)
    gone.process.wait(timeout=60)
    state = home / embedded.STATE_FILE
    if content == "dead":
        state.write_text(json.dumps({**gone.record.to_json(), "url": "http://127.0.0.1:1"}))
    else:
        state.write_text(content)
    assert embedded.read_local_server(home) is None
    assert embedded.stop_local_server(home) is False
    assert not state.exists()


def test_a_stale_stack_state_reads_as_down_and_down_clears_it(tmp_path: Path) -> None:
    """The native stack's state file of servers that are gone (e.g. after a reboot)."""
    gone = supervisor.launch(python_service("gone", "pass"), log=tmp_path / "x.log", cwd=tmp_path)
    gone.process.wait(timeout=60)
    cfg = StackConfig.from_env({}, tmp_path / "stack", 19000)
    cfg.state_dir.mkdir()
    records = {name: gone.record.to_json() for name in ("s3", "mlflow", "prefect")}
    supervisor.write_state(cfg.state_dir / "state.json", {"services": records})
    out = io.StringIO()
    launcher = Stack(cfg, out=out)
    assert not launcher.is_running()
    assert [info["running"] for info in launcher.status().values()] == [False] * 3
    launcher.down()
    assert launcher.read_state()["services"] == {}
    assert "stopped" not in out.getvalue()
