"""Start and stop a real `bentoml serve` of this service on 127.0.0.1, and watch its processes.

Used by the tests (tests/test_serve*.py), the load and soak benchmarks: one way to launch, to find the
model worker, and to read the memory of every process of one server (arbiter + workers) from /proc.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

import safetyvlm

ROOT = Path(safetyvlm.__file__).resolve().parents[2]
TINY = ROOT / "models" / "shipped" / "qwen2_5_vl-tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(home: str | Path, **extra) -> dict:
    """The environment of a `bentoml serve` child: this checkout's library first on the path."""
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(Path(safetyvlm.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def processes():
    """(pid, parent pid, command line) of every process, from /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError, IndexError):
            continue
        yield int(stat.parent.name), ppid, cmd


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in processes():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_server(proc: subprocess.Popen, wait_s: float = 8) -> None:
    """Stop a `bentoml serve` started with its own process group: the workers BentoML started (each in
    its own process group), then the arbiter's group."""
    workers = descendants(proc.pid)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            # usually ~1 s; BentoML's API worker has been seen to sit out SIGTERM after a busy run, and
            # then to outlive the arbiter, so wait briefly and kill what is left of this server by pid
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of one process in MB (VmRSS, VmHWM); (0, 0) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
          if line.startswith(("VmRSS:", "VmHWM:"))}
    return kb.get("VmRSS", 0) / 1024, kb.get("VmHWM", 0) / 1024


class ServeProcess:
    """`bentoml serve safetyvlm.serve.service:SafetyVLM` with `SAFETYVLM_*` settings from `settings`.

    `with ServeProcess(home, log, SAFETYVLM_MAX_BATCH_SIZE=1) as srv:` waits until /readyz says 200.
    Without a `SAFETYVLM_API_TOKEN` setting it turns auth off explicitly (SAFETYVLM_AUTH=off: a local
    server on 127.0.0.1); the service itself refuses to start with auth on and no token. The drain after
    SIGTERM is 0 s unless set (SAFETYVLM_DRAIN_S), so stopping a test server stays quick."""

    def __init__(self, home: str | Path, log_path: str | Path, *, ready_timeout: float = 180, port: int | None = None,
                 **settings):
        self.home, self.log_path, self.ready_timeout = Path(home), Path(log_path), ready_timeout
        defaults = {"SAFETYVLM_MODEL": str(TINY), "SAFETYVLM_TORCH_THREADS": "1", "SAFETYVLM_DRAIN_S": "0"}
        if "SAFETYVLM_API_TOKEN" not in settings:
            defaults["SAFETYVLM_AUTH"] = "off"
        self.settings = {**defaults, **settings}
        self.port = port or free_port()   # a restart passes the old one
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.ready_seconds = None

    def start(self) -> ServeProcess:
        env = serve_env(self.home, **self.settings)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", "safetyvlm.serve.service:SafetyVLM",
                 "--host", "127.0.0.1", "--port", str(self.port)], cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.perf_counter()
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited ({self.proc.returncode}):\n{self.log_tail()}")
            if time.perf_counter() - t0 > self.ready_timeout:
                self.stop()
                raise RuntimeError(f"not ready after {self.ready_timeout} s:\n{self.log_tail()}")
            time.sleep(0.3)
        self.ready_seconds = time.perf_counter() - t0
        return self

    def ready(self, timeout: float = 5) -> bool:
        try:
            return requests.get(self.url + "/readyz", timeout=timeout).status_code == 200
        except requests.RequestException:  # refused while starting, or a slow probe
            return False

    def log_tail(self, n=3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]

    def model_worker(self) -> int:
        """The pid of the child that holds the model."""
        for pid, ppid, cmd in processes():
            if ppid == self.proc.pid and b"--service-name safetyvlm-model" in cmd:
                return pid
        raise LookupError("no model worker under the server")

    def api_worker(self) -> int:
        for pid, ppid, cmd in processes():
            if ppid == self.proc.pid and b"--service-name safetyvlm-model" not in cmd and b"python" in cmd:
                return pid
        raise LookupError("no API worker under the server")

    def memory(self) -> dict[int, tuple[float, float]]:
        """{pid: (RSS MB, peak RSS MB)} of the arbiter and every worker."""
        return {pid: memory_mb(pid) for pid in self.pids()}

    def rss_mb(self) -> float:
        return sum(rss for rss, _ in self.memory().values())

    def peak_rss_mb(self) -> float:
        return sum(peak for _, peak in self.memory().values())

    def stop(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
