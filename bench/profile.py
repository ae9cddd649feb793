"""Optional py-spy sampling of the gateway (or another process tree) during gateway phases.

`python -m bench --profile` records, for the first gateway phase of each benchmark, a py-spy
profile of the gunicorn master and its workers (`--subprocesses`, CPU samples only: idle
threads are left out) into bench/profiles/<benchmark>.txt (collapsed stacks) and prints the
functions that hold most samples (self and inclusive). Profiling costs CPU: numbers from a
--profile run are not the ones to quote.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

PROFILES = Path(__file__).resolve().parent / "profiles"


def py_spy() -> str | None:
    """The py-spy executable (next to this Python, or on PATH)."""
    near = Path(sys.executable).parent / "py-spy"
    return str(near) if near.exists() else shutil.which("py-spy")


class Profile:
    """Context manager: py-spy record of a process tree while the block runs."""

    def __init__(self, name: str, pid: int, enabled: bool, rate: int = 200) -> None:
        self.name = name
        self.pid = pid
        self.enabled = enabled and py_spy() is not None
        self.rate = rate
        self.procs: list[subprocess.Popen] = []
        # two samplers: threads on CPU (includes kernel time in send/recv copies), and only
        # the thread holding the GIL (where the Python interpreter spends its time)
        self.out = PROFILES / f"{name}.txt"
        self.out_gil = PROFILES / f"{name}-gil.txt"

    def __enter__(self) -> Profile:
        if not self.enabled:
            return self
        PROFILES.mkdir(exist_ok=True)
        for out, extra in ((self.out, []), (self.out_gil, ["--gil"])):
            argv = [py_spy(), "record", "--pid", str(self.pid), "--subprocesses", "--rate",
                    str(self.rate), "--format", "raw", "--output", str(out), "--nonblocking",
                    *extra]
            self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
        time.sleep(0.5)  # let them attach before the work starts
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def top(self, n: int = 15) -> dict[str, list[tuple[str, float]]]:
        """{"self": [(frame, share)], "inclusive": [...]} from the collapsed stacks."""
        if not self.enabled or not self.out.exists():
            return {}
        return summarize(self.out, n)

    def top_gil(self, n: int = 15) -> dict[str, list[tuple[str, float]]]:
        if not self.enabled or not self.out_gil.exists():
            return {}
        out = summarize(self.out_gil, n)
        if out:
            out["by_layer"] = layers(self.out_gil)
        return out


def _frame(raw: str) -> str:
    # py-spy raw frames look like "function (path/file.py:123)"; keep function + file:line
    name, _, where = raw.partition(" (")
    where = where.rstrip(")")
    short = "/".join(where.split("/")[-2:]) if where else ""
    return f"{name} ({short})" if short else name


def _samples(path: Path) -> Iterator[tuple[list[str], int]]:
    """(raw frames, sample count) per line of a py-spy collapsed-stack file."""
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def summarize(path: Path, n: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Top frames by self samples and by inclusive samples, as shares of all samples."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for raw, k in _samples(path):
        total += k
        frames = [_frame(f) for f in raw if f]
        # drop the process/thread header frames py-spy puts first
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1]] += k
        for f in set(frames):
            incl[f] += k
    if not total:
        return {}
    return {
        "samples": [("total", float(total))],
        "self": [(f, c / total) for f, c in own.most_common(n)],
        "inclusive": [(f, c / total) for f, c in incl.most_common(n)],
    }


# Where the gateway's Python time goes, by layer: (label, substrings of a frame). A sample counts
# for the first layer (from the top of the list) one of its frames matches, so nested layers
# (the registry call inside the view) are listed before the layers that contain them.
LAYERS = [
    ("prometheus metrics", ("prometheus_client/",)),
    ("access log line (service/obs/logs.py)", ("service/obs/logs.py",)),
    ("registry call: urllib3 + http.client", ("urllib3/", "http/client.py")),
    ("redis-py round trips", ("redis/",)),
    ("flask-smorest/marshmallow (schemas)", ("flask_smorest/", "marshmallow/", "webargs/")),
    ("gunicorn: parse request", ("gunicorn/http/parser.py", "gunicorn/http/message.py",
                                 "gunicorn/http/unreader.py", "gunicorn/http/body.py")),
    ("gunicorn: write response", ("gunicorn/http/wsgi.py", "gunicorn/util.py")),
    ("app hooks: auth, security, audit", ("service/http/security.py", "service/core/auth.py")),
    ("gthread main loop (accept, keep-alive polling)", (
        "wait_for_and_dispatch_events", "enqueue_req", "ThreadWorker.accept",
        "on_client_socket_readable", "murder_keepalived", "ThreadWorker.run ")),
    ("app code (views, stores, the Flask objects they touch)", ("service/", "workers/")),
    ("Flask/Werkzeug (routing, context, response)", ("flask/", "werkzeug/")),
    ("gthread thread pool hand-off", ("gunicorn/workers/", "concurrent/futures",
                                      "selectors.py", "queue.py", "threading.py")),
]


def layers(path: Path) -> list[tuple[str, float]]:
    """Share of samples per layer (see LAYERS), largest first."""
    counts: Counter[str] = Counter()
    total = 0
    for frames, k in _samples(path):
        total += k
        for label, needles in LAYERS:
            if any(n in f for f in frames for n in needles):
                counts[label] += k
                break
        else:
            counts["other"] += k
    return [(label, c / total) for label, c in counts.most_common()] if total else []


def print_top(name: str, top: dict[str, list[tuple[str, float]]], what: str = "on CPU") -> None:
    if not top:
        return
    print(f"\n[profile] {name}: {int(top['samples'][0][1])} samples of gateway threads {what}")
    print("  self:")
    for frame, share in top["self"][:10]:
        print(f"    {share * 100:5.1f}%  {frame}")
    print("  inclusive:")
    for frame, share in top["inclusive"][:12]:
        print(f"    {share * 100:5.1f}%  {frame}")
    if "by_layer" in top:
        print("  by layer:")
        for label, share in top["by_layer"]:
            print(f"    {share * 100:5.1f}%  {label}")
