"""The baseline the pull benchmark compares with: the same files sent by plain processes with sendfile(2) over
loopback TCP, received by one thread per sender into files (or nowhere), nothing hashed, no HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from spotstack.runtime.net import free_port, set_congestion_control


def congestion_control(wanted: str) -> str | None:
    """What the raw senders and the peers send with: `wanted`, or reno (which any process may choose) where this
    process may not choose it; None for `system`, the host's default."""
    if wanted == "system":
        return None
    with socket.socket() as s:
        try:
            set_congestion_control(s, wanted)
            return wanted
        except PermissionError as exc:
            print(f"{exc.strerror}: reno instead (it does not pace either)")
            return "reno"
        except OSError as exc:
            raise SystemExit(f"--congestion-control: {exc.strerror}") from None


SENDER = """
import os, socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if sys.argv[2] != "-":  # the connections it accepts send with it
    srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, sys.argv[2].encode())
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen()
print("listening", flush=True)
files = sys.argv[3:]
while True:
    c, _ = srv.accept()
    for path in files:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            c.sendall(size.to_bytes(8, "little"))
            off = 0
            while off < size:
                off += os.sendfile(c.fileno(), f.fileno(), off, size - off)
    c.close()
"""


def start_senders(files: list[str], cc: str | None, n: int = 2) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """`n` sender processes, the files dealt out between them, each listening on its own port (it sends all its
    files to each connection); returned once every one listens. The caller terminates them."""
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(n)]
    for i, port in enumerate(ports):
        argv = [sys.executable, "-c", SENDER, str(port), cc or "-", *files[i::n]]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE))
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline() != b"listening\n":
            raise RuntimeError(f"raw sender exited with {p.wait()}")
    return procs, ports


def raw_copy(ports: list[int], dest: Path | None) -> tuple[float, int]:
    """Receive from each sender on its own thread; write into files under dest (None: discard)."""
    total = 0
    lock = threading.Lock()

    def receive(port: int, idx: int) -> None:
        nonlocal total
        buf = bytearray(4 << 20)
        mv = memoryview(buf)
        with socket.create_connection(("127.0.0.1", port)) as c:
            f_no = 0
            while True:
                head = c.recv(8, socket.MSG_WAITALL)
                if len(head) < 8:
                    return
                size = int.from_bytes(head, "little")
                out = os.open(dest / f"s{idx}-{f_no}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if dest else None
                left = size
                while left:
                    n = c.recv_into(mv[: min(left, len(buf))])
                    if not n:
                        raise ConnectionError("sender closed early")
                    if out is not None:
                        os.write(out, mv[:n])
                    left -= n
                if out is not None:
                    os.close(out)
                f_no += 1
                with lock:
                    total += size

    threads = [threading.Thread(target=receive, args=(p, i)) for i, p in enumerate(ports)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t, total
