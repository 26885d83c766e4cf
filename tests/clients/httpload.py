"""HTTP load client for the QEMU load tests; runs inside the test's own
network namespace (the test checks that with `ip netns identify` first).

  keepalive HOST CONNS SECS PATH=SIZE...   each connection fetches the paths
      in turn over one kept-alive connection until SECS have passed (then
      finishes its current response); every body must have its file's size.
  close HOST CONNS TOTAL MAXSECS PATH=SIZE   TOTAL requests with
      `Connection: close`, CONNS at a time; the server closes each
      connection after its response, so it is the one in TIME-WAIT.
  fetch HOST PATH FILE   one request; the body must equal FILE's bytes.
  slowloris HOST N SECS PATH=SIZE   N connections trickle a request head, a
      byte a second, for SECS; meanwhile a normal client (retrying a refused
      or 503 attempt, for at most SECS) must be served PATH in full.
  abort HOST N PATH   N clients start downloading PATH, read 1 MiB, and
      reset the connection (SO_LINGER 0: RST).
  hold HOST N PATH=SIZE   opens N idle connections (200 at a time) and, while
      they are held, a normal client must be served PATH in full (60 s).
  during HOST SECS PATH=SIZE   for SECS, normal clients fetch PATH one after
      the other (each with 10 s to connect); prints how many were served.

Prints one line `ok requests=N bytes=B errors=E min_per_conn=M secs=S` (or
`fetch ok`) and exits 0 only when nothing failed. Bounded in count and time.
"""
import asyncio
import sys
import time


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    if length is None:
        raise RuntimeError("no Content-Length: " + lines[0])
    body = await reader.readexactly(length)
    return status, body


async def keepalive_worker(host, paths, deadline, stats):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, 80), 60)
    done = 0
    try:
        while True:
            for path, size in paths:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                status, body = await asyncio.wait_for(read_response(reader), 120)
                if status != 200 or len(body) != size:
                    raise RuntimeError(f"{path}: status {status}, {len(body)} bytes")
                done += 1
                stats["requests"] += 1
                stats["bytes"] += len(body)
                if time.monotonic() > deadline:
                    return done
    finally:
        writer.close()


async def close_worker(host, path, size, stats, total, deadline):
    while stats["started"] < total and time.monotonic() < deadline:
        stats["started"] += 1
        port = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, 80), 30)
            port = writer.get_extra_info("sockname")[1]
            writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            status, body = await asyncio.wait_for(read_response(reader), 30)
            rest = await asyncio.wait_for(reader.read(), 30)  # the server's FIN
            writer.close()
            if status != 200 or len(body) != size or rest:
                raise RuntimeError(f"status {status}, {len(body)} bytes")
            stats["requests"] += 1
            stats["bytes"] += len(body)
        except Exception as e:  # counted; the test decides
            stats["errors"] += 1
            stats["last_error"] = f"{e!r} (local port {port}, {time.monotonic() - T0:.3f} s)"


async def normal_fetch(host, path, size, deadline):
    """Fetches PATH until served in full or the deadline passes; returns tries."""
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, 80), 10)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            status, body = await asyncio.wait_for(read_response(reader), 60)
            writer.close()
            if status == 200 and len(body) == size:
                return tries
        except Exception:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"normal client not served in {tries} tries")


async def slow_client(host, secs, stats):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, 80), 30)
    except Exception:
        stats["refused"] += 1
        return
    stats["opened"] += 1
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 1000
    end = time.monotonic() + secs
    i = 0
    try:
        while time.monotonic() < end and i < len(head):
            writer.write(head[i:i + 1])
            await writer.drain()
            i += 1
            await asyncio.sleep(1)
    except Exception:
        stats["cut"] += 1
    writer.close()


async def abort_client(host, path):
    import socket, struct
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, 80), 30)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    got = 0
    while got < (1 << 20):
        b = await asyncio.wait_for(reader.read(65536), 60)
        if not b:
            break
        got += len(b)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    return got


T0 = time.monotonic()


def parse_paths(args):
    out = []
    for a in args:
        p, s = a.split("=")
        out.append((p, int(s)))
    return out


