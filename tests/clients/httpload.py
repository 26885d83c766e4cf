"""HTTP load client for the QEMU load tests; runs inside the test's own
network namespace (the test checks that with `ip netns identify` first).

  keepalive HOST CONNS SECS PATH=SIZE...   each connection fetches the paths
      in turn over one kept-alive connection until SECS have passed (then
      finishes its current response); every body must have its file's size.
  close HOST CONNS TOTAL MAXSECS PATH=SIZE   TOTAL requests with
      `Connection: close`, CONNS at a time; the server closes each
      connection after its response, so it is the one in TIME-WAIT.
  fetch HOST PATH FILE   one request; the body must equal FILE's bytes.

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
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, 80), 30)
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
            stats["last_error"] = repr(e)


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
