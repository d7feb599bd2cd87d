"""Debian's nginx as a TLS-terminating gRPC proxy in front of Temporal, for the mutual TLS and API key tests.

The proxy has two doors to the same dev server: one demands a client certificate from the test CA (mutual TLS, as a
self-hosted cluster runs), the other demands ``authorization: Bearer <key>`` (an API key, as Temporal Cloud does).
nginx runs in the foreground with its own prefix, temp dirs and logs under the test's directory, on free ports.
Its certificates come from :mod:`tests.support.tls_authority`.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port
from tests.support.tls_authority import Issued


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is missing: `make nginx` installs Debian's package")
    return found


@dataclass(frozen=True)
class GrpcProxy:
    mtls_address: str  # demands a client certificate signed by the test CA
    api_key_address: str  # demands `authorization: Bearer <api_key>`, no client certificate
    api_key: str
    error_log: Path


NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    ssl_certificate {server_cert};
    ssl_certificate_key {server_key};
    ssl_protocols TLSv1.2 TLSv1.3;
    # Workers long-poll for up to about a minute: do not cut them off.
    grpc_read_timeout 600s;
    grpc_send_timeout 600s;
    client_max_body_size 0;

    server {{
        listen 127.0.0.1:{mtls_port} ssl http2;
        ssl_verify_client on;
        ssl_client_certificate {client_ca};
        location / {{ grpc_pass grpc://{upstream}; }}
    }}
    server {{
        listen 127.0.0.1:{key_port} ssl http2;
        location / {{
            if ($http_authorization != "Bearer {api_key}") {{ return 403; }}
            grpc_pass grpc://{upstream};
        }}
    }}
}}
"""


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"nginx exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}"
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on {port}: {log.read_text(errors='replace')[-2000:]}")


@contextlib.contextmanager
def grpc_proxy(
    directory: Path, upstream: str, server: Issued, client_ca: Path, api_key: str
) -> Iterator[GrpcProxy]:
    """nginx in the foreground in front of ``upstream`` (host:port of a plaintext gRPC server)."""
    prefix = directory / "nginx"
    (prefix / "temp").mkdir(parents=True)
    mtls_port, key_port = free_port(), free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            prefix=prefix,
            server_cert=server.cert,
            server_key=server.key,
            client_ca=client_ca,
            mtls_port=mtls_port,
            key_port=key_port,
            upstream=upstream,
            api_key=api_key,
        )
    )
    log = prefix / "error.log"
    # No master: one foreground process that does not switch user, so the test's files stay readable.
    process = subprocess.Popen(
        [
            nginx_binary(),
            "-p",
            str(prefix),
            "-c",
            str(conf),
            "-e",
            str(log),
            "-g",
            "daemon off; master_process off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(mtls_port, process, log)
        _wait_listening(key_port, process, log)
        yield GrpcProxy(f"127.0.0.1:{mtls_port}", f"127.0.0.1:{key_port}", api_key, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
