"""Real syslog daemons and a counting receiver, for the syslog sink's tests and bench/logs.py.

**Daemons.** rsyslog and syslog-ng are found on ``PATH`` or unpacked under
``/opt/sidecarkit-peers/{rsyslog,syslog-ng}`` (what ``.ci/run`` prepares; ``SIDECARKIT_PEERS``
moves that folder). They run as plain foreground processes from a folder of their own: own
config (``-f``), pid file, state and control files, no system socket, nothing installed as a
service. ``receiving`` starts one as an RFC 5424 receiver on 127.0.0.1 (octet-counted TCP) that
writes every message it parsed as one JSON object per line; ``shipping_config`` is the config
the benchmark uses to make one ship a file.

**Receiver.** ``Receiver`` is a pure-Python octet-counting receiver (plain TCP or TLS, a
thread per connection) that checks every frame's ``MSG-LEN SP "<"`` shape, counts frames and
can keep them, dump the raw streams to files, and note the time the expected count arrived.
Run as ``python -m tests.support.syslogd receive`` it is the benchmark's receiver.

``split`` and ``parse`` read one RFC 5424 message back into its parts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PEERS = Path(os.environ.get("SIDECARKIT_PEERS", "/opt/sidecarkit-peers"))
"""Where ``.ci/run`` unpacks the Debian packages of rsyslog and syslog-ng."""

INSTALL_HINT = "run .ci/run, which unpacks rsyslog and syslog-ng into /opt/sidecarkit-peers"


@dataclass(frozen=True)
class Daemon:
    """How to run one installed syslog daemon."""

    kind: str
    """``rsyslog`` or ``syslog-ng``."""
    binary: Path
    modules: Path | None = None
    """Module folder to pass on the command line (unpacked copies only)."""
    libraries: Path | None = None
    """Folder for ``LD_LIBRARY_PATH`` (the unpacked syslog-ng's own libraries)."""
    extra_modules: tuple[Path, ...] = ()
    """More module folders (rsyslog-openssl's, unpacked apart): merged with ``modules``."""

    @property
    def tls(self) -> bool:
        """Whether the daemon can take TLS: syslog-ng always, rsyslog with lmnsd_ossl."""
        if self.kind == "syslog-ng":
            return True
        return any((d / "lmnsd_ossl.so").exists() for d in (*self.extra_modules, self.modules) if d)

    def command(self, config: Path, run: Path) -> list[str]:
        """The foreground command line, with every file it writes inside ``run``."""
        if self.kind == "rsyslog":
            cmd = [str(self.binary), "-n", "-f", str(config), "-i", str(run / "rsyslogd.pid")]
            if self.modules and self.extra_modules:
                merged = run / "modules"  # rsyslog takes one module folder: link them into one
                merged.mkdir(exist_ok=True)
                for folder in (self.modules, *self.extra_modules):
                    for module in folder.glob("*.so"):
                        link = merged / module.name
                        if not link.exists():
                            link.symlink_to(module)
                cmd += ["-M", str(merged)]
            elif self.modules:
                cmd += ["-M", str(self.modules)]
            return cmd
        cmd = [
            str(self.binary),
            "-F",
            "--no-caps",
            "-f",
            str(config),
            "-p",
            str(run / "syslog-ng.pid"),
            "-R",
            str(run / "syslog-ng.persist"),
            "-c",
            str(run / "syslog-ng.ctl"),
        ]
        if self.modules:
            cmd.append(f"--module-path={self.modules}")
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.libraries:
            env["LD_LIBRARY_PATH"] = str(self.libraries)
        return env

    def start(self, config: str, run: Path) -> subprocess.Popen[bytes]:
        """Write ``config`` into ``run`` and start the daemon on it; its output goes to a log."""
        run.mkdir(parents=True, exist_ok=True)
        path = run / f"{self.kind}.conf"
        path.write_text(config)
        with (run / f"{self.kind}.log").open("wb") as log:
            return subprocess.Popen(
                self.command(path, run),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=run,
            )


def rsyslog() -> Daemon | None:
    """rsyslogd from ``PATH``, else the unpacked copy, else ``None``."""
    found = shutil.which("rsyslogd")
    if found:
        return Daemon("rsyslog", Path(found))
    binary = PEERS / "rsyslog" / "usr" / "sbin" / "rsyslogd"
    modules = sorted((PEERS / "rsyslog" / "usr" / "lib").glob("*/rsyslog/imtcp.so"))
    if binary.is_file() and modules:
        ossl = sorted((PEERS / "rsyslog-openssl" / "usr" / "lib").glob("*/rsyslog/lmnsd_ossl.so"))
        extra = (ossl[0].parent,) if ossl else ()
        return Daemon("rsyslog", binary, modules=modules[0].parent, extra_modules=extra)
    return None


def syslog_ng() -> Daemon | None:
    """syslog-ng from ``PATH``, else the unpacked copy, else ``None``."""
    found = shutil.which("syslog-ng")
    if found:
        return Daemon("syslog-ng", Path(found))
    root = PEERS / "syslog-ng" / "usr"
    binary = root / "sbin" / "syslog-ng"
    modules = sorted((root / "lib" / "syslog-ng").glob("*/libafsocket.so"))
    if binary.is_file() and modules:
        return Daemon(
            "syslog-ng", binary, modules=modules[0].parent, libraries=root / "lib" / "syslog-ng"
        )
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Transport:
    """How the receiver listens: ``tcp`` (octet counting), ``udp`` (RFC 5426) or ``tls``
    (RFC 5425, with ``cert``/``key``, and ``ca`` to require a client certificate it signed)."""

    kind: str = "tcp"
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None


def _rsyslog_input(port: int, transport: Transport) -> str:
    if transport.kind == "udp":
        return f"""module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{port}" ruleset="in" rcvbufSize="4m")"""
    if transport.kind == "tls":
        auth = "x509/certvalid" if transport.ca else "anon"
        ca = f'DefaultNetstreamDriverCAFile="{transport.ca}"' if transport.ca else ""
        return f"""global(DefaultNetstreamDriver="ossl" {ca}
       DefaultNetstreamDriverCertFile="{transport.cert}"
       DefaultNetstreamDriverKeyFile="{transport.key}")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1"
       StreamDriver.AuthMode="{auth}")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="in")"""
    return f"""module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="in")"""


def _rsyslog_receiver(port: int, run: Path, output: Path, transport: Transport) -> str:
    # Control characters stay as they are (the default would write a newline as "#012");
    # mmpstrucdata parses STRUCTURED-DATA, so the params come back as rsyslog understood them.
    return f"""
global(workDirectory="{run}" maxMessageSize="256k" parser.escapeControlCharactersOnReceive="off")
{_rsyslog_input(port, transport)}
module(load="mmpstrucdata")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="time" name="timestamp" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="params" name="$!rfc5424-sd" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="in") {{
  action(type="mmpstrucdata")
  action(type="omfile" file="{output}" template="fields")
}}
"""


def _syslog_ng_source(port: int, transport: Transport) -> str:
    if transport.kind == "tls":
        verify = (
            f'ca-file("{transport.ca}") peer-verify(required-trusted)'
            if transport.ca
            else ("peer-verify(optional-untrusted)")
        )
        tls = f'tls(key-file("{transport.key}") cert-file("{transport.cert}") {verify})'
        return f'syslog(ip("127.0.0.1") port({port}) transport("tls") {tls})'
    buffer = " so-rcvbuf(4194304)" if transport.kind == "udp" else ""
    return f'syslog(ip("127.0.0.1") port({port}) transport("{transport.kind}"){buffer})'


def _syslog_ng_receiver(port: int, run: Path, output: Path, transport: Transport) -> str:
    # ``--key .SDATA.*`` adds every SD param as syslog-ng parsed it, one flat key each.
    fields = (
        "pri=int(${PRI}) time=${S_ISODATE} host=${HOST} app=${PROGRAM} procid=${PID} "
        "msgid=${MSGID} sd=${SDATA} msg=${MSG}"
    )
    return f"""@version: 3.38
options {{
  stats-freq(0); use-dns(no); use-fqdn(no); dns-cache(no);
  keep-hostname(yes); chain-hostnames(no); log-msg-size(262144);
  frac-digits(6); ts-format(iso);
}};
source s_in {{ {_syslog_ng_source(port, transport)}; }};
destination d_out {{
  file("{output}" template("$(format-json --scope none --key-delimiter ~ --key .SDATA.* {fields})\\n"));
}};
log {{ source(s_in); destination(d_out); }};
"""


@dataclass
class Running:
    """A daemon receiving on ``port`` and writing what it parsed to ``output``."""

    daemon: Daemon
    process: subprocess.Popen[bytes]
    port: int
    run: Path
    output: Path

    def log(self) -> str:
        path = self.run / f"{self.daemon.kind}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """What the daemon wrote so far, one dict per message it received."""
        if not self.output.exists():
            return []
        text = self.output.read_text()
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines()]

    def wait_records(self, count: int, *, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The first ``count`` records, once the daemon wrote them (``AssertionError`` if not)."""
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = self.records()
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{self.daemon.kind} wrote {len(found)} of {count} records; its log:\n{self.log()}"
        )

    def stop(self) -> None:
        stop(self.process)


