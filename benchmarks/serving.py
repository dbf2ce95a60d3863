"""Section 3: the gRPC path over loopback, against `lookalike serve`.

The server is the unmodified command line in a subprocess, so the load
generator's threads never share its interpreter lock. Each client thread
has its own channel (LookalikeClient) and sends its next request as soon
as the last one is answered (a closed loop); latency is what the client
sees, serialisation and loopback included.
"""

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np

from benchmarks.timing import percentile
from lookalike.workdir import Workdir
from server.client import LookalikeClient

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
_READY = re.compile(r"serving \S+ on (\S+):(\d+)")
TOP_K = 10


@contextlib.contextmanager
def served(
    workdir: Path, log_path: Path, *, startup_timeout_s: float = 180.0
) -> Iterator[tuple[str, int]]:
    """Runs `lookalike serve --workdir workdir --port 0`; yields its
    address ("host:port") and process ID, and stops it with SIGTERM.

    The index's files are read once first, so that the server starts with
    them in the page cache, as a server that has been running would: on
    this machine a just-built 300k index was otherwise partly evicted, and
    the first thousands of queries waited on disk reads (p50 12.8 ms at one
    client while the server's own CPU time was 3 ms per request).
    """
    warm_page_cache(Workdir(workdir).index)
    command = [
        sys.executable,
        "-m",
        "lookalike.cli",
        "serve",
        f"--workdir={workdir}",
        "--port=0",
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            target = _wait_ready(process, startup_timeout_s, log_path)
            yield target, process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def warm_page_cache(folder: Path) -> int:
    """Reads every file under folder; returns the bytes read."""
    total = 0
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            with path.open("rb") as file:
                while chunk := file.read(1 << 20):
                    total += len(chunk)
    return total


def _wait_ready(
    process: subprocess.Popen, timeout_s: float, log_path: Path
) -> str:
    result: dict[str, str] = {}

    def read() -> None:
        for line in process.stdout:
            match = _READY.search(line)
            if match:
                result["target"] = f"{match[1]}:{match[2]}"
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    if "target" not in result:
        process.kill()
        raise RuntimeError(
            f"the server did not start within {timeout_s:.0f}s; see {log_path}"
        )
    return result["target"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are the 14th and 15th fields; the split above
    # dropped the first two (pid and the command name).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_mib(pid: int) -> dict[str, float]:
    """Peak (VmHWM) and current (VmRSS) resident memory of a process."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) / 1024
    return {"vm_hwm_mib": values["VmHWM"], "vm_rss_mib": values["VmRSS"]}


# TODO: the load generator shares the machine's cores with the server, so
# its own CPU time inflates the latencies at high concurrency; a second
# machine would isolate them, which a two-core box cannot.
def run_load(
    target: str,
    send: Callable[[LookalikeClient, int], object],
    *,
    clients: int,
    duration_s: float,
    warmup_s: float,
    server_pid: int | None = None,
) -> dict:
    """Closed-loop load: ``clients`` threads, each with its own channel,
    call ``send(client, i)`` back to back for warmup_s (not recorded) and
    then duration_s; returns latency percentiles, requests/s and the CPU
    time per request of the load generator and (given its pid) of the
    server."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[dict[str, int]] = [{} for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    times: dict[str, float] = {}

    def worker(index: int) -> None:
        with LookalikeClient(target, timeout=10.0) as client:
            # Connect before the clock starts.
            _send_counting(send, client, index, {})
            barrier.wait()
            i = index
            while time.perf_counter() < times["measure_from"]:
                _send_counting(send, client, i, {})
                i += clients
            while time.perf_counter() < times["until"]:
                start = time.perf_counter()
                if _send_counting(send, client, i, errors[index]):
                    latencies[index].append(time.perf_counter() - start)
                i += clients

    threads = [
        threading.Thread(target=worker, args=(index,), daemon=True)
        for index in range(clients)
    ]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    times["measure_from"] = now + warmup_s
    times["until"] = now + warmup_s + duration_s
    barrier.wait()
    time.sleep(max(0.0, times["measure_from"] - time.perf_counter()))
    cpu_start = _cpu_clocks(server_pid)
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - times["measure_from"]
    cpu_end = _cpu_clocks(server_pid)

    merged = sorted(latency * 1e3 for each in latencies for latency in each)
    error_counts: dict[str, int] = {}
    for each in errors:
        for code, count in each.items():
            error_counts[code] = error_counts.get(code, 0) + count
    return {
        "clients": clients,
        "requests": len(merged),
        "errors": error_counts,
        "requests_per_s": len(merged) / elapsed,
        "p50_ms": percentile(merged, 50),
        "p95_ms": percentile(merged, 95),
        "p99_ms": percentile(merged, 99),
        "mean_ms": float(np.mean(merged)) if merged else float("nan"),
        **_cpu_per_request(
            cpu_start, cpu_end, len(merged) + sum(error_counts.values())
        ),
    }


def _cpu_clocks(server_pid: int | None) -> dict[str, float]:
    clocks = {"load_generator": time.process_time()}
    if server_pid is not None:
        clocks["server"] = cpu_seconds(server_pid)
    return clocks


def _cpu_per_request(
    start: dict[str, float], end: dict[str, float], requests: int
) -> dict[str, float]:
    return {
        f"{name}_cpu_ms_per_request": (end[name] - start[name])
        * 1e3
        / max(requests, 1)
        for name in start
    }


def _send_counting(
    send: Callable[[LookalikeClient, int], object],
    client: LookalikeClient,
    i: int,
    errors: dict[str, int],
) -> bool:
    try:
        send(client, i)
    except grpc.RpcError as error:
        code = error.code().name
        errors[code] = errors.get(code, 0) + 1
        return False
    return True


def query_by_id(product_ids: Sequence[str]) -> Callable:
    def send(client: LookalikeClient, i: int) -> object:
        return client.query_by_id(
            product_ids[i % len(product_ids)], top_k=TOP_K
        )

    return send


def query_by_image(images: Sequence[bytes]) -> Callable:
    def send(client: LookalikeClient, i: int) -> object:
        return client.query_by_image(images[i % len(images)], top_k=TOP_K)

    return send


def recall_at_k(
    target: str,
    product_ids: Sequence[str],
    vectors: np.ndarray,
    query_rows: Sequence[int],
    *,
    k: int = TOP_K,
) -> float:
    """Share of the exact k nearest neighbours (numpy, the product itself
    left out) that QueryById returns. A returned product as close as the
    k-th exact neighbour counts, so ties are not misses."""
    found = 0
    with LookalikeClient(target, timeout=30.0) as client:
        for row in query_rows:
            response = client.query_by_id(product_ids[row], top_k=k)
            distances = np.linalg.norm(vectors - vectors[row], axis=1)
            distances[row] = np.inf
            kth = np.partition(distances, k - 1)[k - 1]
            # Float32 distances computed two ways differ in the last bits.
            tolerance = 1e-5 * max(1.0, float(kth))
            found += sum(
                result.distance <= kth + tolerance
                for result in response.results
            )
    return found / (k * len(query_rows))


def measure_server(
    workdir: Path,
    log_path: Path,
    *,
    product_ids: Sequence[str],
    vectors: np.ndarray,
    query_images: Sequence[bytes],
    concurrency: Sequence[int],
    duration_s: float,
    warmup_s: float,
    recall_queries: int,
    seed: int,
) -> dict:
    """Latency and throughput of QueryById and QueryByImage at each
    concurrency, recall@10 of QueryById, and the server's peak memory."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(product_ids))
    query_ids = [product_ids[row] for row in order[:10_000]]
    rows = order[: min(recall_queries, len(product_ids) - 1)]
    result: dict = {"QueryById": {}, "QueryByImage": {}}
    with served(workdir, log_path) as (target, pid):
        result["server_started_mib"] = peak_memory_mib(pid)["vm_rss_mib"]
        methods = (
            ("QueryById", query_by_id(query_ids)),
            ("QueryByImage", query_by_image(query_images)),
        )
        for name, send in methods:
            for clients in concurrency:
                numbers = run_load(
                    target,
                    send,
                    clients=clients,
                    duration_s=duration_s,
                    warmup_s=warmup_s,
                    server_pid=pid,
                )
                logger.info(
                    "  %s, %2d clients: p50 %.2f ms, p99 %.2f ms, %.0f req/s%s",
                    name,
                    clients,
                    numbers["p50_ms"],
                    numbers["p99_ms"],
                    numbers["requests_per_s"],
                    f", errors {numbers['errors']}"
                    if numbers["errors"]
                    else "",
                )
                result[name][str(clients)] = numbers
        logger.info("  recall@%d over %d queries", TOP_K, len(rows))
        result[f"recall_at_{TOP_K}"] = recall_at_k(
            target, product_ids, vectors, rows
        )
        result.update(peak_memory_mib(pid))
    return result


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
