"""A log-writing app for the chaos test: numbered lines, rotated every N lines.

Usage: ``python writer.py DIR TOTAL ROTATE_EVERY RATE [MODE [FIRST [NAME]]]``. Writes ``seq=NNNNNNN ...`` lines to
``DIR/app.log`` at about RATE lines per second, and every ROTATE_EVERY lines rotates the file,
alternating the two ways logrotate does it: rename (``app.log`` -> ``app.log.K``, then a new
``app.log``) and copytruncate (copy to ``app.log.K``, then truncate ``app.log`` in place); MODE
``rename`` or ``copytruncate`` makes every rotation that one. FIRST is the first line's number
(0), NAME the file's name (``app.log``).
Prints ``done`` when every line is written.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import time


def main() -> None:
    folder, total, every, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    mode = sys.argv[5] if len(sys.argv) > 5 else "alternate"
    first = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    path = os.path.join(folder, sys.argv[7] if len(sys.argv) > 7 else "app.log")
    rng = random.Random(7)
    words = ["GET", "POST", "/api/orders", "/healthz", "user=42", "status=200", "dur_ms=17"]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    start = time.monotonic()
    rotations = 0
    seq = 0
    step = 500
    while seq < total:
        lines = []
        for n in range(seq, min(seq + step, total)):
            payload = " ".join(rng.choice(words) for _ in range(rng.randint(4, 16)))
            lines.append(f"seq={first + n:07d} level=info {payload}\n")
        os.write(fd, "".join(lines).encode())
        seq += len(lines)
        if seq % every == 0 and seq < total:
            rotations += 1
            rotated = f"{path}.{rotations}"
            if mode == "rename" or (mode == "alternate" and rotations % 2):
                os.close(fd)
                os.rename(path, rotated)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            else:
                shutil.copyfile(path, rotated)
                os.truncate(path, 0)
        ahead = seq / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    os.close(fd)
    print("done", flush=True)


if __name__ == "__main__":
    main()