def stop(process: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _udp_bound(port: int) -> bool:
    """Whether a UDP socket is bound to ``port`` (``/proc/net/udp``: UDP has no handshake)."""
    with contextlib.suppress(OSError), open("/proc/net/udp") as table:
        return any(f":{port:04X} " in line.split()[1] + " " for line in list(table)[1:])
    return False


def wait_listening(
    port: int, process: subprocess.Popen[bytes], *, timeout: float = 15.0, udp: bool = False
) -> None:
    """Return once something accepts TCP connections on 127.0.0.1:``port`` (or, with ``udp``,
    has a UDP socket bound to it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the daemon exited with {process.returncode} before listening")
        if udp:
            if _udp_bound(port):
                return
        else:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextlib.contextmanager
def receiving(daemon: Daemon, run: Path, transport: Transport | None = None) -> Iterator[Running]:
    """``daemon`` as an RFC 5424 receiver on 127.0.0.1 (octet-counted TCP unless
    ``transport`` says otherwise), stopped afterwards."""
    transport = transport or Transport()
    port = free_port()
    output = run / "received.jsonl"
    make = _rsyslog_receiver if daemon.kind == "rsyslog" else _syslog_ng_receiver
    process = daemon.start(make(port, run, output, transport), run)
    running = Running(daemon, process, port, run, output)
    try:
        try:
            wait_listening(port, process, udp=transport.kind == "udp")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {daemon.kind}'s log:\n{running.log()}") from None
        yield running
    finally:
        running.stop()


def shipping_config(daemon: Daemon, path: Path, port: int, run: Path) -> str:
    """Config that makes ``daemon`` ship ``path`` from its start to 127.0.0.1:``port`` as
    octet-counted RFC 5424, in the configuration peer-baseline-logs.md measured: rsyslog
    with one queue worker (one ordered connection), syslog-ng with flow control (lossless)."""
    if daemon.kind == "rsyslog":
        return f"""
global(workDirectory="{run}" maxMessageSize="64k")
main_queue(queue.workerThreads="1")
module(load="imfile" mode="inotify")
input(type="imfile" file="{path}" tag="app" facility="user" severity="info" ruleset="fwd")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
}}
"""
    return f"""@version: 3.38
