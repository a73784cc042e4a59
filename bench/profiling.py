"""`--profile DIR`: py-spy samples the service processes during each phase of the harness.

For each phase and service it writes `DIR/<phase>-<replica>.txt`, py-spy's collapsed stacks
(`--format raw`: one line per distinct stack with its sample count), and prints the functions
that were on CPU most (self time, and total time under each of the service's own functions).
py-spy is pinned in requirements-dev.txt; as root it attaches to any process, otherwise it needs
ptrace rights (see docs/performance.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from evolutivo_stack.stack import Stack

from bench.memory import MEASURED as PROFILED


@contextlib.contextmanager
def profiled(stack: Stack, directory: Path | None, phase: str, services: Sequence[str] = PROFILED) -> Iterator[None]:
    if directory is None:
        yield
        return
    pyspy = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv/bin/py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    for service in services:
        for replica in stack.replicas(service):
            if replica.pid is None:
                continue
            out = directory / f"{phase}-{replica.name}.txt"
            # BENCH_PROFILE_NATIVE=1: native frames too (gRPC's C core, uvloop, asyncpg's Cython), which
            # py-spy otherwise folds into the Python frame that called them.
            native = ["--native"] if os.environ.get("BENCH_PROFILE_NATIVE") == "1" else []
            command = [pyspy, "record", "--pid", str(replica.pid), "--rate", "97", "--format", "raw", *native]
            proc = subprocess.Popen(
                [*command, "-o", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            running.append((proc, out))
    try:
        yield
    finally:
        for proc, _ in running:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for proc, out in running:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if out.exists():
                print(summary(out), flush=True)


def summary(path: Path, top: int = 15) -> str:
    """The functions with the most samples on top of the stack (self) and anywhere in it (total)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"== {path.name}: {samples} samples"]
    lines += [f"  self  {n / max(samples, 1):6.1%}  {frame}" for frame, n in own.most_common(top)]
    ours = [(f, n) for f, n in total.most_common() if "evolutivo" in f or "sqlalchemy" in f or "asyncpg" in f]
    lines += [f"  total {n / max(samples, 1):6.1%}  {frame}" for frame, n in ours[:top]]
    return "\n".join(lines)
