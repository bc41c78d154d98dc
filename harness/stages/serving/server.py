"""An engine's OpenAI-compatible server for one cell: start on 127.0.0.1, wait for readiness,
always stop (the whole process tree), and sample its peak memory meanwhile (killing the tree
when a memory limit is set and exceeded)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.engines.base import ServerLaunch
from harness.isolation import PeakSampler, dies_with_this_process, kill_tree, tree_pids

LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """The server exited, never became ready, or could not bind its port."""


@dataclass
class RunningServer:
    base_url: str
    launch: ServerLaunch
    pid: int
    startup_s: float
    sampler: PeakSampler

    @property
    def peak_rss_bytes(self) -> int:
        return self.sampler.peak_rss

    @property
    def peak_gpu_bytes(self) -> int | None:
        return self.sampler.peak_gpu

    @property
    def memory_error(self) -> str | None:
        """ "out of memory: peak X GiB > limit Y GiB" when the tree was killed for its memory."""
        return self.sampler.memory_error


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


#: loopback requests never go through a proxy (http_proxy in the environment would make a
#: healthy server look dead)
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on 127.0.0.1:`port` (or any address), from /proc/net/tcp; None
    where /proc cannot say (not Linux)."""
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    found = set()
    for line in table:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port and address in ("0100007F", "00000000"):
            found.add(inode)
    return found


def listener_is_ours(port: int, pid: int) -> bool:
    """Whether the socket listening on `port` belongs to `pid`'s process tree (a foreign
    listener that took the port meanwhile must not pass for our server)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return True  # no /proc (not Linux), or an IPv6-only listener: the health check alone decides
    for member in tree_pids(pid):
        try:
            links = {os.readlink(entry) for entry in Path(f"/proc/{member}/fd").iterdir()}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            return True
    return False


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    interesting = [line for line in text if "Error" in line or "error" in line]
    return " | ".join((interesting or text)[-lines:])


def _said(path: Path) -> str:
    """ ": what its log ended with", or nothing when the log is empty."""
    tail = _tail(path)
    return f": {tail}" if tail else ""


@contextmanager
def serve(
    launch: ServerLaunch, port: int, log_path: Path, startup_timeout_s: float, memory_limit_bytes: int | None = None
) -> Iterator[RunningServer]:
    """Start the server described by `launch` (already bound to `port` in its argv).
    memory_limit_bytes: the most RSS its process tree may hold (None: no limit)."""
    if port_in_use(port):
        raise ServerError(
            f"port {port} on {LOOPBACK} is already taken; free it or leave serving.port unset for a free one"
        )
    env = {**os.environ, **launch.env}
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed right after the server has its copy
    except OSError as exc:
        raise ServerError(f"cannot open the server log {log_path}: {exc}") from exc
    with log:
        proc = subprocess.Popen(  # noqa: S603 - argv built by the engine module, no shell
            launch.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=dies_with_this_process(),
        )
    sampler = PeakSampler(proc.pid, limit_bytes=memory_limit_bytes)
    sampler.start()
    base_url = f"http://{LOOPBACK}:{port}"
    started = time.monotonic()
    try:
        while proc.poll() is not None or not (
            _healthy(base_url + launch.health_path) and listener_is_ours(port, proc.pid)
        ):
            if proc.poll() is not None:
                if sampler.memory_error is not None:
                    raise ServerError(f"{sampler.memory_error} (the server was killed before it was ready)")
                taken = (
                    f" (port {port} on {LOOPBACK} was taken meanwhile)"
                    if "address already in use" in _tail(log_path, 50).lower()
                    else ""
                )
                raise ServerError(
                    f"server exited with status {proc.returncode} before it was ready{taken}{_said(log_path)}"
                )
            if time.monotonic() - started > startup_timeout_s:
                raise ServerError(
                    f"server not ready after {startup_timeout_s:.0f} s (serving.startup_timeout_s; "
                    f"killed){_said(log_path)}"
                )
            time.sleep(0.25)
        yield RunningServer(base_url, launch, proc.pid, time.monotonic() - started, sampler)
    finally:
        _stop(proc)
        sampler.stop()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL to everything left: the tree as it was, and the
    process group (children that the server's exit orphaned keep its group)."""
    tree = tree_pids(proc.pid)
    proc.terminate()
    try:
        os.killpg(proc.pid, signal.SIGCONT)  # a stopped (hung) server handles its SIGTERM too
    except OSError:
        pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    for pid in tree:
        kill_tree(pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait(timeout=10)