options {{
  stats-freq(0); use-dns(no); use-fqdn(no); dns-cache(no);
  keep-hostname(no); chain-hostnames(no); time-reopen(1);
}};
source s_file {{ file("{path}" flags(no-parse) follow-freq(1)); }};
destination d_recv {{ syslog("127.0.0.1" transport("tcp") port({port})); }};
log {{ source(s_file); destination(d_recv); flags(flow-control); }};
"""


# -- RFC 5424 read back ------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    pri: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd: list[tuple[str, list[tuple[str, str]]]]
    """SD-ELEMENTs in order: (SD-ID, [(PARAM-NAME, unescaped PARAM-VALUE)])."""
    msg: bytes


def frames(stream: bytes) -> list[bytes]:
    """The SYSLOG-MSGs of an octet-counted stream; ``ValueError`` on any malformed frame."""
    out = []
    pos = 0
    while pos < len(stream):
        space = stream.find(b" ", pos, pos + 11)
        digits = stream[pos:space]
        if space < 0 or not digits.isdigit():
            raise ValueError(f"no MSG-LEN at offset {pos}: {stream[pos : pos + 20]!r}")
        end = space + 1 + int(digits)
        if end > len(stream):
            raise ValueError(f"frame at offset {pos} runs past the end of the stream")
        out.append(stream[space + 1 : end])
        pos = end
    return out


def split(message: bytes) -> tuple[list[bytes], bytes, bytes]:
    """The 7 header fields (PRI and VERSION together), STRUCTURED-DATA and MSG."""
    head = message.split(b" ", 6)
    if len(head) < 7:
        raise ValueError(f"not an RFC 5424 message: {message[:80]!r}")
    rest = head.pop()
    if rest[:1] == b"-":
        if len(rest) > 1 and rest[1:2] != b" ":
            raise ValueError(f"bad STRUCTURED-DATA: {rest[:40]!r}")
        return head, b"-", rest[2:]
    pos = 0
    while rest[pos : pos + 1] == b"[":
        pos += 1
        while True:  # to the element's closing bracket, skipping escaped ones
            close = rest.index(b"]", pos)
            slashes = 0
            while rest[close - 1 - slashes] == 0x5C:
                slashes += 1
            pos = close + 1
            if slashes % 2 == 0:
                break
    if pos == 0:
        raise ValueError(f"bad STRUCTURED-DATA: {rest[:40]!r}")
    if pos < len(rest) and rest[pos : pos + 1] != b" ":
        raise ValueError(f"no space after STRUCTURED-DATA: {rest[: pos + 10]!r}")
    return head, rest[:pos], rest[pos + 1 :]


def parse_sd(sd: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """STRUCTURED-DATA text into elements, with PARAM-VALUE escapes undone."""
    if sd == "-":
        return []
    elements: list[tuple[str, list[tuple[str, str]]]] = []
    pos = 0
    while pos < len(sd):
        if sd[pos] != "[":
            raise ValueError(f"expected '[' at {pos} of {sd!r}")
        end = min(i for i in (sd.find(" ", pos), sd.find("]", pos)) if i >= 0)
        sd_id = sd[pos + 1 : end]
        params: list[tuple[str, str]] = []
        pos = end
        while sd[pos] == " ":
            equals = sd.index("=", pos)
            name = sd[pos + 1 : equals]
            if sd[equals + 1] != '"':
                raise ValueError(f"expected '\"' at {equals + 1} of {sd!r}")
            value = []
            pos = equals + 2
            while sd[pos] != '"':
                if sd[pos] == "\\" and sd[pos + 1] in '"\\]':
                    pos += 1
                elif sd[pos] in '"]':
                    raise ValueError(f"unescaped {sd[pos]!r} at {pos} of {sd!r}")
                value.append(sd[pos])
                pos += 1
            params.append((name, "".join(value)))
            pos += 1
        if sd[pos] != "]":
            raise ValueError(f"expected ']' at {pos} of {sd!r}")
        elements.append((sd_id, params))
        pos += 1
    return elements


def parse(message: bytes) -> Message:
    """One SYSLOG-MSG into its parts; ``ValueError`` if it is not RFC 5424."""
    head, sd, msg = split(message)
    first = head[0].decode("ascii")
    if not first.startswith("<") or ">" not in first:
        raise ValueError(f"no PRI in {message[:40]!r}")
    pri, version = first[1:].split(">")
    return Message(
        pri=int(pri),
        version=int(version),
        timestamp=head[1].decode("ascii"),
        hostname=head[2].decode("ascii"),
        app_name=head[3].decode("ascii"),
        procid=head[4].decode("ascii"),
        msgid=head[5].decode("ascii"),
        sd=parse_sd(sd.decode("utf-8")),
        msg=msg,
    )


# -- the counting receiver ---------------------------------------------------------------------


@dataclass
class Receiver:
    """Octet-counted syslog on 127.0.0.1 (TCP, or TLS with ``tls``): counts and checks frames.

    Each connection has a thread that reads up to 4 MiB at a time and walks the frames in it.
    ``keep`` holds every frame in memory (for tests); ``dump`` writes each connection's raw
    stream to ``dump/conn-N.bin`` (for checking after a timed run); ``expect`` sets ``done``
    and ``done_at`` (``time.monotonic()``) when that many frames arrived. ``coalesce`` sleeps
    that long after a short read, so that a sender of many small writes does not make the
    receiver burn a core (the benchmark's receiver uses 1 ms, as the peer baseline did).
    """

    port: int = 0
    tls: ssl.SSLContext | None = None
    keep: bool = True
    dump: Path | None = None
    expect: int | None = None
    coalesce: float = 0.0
    frames: int = 0
    kept: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    connections: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    done_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _listener: socket.socket | None = None

    def start(self) -> Receiver:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping.clear()
        self._spawn(self._accept, "syslog-receiver-accept")
        return self

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                number = self.connections
                self.connections += 1
            self._spawn(self._serve, f"syslog-receiver-{number}", conn, number)

    def _serve(self, conn: socket.socket, number: int) -> None:
        dump = None
        try:
            if self.tls is not None:
                conn.settimeout(10)
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(0.05)
            if self.dump is not None:
                dump = (self.dump / f"conn-{number}.bin").open("wb")
            self._read(conn, dump)
        except (OSError, ssl.SSLError) as exc:
            if not self._stopping.is_set():
                self.errors.append(f"connection {number}: {exc}")
        finally:
            if dump is not None:
                dump.close()
            conn.close()

    def _read(self, conn: socket.socket, dump: Any) -> None:
        buf = bytearray()
        keep = self.kept if self.keep else None
        short = 256 * 1024
        while not self._stopping.is_set():
            try:
                chunk = conn.recv(4 << 20)
            except TimeoutError:
                continue
            if not chunk:
                break
            if dump is not None:
                dump.write(chunk)
            buf += chunk
            pos = 0
            end = len(buf)
            count = 0
            while pos < end:
                space = buf.find(b" ", pos, pos + 11)
                if space < 0:
                    if end - pos >= 11:
                        self._bad(buf, pos)
                        return
                    break
                digits = buf[pos:space]
                if not digits.isdigit():
                    self._bad(buf, pos)
                    return
                stop = space + 1 + int(digits)
                if stop > end:
                    break
                if buf[space + 1] != 0x3C:  # every SYSLOG-MSG opens with "<" (PRI)
                    self._bad(buf, pos)
                    return
                if keep is not None:
                    keep.append(bytes(buf[space + 1 : stop]))
                pos = stop
                count += 1
            del buf[:pos]
            if count:
                self._counted(count)
            if self.coalesce and len(chunk) < short:
                time.sleep(self.coalesce)
        if buf:
            self.errors.append(f"{len(buf)} bytes of an incomplete frame at the end")

    def _bad(self, buf: bytearray, pos: int) -> None:
        self.errors.append(f"malformed frame: {bytes(buf[pos : pos + 40])!r}")

    def _counted(self, count: int) -> None:
        with self._lock:
            self.frames += count
            if self.expect is not None and self.frames >= self.expect and self.done_at is None:
                self.done_at = time.monotonic()
                self.done.set()

    def wait_frames(self, count: int, *, timeout: float = 10.0) -> list[bytes]:
        """The frames kept so far, once at least ``count`` arrived (``AssertionError`` if not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.frames < count:
            time.sleep(0.01)
        assert self.frames >= count, f"received {self.frames} of {count} frames; {self.errors}"
        return list(self.kept)

    def stop(self) -> None:
        """Stop accepting and close every connection (the senders see them closed)."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()


def _main() -> None:
    """``receive``: the benchmark's receiver as its own process.

    Prints ``READY <port>`` once listening; ``{"done_at": ...}`` (CLOCK_MONOTONIC) as soon as
    ``--expect`` frames arrived; and on SIGTERM a last line with every count (frames,
    connections, errors), which shows any frame that arrived beyond the expected ones.
    """
    parser = argparse.ArgumentParser(prog="python -m tests.support.syslogd")
    parser.add_argument("command", choices=["receive"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--dump", type=Path)
    parser.add_argument("--coalesce-ms", type=float, default=1.0)
    args = parser.parse_args()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    receiver = Receiver(
        port=args.port,
        keep=False,
        dump=args.dump,
        expect=args.expect,
        coalesce=args.coalesce_ms / 1000,
    ).start()
    print(f"READY {receiver.port}", flush=True)
    while not stopping.is_set():
        if receiver.done.wait(0.05):
            print(json.dumps({"done_at": receiver.done_at}), flush=True)
            break
    stopping.wait()
    receiver.stop()
    result = {
        "frames": receiver.frames,
        "connections": receiver.connections,
        "errors": receiver.errors[:5],
        "done_at": receiver.done_at,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _main()
