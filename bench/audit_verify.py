"""How fast the audit trail is written and verified: N records through the real writer into
a fresh SQLite database, then `switchyard audit verify` over them in a process of its own.

  .venv/bin/python bench/audit_verify.py --records 1000000 --dir /tmp/audit-bench

Prints one JSON line: records, write seconds, verify seconds, the verifier's peak memory (RSS)
and whether the trail verified. Goal: 1,000,000 records verified in under 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from switchyard.audit.writer import AuditWriter
from switchyard.config.load import audit, load, storage
from switchyard.observability.decisions import Decision

HMAC_ENV = "BENCH_AUDIT_HMAC"
CONFIG = """\
storage:
  data_dir: db
audit:
  enabled: true
  hmac_key: "${BENCH_AUDIT_HMAC}"
  keys_dir: keys
"""
CHUNK = 20_000


def decision(i: int) -> Decision:
    # What the bench load's calls leave: a tools/call of `echo` with a 16-byte argument.
    return Decision(
        at=time.time(),
        decision="allow",
        outcome="ok",
        method="tools/call",
        request_id=str(i).encode(),
        face="streamable-http",
        era="legacy",
        backend="bench",
        target="echo",
        name="echo",
        latency_ms=0.412,
        request_bytes=64,
        result_bytes=71,
        arguments=msgspec.Raw(b'{"text":"0123456789abcdef"}'),
    )


async def write(config: Path, records: int) -> float:
    parsed, _ = load(config)
    settings = audit(parsed, config.parent)
    assert settings is not None
    settings = dataclasses.replace(settings, batch_size=5000, buffer_size=4 * CHUNK)
    writer = AuditWriter(settings, storage(parsed, config.parent))
    started = time.perf_counter()
    await writer.start()
    for base in range(0, records, CHUNK):
        for i in range(base, min(records, base + CHUNK)):
            writer.submit(decision(i))
        deadline = time.monotonic() + 120
        while writer.pending > CHUNK:  # bounded: the writer drains or the run fails
            if time.monotonic() > deadline:
                raise SystemExit("the audit writer stopped draining")
            await asyncio.sleep(0.01)
    await writer.stop()
    if writer.dropped or writer.written != records:
        raise SystemExit(f"wrote {writer.written} of {records} ({writer.dropped} dropped)")
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument(
        "--switchyard", default=str(Path(sys.executable).parent / "switchyard"), help="executable"
    )
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    config = args.dir / "audit.yaml"
    config.write_text(CONFIG)
    os.environ.setdefault(HMAC_ENV, "bench-audit-hmac-key-0123456789")
    write_s = asyncio.run(write(config, args.records))
    started = time.perf_counter()
    done = subprocess.run(
        [args.switchyard, "audit", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    verify_s = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = {
        "type": "audit_verify",
        "records": args.records,
        "write_s": round(write_s, 2),
        "write_rps": round(args.records / write_s),
        "verify_s": round(verify_s, 2),
        "verify_rps": round(args.records / verify_s),
        "verify_peak_rss_mib": round(peak_kib / 1024, 1),
        "verified": done.returncode == 0,
        "verify_output": done.stdout.strip().splitlines()[-1:]
        + done.stderr.strip().splitlines()[-3:],
    }
    print(json.dumps(result))
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
