"""Benchmark: the proxy's JWT check, against the same route without it, same run.

The harness of ``bench/proxy.py`` (one nginx worker as the backend, the proxy alone on core 0,
wrk ``-t1 -c64`` with 12 realistic headers on core 1): the proxy runs once with no policy and
once with a policy that requires an RS256 JWT (keys from a JWKS file, ``sub`` forwarded as a
header, an authorization rule and a per-client rate limit high enough never to refuse); wrk
sends the same requests, one valid token in each, to both (the plain proxy forwards it). The
figure is **requests per CPU-second of the proxy process**, printed as the ratio JWT / plain.
Verified tokens are cached by hash until they expire, so after the first request a token
costs a SHA-256, a lookup and the policy.

Goal: >= 0.8x. A missing tool (nginx, wrk, taskset) or a failed request fails the run.

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

import jwt
import proxy as harness
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://auth.bench.test"
PROXY, BACKEND = 18500, 18580
"""Ports of its own, so that it can run beside ``bench/proxy.py``."""


def policy_files(d: Path) -> tuple[Path, str]:
    """A policy requiring RS256 tokens from a JWKS file, and one token for it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    (d / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "bench", "sub": "bench-user", "iat": now, "exp": now + 7200}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    policy = d / "policy.yaml"
    policy.write_text(
        f"""authentication:
  jwt:
    - issuer: {ISSUER}
      audiences: [bench]
      jwks_file: {d / "jwks.json"}
      claims_to_headers: {{sub: x-user}}
authorization:
  rules:
    - {{name: users, action: allow, subjects: ["*"], methods: [GET], paths: [/]}}
rate_limits:
  - {{name: per-client, key: client_ip, rate: 10000000/s}}
"""
    )
    return policy, token


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
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant, in turn")
    args = parser.parse_args()
    missing = [tool for tool in ("nginx", "wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        print(f"FAIL: tool missing: {', '.join(missing)} (apt-get install nginx wrk)")
        return 1
    d = Path(tempfile.mkdtemp(prefix="sidecarkit-bench-auth-"))
    (d / "www").mkdir()
    (d / "www" / "small").write_bytes(b"x" * 99 + b"\n")
    (d / "backend.conf").write_text(harness.BACKEND_CONF.format(d=d, port=BACKEND))
    policy, token = policy_files(d)
    base = [
        sys.executable, "-c", "from sidecarkit.entry import main; main()", "agent", "proxy",
        "--inbound", f"127.0.0.1:{PROXY}", "--app", f"127.0.0.1:{BACKEND}",
        "--admin", "127.0.0.1:0", "--log-level", "warning",
    ]  # fmt: skip
    auth = [f"Authorization: Bearer {token}"]  # the same requests to both: only the check differs
    variants = {"plain": (base, auth), "jwt": ([*base, "--policy", str(policy)], auth)}
    backend = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", str(d / "backend.conf")])
    results: dict[str, list[float]] = {name: [] for name in variants}
    try:
        harness.wait_port(BACKEND)
        for _ in range(args.rounds):
            for name, (argv, extra) in variants.items():
                results[name].append(measure(argv, args.duration, extra))
                print(f"{name:6s} {results[name][-1]:8.0f} req/CPU-s", flush=True)
    finally:
        backend.terminate()
        backend.wait(10)
        shutil.rmtree(d, ignore_errors=True)
    plain = statistics.median(results["plain"])
    checked = statistics.median(results["jwt"])
    ratio = checked / plain
    print(f"medians over {args.rounds} rounds: plain {plain:.0f}, jwt {checked:.0f} req/CPU-s")
    print(f"JWT-checked / plain per proxy-CPU-second: {ratio:.2f}x")
    print(f"goal: >= 0.8x: {'met' if ratio >= 0.8 else 'MISSED'} ({ratio:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