async def main():
    mode, host = sys.argv[1], sys.argv[2]
    t0 = time.monotonic()
    stats = {"requests": 0, "bytes": 0, "errors": 0, "started": 0, "last_error": ""}
    if mode == "keepalive":
        conns, secs = int(sys.argv[3]), float(sys.argv[4])
        paths = parse_paths(sys.argv[5:])
        deadline = t0 + secs
        results = await asyncio.gather(
            *(keepalive_worker(host, paths, deadline, stats) for _ in range(conns)),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        counts = [r for r in results if not isinstance(r, BaseException)]
        stats["errors"] = len(errors)
        if errors:
            stats["last_error"] = repr(errors[0])
        min_per_conn = min(counts) if counts else 0
    elif mode == "close":
        conns, total, maxsecs = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
        [(path, size)] = parse_paths(sys.argv[6:7])
        deadline = t0 + maxsecs
        await asyncio.gather(
            *(close_worker(host, path, size, stats, total, deadline) for _ in range(conns))
        )
        min_per_conn = 0
    elif mode == "slowloris":
        n, secs = int(sys.argv[3]), float(sys.argv[4])
        [(path, size)] = parse_paths(sys.argv[5:6])
        st = {"opened": 0, "refused": 0, "cut": 0}
        slow = [asyncio.ensure_future(slow_client(host, secs, st)) for _ in range(n)]
        await asyncio.sleep(2)
        tries = await normal_fetch(host, path, size, time.monotonic() + secs + 30)
        await asyncio.gather(*slow)
        print(f"ok slowloris opened={st['opened']} refused={st['refused']} cut={st['cut']} normal_tries={tries} errors=0", flush=True)
        sys.exit(0)
    elif mode == "abort":
        n, path = int(sys.argv[3]), sys.argv[4]
        results = await asyncio.gather(*(abort_client(host, path) for _ in range(n)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        last = repr(errors[0]) if errors else ""
        print(f"ok aborted={n - len(errors)} errors={len(errors)} last_error={last}", flush=True)
        sys.exit(0 if not errors else 1)
    elif mode == "hold":
        import resource
        n = int(sys.argv[3])
        [(path, size)] = parse_paths(sys.argv[4:5])
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 1000)), hard))
        held = []
        failed = 0
        sem = asyncio.Semaphore(200)

        async def open_one():
            nonlocal failed
            async with sem:
                try:
                    held.append(await asyncio.wait_for(asyncio.open_connection(host, 80), 60))
                except Exception:
                    failed += 1

        await asyncio.gather(*(open_one() for _ in range(n)))
        tries = await normal_fetch(host, path, size, time.monotonic() + 60)
        # Still open (not reset or closed by the server) while the normal client was served?
        alive = sum(1 for r, w in held if not r.at_eof())
        for _, w in held:
            w.close()
        print(f"ok held={len(held)} open_failed={failed} alive={alive} normal_tries={tries} errors=0", flush=True)
        sys.exit(0)
    elif mode == "during":
        secs = float(sys.argv[3])
        [(path, size)] = parse_paths(sys.argv[4:5])
        end = time.monotonic() + secs
        served = 0
        tries = 0
        while time.monotonic() < end:
            tries += 1
            try:
                await normal_fetch(host, path, size, time.monotonic() + 10)
                served += 1
            except Exception:
                pass
        print(f"ok served={served} tries={tries} errors=0", flush=True)
        sys.exit(0)
    elif mode == "fetch":
        path, want = sys.argv[3], open(sys.argv[4], "rb").read()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, 80), 30)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        status, body = await asyncio.wait_for(read_response(reader), 120)
        writer.close()
        ok = status == 200 and body == want
        print("fetch ok" if ok else f"fetch BAD status {status} {len(body)} bytes", flush=True)
        sys.exit(0 if ok else 1)
    else:
        sys.exit("unknown mode " + mode)
    secs = time.monotonic() - t0
    print(
        f"ok requests={stats['requests']} bytes={stats['bytes']} errors={stats['errors']} "
        f"min_per_conn={min_per_conn} secs={secs:.1f} last_error={stats['last_error']!r}",
        flush=True,
    )
    sys.exit(0 if stats["errors"] == 0 else 1)


asyncio.run(main())
