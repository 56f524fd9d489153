"""Several endpoints per backend, and re-sends that never execute anything twice: replicas
killed, cut off mid-call and slowed down under load (real processes and sockets)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from switchyard.upstream.endpoints import STALE_S
from tests.harness import FIXTURES, PYTHON, Gateway, Proc, free_port, start_port_fixture
from tests.rpc import RawClient

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

FLAKY = str(FIXTURES / "flaky.py")


def _replica(name: str, port: int, exec_file: Path, *flags: str) -> Proc:
    proc, _ = start_port_fixture(
        [PYTHON, FLAKY, "--port", str(port), "--name", name, *flags],
        f"flaky-{name}",
        env={"FIXTURE_EXEC_FILE": str(exec_file)},
    )
    return proc


async def _control(port: int, **mode: Any) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}/control/mode", json=mode) as resp,
    ):
        assert resp.status == 200


def _executions(exec_file: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    if exec_file.exists():
        for line in exec_file.read_text().splitlines():
            _, tool, tag = line.split(" ", 2)
            counts[f"{tool}:{tag}"] += 1
    return counts


async def _call(client: RawClient, tool: str, tag: str, ms: int = 0) -> tuple[bool, str]:
    resp = await client.request(
        "tools/call", {"name": f"svc_{tool}", "arguments": {"tag": tag, "ms": ms}}
    )
    body = resp.json
    if "result" in body:
        return True, str(body["result"]["content"][0]["text"])
    return False, str(body["error"]["message"])


async def _load(
    client: RawClient,
    tool: str,
    total: int,
    workers: int,
    prefix: str,
    during: Callable[[int], Any] | None = None,
    ms: int = 0,
) -> tuple[list[tuple[str, bool, str, float]], float]:
    """`total` calls by `workers` concurrent callers; `during(done)` runs after each call."""
    results: list[tuple[str, bool, str, float]] = []
    counter = iter(range(total))
    started = time.monotonic()

    async def worker() -> None:
        for i in counter:
            tag = f"{prefix}-{i}"
            t0 = time.monotonic()
            ok, text = await _call(client, tool, tag, ms)
            results.append((tag, ok, text, time.monotonic() - t0))
            if during is not None:
                await during(len(results))

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), 180)
    return results, time.monotonic() - started


async def _all_up(gw: Gateway, backend: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [e["state"] for e in gw.readyz()["backends"][backend]["endpoints"]]
        if all(state == "up" for state in states):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(gw.readyz()["backends"][backend])


def _p(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def test_a_replica_killed_under_load_costs_almost_no_call_and_nothing_runs_twice(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    exec_file = tmp_path / "executions"
    ports = [free_port() for _ in range(3)]
    procs = [_replica(f"r{i}", port, exec_file) for i, port in enumerate(ports)]
    try:
        gw = gateway_factory(
            {
                "servers": {
                    "svc": {
                        "urls": [f"http://127.0.0.1:{p}/mcp" for p in ports],
                        "health": {"interval": 0.5, "timeout": 1},
                        "isolation": "shared",
                    }
                }
            }
        )
        gw.wait_backend("svc")
        await _all_up(gw, "svc")
        killed = False

        async def kill_one(done: int) -> None:
            nonlocal killed
            if not killed and done >= 600:
                killed = True
                procs[1].process.send_signal(signal.SIGKILL)

        async with aiohttp.ClientSession() as http:
            client = await RawClient(gw.url, http).open()
            results, elapsed = await _load(client, "count", 2000, 16, "k", kill_one, ms=5)
        failed = [r for r in results if not r[1]]
        fraction = len(failed) / len(results)
        served = Counter(text.split(" ", 1)[0] for _, ok, text, _ in results if ok)
        print(
            f"\nreplica killed under load: {len(results)} calls in {elapsed:.1f} s, "
            f"{len(failed)} failed ({fraction:.3%}), served by {dict(served)}"
        )
        assert killed
        assert fraction < 0.005, failed[:5]
        # Every replica took a share before the kill; the survivors took the rest.
        assert set(served) == {"r0", "r1", "r2"}
        executions = _executions(exec_file)
        assert max(executions.values()) == 1, [k for k, n in executions.items() if n > 1]
        # Every call that succeeded ran exactly once; a failed one at most once.
        for tag, ok, _, _ in results:
            assert executions[f"count:{tag}"] == (1 if ok else executions[f"count:{tag}"])
        # The killed replica comes back (same port) and is taken back into rotation.
        procs[1] = _replica("r1", ports[1], exec_file)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if gw.readyz()["backends"]["svc"]["endpoints"][1]["state"] == "up":
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(gw.readyz()["backends"]["svc"])
        async with aiohttp.ClientSession() as http:
            client = await RawClient(gw.url, http).open()
            again, _ = await _load(client, "count", 200, 8, "back")
        assert all(ok for _, ok, _, _ in again)
        assert "r1" in {text.split(" ", 1)[0] for _, _, text, _ in again}
    finally:
        for proc in procs:
            proc.stop()


async def test_connections_cut_mid_call_never_execute_a_call_twice(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    exec_file = tmp_path / "executions"
    port = free_port()
    proc = _replica("solo", port, exec_file)
    try:
        gw = gateway_factory(
            {
                "servers": {
                    "svc": {
                        "url": f"http://127.0.0.1:{port}/mcp",
                        "isolation": "shared",
                        # Cuts are transport failures: keep the breaker out of this test.
                        "breaker": {"enabled": False},
                        # Every 4th call is cut: 5 sends leave (1/4)^4 of the cut ones failing.
                        "retries": {"attempts": 5, "backoff": 0.01},
                    }
                }
            }
        )
        gw.wait_backend("svc")
        await _control(port, cut_every=4)
        async with aiohttp.ClientSession() as http:
            client = await RawClient(gw.url, http).open()
            counted, _ = await _load(client, "count", 400, 8, "c")
            looked, _ = await _load(client, "lookup", 400, 8, "l")
        executions = _executions(exec_file)
        count_runs = {k: n for k, n in executions.items() if k.startswith("count:")}
        count_failed = [r for r in counted if not r[1]]
        lookup_failed = [r for r in looked if not r[1]]
        print(
            f"\ncut every 4th call: count {len(count_failed)}/400 failed, "
            f"{sum(count_runs.values())} executions; lookup {len(lookup_failed)}/400 failed, "
            f"{sum(n for k, n in executions.items() if k.startswith('lookup:'))} executions"
        )
        # Non-idempotent: never re-sent, so exactly one execution per call; the cut ones fail.
        assert len(count_runs) == 400 and set(count_runs.values()) == {1}
        assert 80 <= len(count_failed) <= 120
        assert all("connection failed" in text for _, _, text, _ in count_failed)
        # Read-only and idempotent: re-sent after a cut, so nearly every call succeeds.
        lookup_runs = sum(n for k, n in executions.items() if k.startswith("lookup:"))
        assert lookup_runs > 400  # the cut ones were sent again
        assert len(lookup_failed) <= 10  # only those cut on every one of their 5 sends
    finally:
        proc.stop()


SLOW_MS = 200


async def test_one_slow_replica_and_the_p99(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    exec_file = tmp_path / "executions"
    ports = [free_port() for _ in range(3)]
    procs = [_replica(f"r{i}", port, exec_file) for i, port in enumerate(ports)]
    try:
        gw = gateway_factory(
            {
                "servers": {
                    "svc": {
                        "urls": [f"http://127.0.0.1:{p}/mcp" for p in ports],
                        "isolation": "shared",
                    }
                }
            }
        )
        gw.wait_backend("svc")
        await _all_up(gw, "svc")
        async with aiohttp.ClientSession() as http:
            client = await RawClient(gw.url, http).open()
            # Enough calls that the few a slow replica takes before its answers show it is
            # slow (the first ones, and one now and then to see whether it recovered) are
            # measured, not hidden, yet fewer than 1% of the whole.
            healthy, _ = await _load(client, "count", 1500, 6, "h", ms=20)
            await _control(ports[2], delay_ms=SLOW_MS)  # 10x the call's own 20 ms
            slowed, _ = await _load(client, "count", 1500, 6, "s", ms=20)
        p99_healthy = _p([r[3] for r in healthy], 0.99)
        p99_slowed = _p([r[3] for r in slowed], 0.99)
        share = sum(1 for r in slowed if r[2].startswith("r2 ")) / len(slowed)
        print(
            f"\none replica 10x slower: p99 {p99_healthy * 1000:.0f} ms -> "
            f"{p99_slowed * 1000:.0f} ms ({p99_slowed / p99_healthy:.2f}x); "
            f"p50 {_p([r[3] for r in healthy], 0.5) * 1000:.0f} -> "
            f"{_p([r[3] for r in slowed], 0.5) * 1000:.0f} ms; slow replica's share {share:.1%}"
        )
        assert all(ok for _, ok, _, _ in healthy + slowed)
        assert share < 0.01
        # The slow replica does not set the p99: fewer than 1 % of the calls took as long as
        # one answer of it. (Measured against the all-fast p99 instead, at 1.5 times it, this
        # failed on a loaded CI machine at 60 ms against 32 ms: noise between two phases a
        # few seconds apart, far below the 220 ms a slow replica's answer takes.)
        assert p99_slowed < SLOW_MS / 1000
    finally:
        for proc in procs:
            proc.stop()


async def test_stdio_replicas_share_calls_and_a_crashed_one_is_replaced(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(
        {
            "servers": {
                "crashy": {
                    "command": PYTHON,
                    "args": [str(FIXTURES / "raw_stdio.py"), "--scenario", "crashy"],
                    "replicas": 3,
                    "isolation": "shared",
                    "unavailable_grace": 60,
                }
            }
        }
    )
    backend = gw.wait_backend("crashy")
    assert len(backend["endpoints"]) == 3
    await _all_up(gw, "crashy")

    async def pids(client: RawClient, n: int, replicas: int = 0) -> Counter[str]:
        """Which processes answer `n` calls; with `replicas`, more calls until that many have
        answered, for as long as a replica that answered slowly once may be passed over
        (endpoints.STALE_S, on a busy machine) and a little more."""
        seen: Counter[str] = Counter()
        deadline = time.monotonic() + 3 * STALE_S
        i = 0
        while i < n or (len(seen) < replicas and time.monotonic() < deadline):
            result = await client.result(
                "tools/call", {"name": "crashy_whoami", "arguments": {}}, request_id=i
            )
            seen[result["content"][0]["text"]] += 1
            i += 1
        return seen

    async with aiohttp.ClientSession() as http:
        client = await RawClient(gw.url, http).open()
        before = await pids(client, 60, replicas=3)
        assert len(before) == 3  # every replica is a process of its own, and each got calls
        resp = await client.request("tools/call", {"name": "crashy_crash", "arguments": {}})
        assert resp.json["error"]["code"] == -31000  # the crashing call itself is not re-sent
        # Meanwhile the others serve every call: a dead replica's calls go elsewhere.
        during = await pids(client, 30)
        assert sum(during.values()) == 30
        await _all_up(gw, "crashy")
        after = await pids(client, 60, replicas=3)
        assert len(after) == 3 and len(set(after) - set(before)) == 1  # one new process


class _LossyProxy:
    """A TCP proxy in front of a backend that loses connections on purpose: per request
    chunk from the gateway, by a seeded draw, it passes it on, closes the connection without
    passing it on (the request never reaches the backend), or passes it on and closes the
    connection as the backend's answer arrives (the call ran; its answer is lost)."""

    def __init__(self, target: int, seed: int) -> None:
        self.target = target
        self.rng = random.Random(seed)
        self.lost = Counter[str]()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        try:
            while chunk := await asyncio.wait_for(down_r.read(65536), 30):
                fate = self.rng.random()
                if fate < 0.1:
                    self.lost["request"] += 1
                    return
                up_w.write(chunk)
                await up_w.drain()
                answer = await asyncio.wait_for(up_r.read(65536), 30)
                if not answer:
                    return
                if fate < 0.2:
                    self.lost["answer"] += 1
                    return
                down_w.write(answer)
                await down_w.drain()
        except (OSError, TimeoutError):
            return
        finally:
            for w in (up_w, down_w):
                w.transport.abort()


