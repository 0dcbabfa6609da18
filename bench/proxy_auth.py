"""Benchmark: the proxy's JWT check, against the same route without it, same run.

The harness of ``bench/proxy.py`` (one nginx worker as the backend, the proxy alone on core 0,
wrk ``-t1 -c64`` with 12 realistic headers on core 1): the proxy runs with no policy, with a
policy that requires an RS256 JWT (keys from a JWKS file, ``sub`` forwarded as a header), and
with that plus an authorization rule and a per-client rate limit high enough never to refuse;
wrk sends the same requests, one valid token in each, to all three (the plain proxy forwards
it). The figure is **requests per CPU-second of the proxy process**, printed as ratios to the
plain proxy's. Verified tokens are cached by hash until they expire, so after the first
request a token costs a SHA-256, a lookup and the policy.

Goal: JWT-checked >= 0.8x plain (the full policy's ratio is printed for information). A
missing tool (nginx, wrk, taskset) or a failed request fails the run.

    python bench/proxy_auth.py [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _building
import jwt
import proxy as harness
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://auth.bench.test"
PROXY, BACKEND = 18500, 18580
"""Ports of its own, so that it can run beside ``bench/proxy.py``."""


def policy_files(d: Path) -> tuple[Path, Path, str]:
    """Two policies requiring RS256 tokens from a JWKS file (the JWT check alone, and with a
    rule and a rate limit), and one token for them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    (d / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "bench", "sub": "bench-user", "iat": now, "exp": now + 7200}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    authentication = f"""authentication:
  jwt:
    - issuer: {ISSUER}
      audiences: [bench]
      jwks_file: {d / "jwks.json"}
      claims_to_headers: {{sub: x-user}}
"""
    only = d / "jwt.yaml"
    only.write_text(authentication)
    full = d / "policy.yaml"
    full.write_text(
        authentication
        + """authorization:
  rules:
    - {name: users, action: allow, subjects: ["*"], methods: [GET], paths: [/small]}
rate_limits:
  - {name: per-client, key: client_ip, rate: 10000000/s}
"""
    )
    return only, full, token


def wrk(seconds: int, extra: list[str]) -> tuple[int, float, int]:
    """(requests, wall seconds, failures) of one wrk run on core 1 against /small."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{seconds}s"]
    for header in [*harness.HEADERS, *extra]:
        cmd += ["-H", header]
    cmd.append(f"http://127.0.0.1:{PROXY}/small")
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - started
    requests, bad = _parse(out)
    return requests, wall, bad


def _parse(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) requests in", out)
    if m is None:
        raise SystemExit(f"wrk printed no request count:\n{out}")
    bad = 0
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if found:
        bad += int(found.group(1))
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if found:
        bad += sum(int(g) for g in found.groups()[:3])
    return int(m.group(1)), bad


def measure(argv: list[str], seconds: int, extra: list[str]) -> float:
    """Requests per CPU-second of the proxy started with ``argv``."""
    proc = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=subprocess.DEVNULL)
    try:
        harness.wait_port(PROXY)
        wrk(2, extra)  # warm up: pooled connections, the token cache
        before = harness.cpu_seconds(proc.pid)
        requests, _, bad = wrk(seconds, extra)
        cpu = harness.cpu_seconds(proc.pid) - before
        if bad:
            raise SystemExit(f"{bad} failed requests (non-2xx or socket errors)")
        return requests / cpu if cpu else 0.0
    finally:
        harness.stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant, in turn")
    _building.option(parser)
    args = parser.parse_args()
    _building.use(pure=args.pure)
    missing = [tool for tool in ("nginx", "wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        print(f"FAIL: tool missing: {', '.join(missing)} (apt-get install nginx wrk)")
        return 1
    d = Path(tempfile.mkdtemp(prefix="sidecarkit-bench-auth-"))
    (d / "www").mkdir()
    (d / "www" / "small").write_bytes(b"x" * 99 + b"\n")
    (d / "backend.conf").write_text(harness.BACKEND_CONF.format(d=d, port=BACKEND))
    only, full, token = policy_files(d)
    base = [
        sys.executable, "-c", "from sidecarkit.entry import main; main()", "agent", "proxy",
        "--inbound", f"127.0.0.1:{PROXY}", "--app", f"127.0.0.1:{BACKEND}",
        "--admin", "127.0.0.1:0", "--log-level", "warning",
    ]  # fmt: skip
    auth = [f"Authorization: Bearer {token}"]  # the same requests to all: only the checks differ
    variants = {
        "plain": (base, auth),
        "jwt": ([*base, "--policy", str(only)], auth),
        "policy": ([*base, "--policy", str(full)], auth),
    }
    backend = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", str(d / "backend.conf")])
    results: dict[str, list[float]] = {name: [] for name in variants}
    try:
        harness.wait_port(BACKEND)
        for _ in range(args.rounds):
            for name, (argv, extra) in variants.items():
                results[name].append(measure(argv, args.duration, extra))
                print(f"{name:6s} {results[name][-1]:8.0f} req/CPU-s", flush=True)
    finally:
        harness.stop(backend)
        shutil.rmtree(d, ignore_errors=True)
    medians = {name: statistics.median(runs) for name, runs in results.items()}
    print(
        f"medians over {args.rounds} rounds (req/CPU-s): "
        + ", ".join(f"{name} {value:.0f}" for name, value in medians.items())
    )
    ratio = medians["jwt"] / medians["plain"]
    print(f"JWT-checked / plain per proxy-CPU-second: {ratio:.2f}x")
    print(
        "JWT + a rule + a rate limit / plain per proxy-CPU-second: "
        f"{medians['policy'] / medians['plain']:.2f}x"
    )
    print(f"goal: JWT-checked >= 0.8x: {'met' if ratio >= 0.8 else 'MISSED'} ({ratio:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
