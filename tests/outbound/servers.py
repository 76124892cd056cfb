"""Real servers on loopback for the outbound tests: each counts the TCP connections it
accepts (not only the requests it understood), answers what it is told to, and can speak
TLS with a certificate from a certificate authority made for the test."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class Server:
    """Answers every request with `status`, `headers` and `body`; a body given as a list
    goes out one piece every `pace_s` seconds."""

    def __init__(self, *, status: int = 204, headers: dict[str, str] | None = None,
                 body: bytes | list[bytes] = b"", pace_s: float = 0.0,
                 tls: ssl.SSLContext | None = None):
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.server_names: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                server.requests.append((self.command, self.path, dict(self.headers),
                                        self.rfile.read(length)))
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                pieces = body if isinstance(body, list) else [body]
                self.send_header("Content-Length", str(sum(map(len, pieces))))
                self.end_headers()
                for piece in pieces:
                    try:
                        self.wfile.write(piece)
                        self.wfile.flush()
                    except OSError:
                        return  # the client stopped reading: what it may do
                    time.sleep(pace_s)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        class Counting(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, address = self.socket.accept()
                server.connections += 1
                if tls is not None:
                    sock.settimeout(5)
                    sock = tls.wrap_socket(sock, server_side=True)
                return sock, address

        if tls is not None:
            tls.sni_callback = lambda sock, name, context: server.server_names.append(name)
        self.server = Counting(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, host: str = "127.0.0.1", path: str = "/hook", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Authority:
    """A certificate authority of the test's own, and server certificates it signs."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outbound test CA")])
        self.cert = (self._builder(name, name, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                    critical=True)
                     .sign(self.key, hashes.SHA256()))

    @staticmethod
    def _builder(subject, issuer, public_key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1)))

    def client_context(self) -> ssl.SSLContext:
        """What a client that trusts this authority (and nothing else) verifies with."""
        context = ssl.create_default_context(
            cadata=self.cert.public_bytes(serialization.Encoding.PEM).decode())
        return context

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A server that shows a certificate for `names` (host names or IP addresses)."""
        key = ec.generate_private_key(ec.SECP256R1())
        alt = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        cert = (self._builder(subject, self.cert.subject, key.public_key())
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .sign(self.key, hashes.SHA256()))
        stem = self.folder / names[0].replace(":", "_")
        stem.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        stem.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(stem.with_suffix(".crt"), stem.with_suffix(".key"))
        return context