async def test_connections_lost_at_random_through_a_proxy_never_execute_a_call_twice(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    exec_file = tmp_path / "executions"
    port = free_port()
    proc = _replica("solo", port, exec_file)
    proxy = _LossyProxy(port, seed=20260728)
    await proxy.start()
    try:
        # In threads: this loop runs the proxy the gateway connects through meanwhile.
        gw = await asyncio.to_thread(
            gateway_factory,
            {
                "servers": {
                    "svc": {
                        "url": f"http://127.0.0.1:{proxy.port}/mcp",
                        "isolation": "shared",
                        "breaker": {"enabled": False},
                        "health": {"interval": 60},
                        "retries": {"attempts": 5, "backoff": 0.01},
                    }
                }
            },
        )
        await asyncio.to_thread(gw.wait_backend, "svc")
        async with aiohttp.ClientSession() as http:
            client = await RawClient(gw.url, http).open()
            counted, _ = await _load(client, "count", 1000, 8, "c")
            looked, _ = await _load(client, "lookup", 300, 8, "l")
        executions = _executions(exec_file)
        failed = [r for r in counted if not r[1]]
        print(
            f"\nlossy proxy: {dict(proxy.lost)} connections lost; count {len(failed)}/1000 "
            f"failed; lookup {sum(not r[1] for r in looked)}/300 failed"
        )
        assert proxy.lost["request"] >= 50 and proxy.lost["answer"] >= 50
        # Not one call of the non-idempotent tool ran twice; every success ran exactly once.
        count_runs = {k: n for k, n in executions.items() if k.startswith("count:")}
        assert set(count_runs.values()) == {1}
        for tag, ok, _, _ in counted:
            if ok:
                assert count_runs[f"count:{tag}"] == 1
        assert len(failed) < 0.5 * len(counted)
        # The read-only idempotent tool is re-sent: (almost) every one of its calls answers.
        assert sum(not r[1] for r in looked) <= 3
    finally:
        await proxy.close()
        proc.stop()
