"""Serve a claim's program, inputs and intermediate tensors to its on-chain audience only.

Plain stdlib HTTP (``ThreadingHTTPServer``): one POST per object, a small
JSON body signed with EIP-191 by the requester's account. The server recovers
the signer and asks ClaimManager ``isAudience(claimId, signer)``, so who may
read is decided on chain, not by the server's configuration. Requests are
bounded (``MAX_REQUEST`` bytes), expire (replayed signatures stop working),
and every failure is a JSON error with a status code; a handler never raises
into the server loop.

Endpoints (body ``{"claim_id", "object", "expires", "signature"}``):

* ``POST /manifest`` (``object`` = ``"manifest"``): the claim's manifest JSON;
* ``POST /object`` (``object`` = a tensor or program root): raw bytes
  (``store.tensor_bytes`` encoding, or ``Program.to_bytes()``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from collab.errors import BadInput, CollabError, NotFound, Unauthorized, Unavailable
from collab.fraudproof.store import Store

log = logging.getLogger(__name__)

MAX_REQUEST = 4096
MAX_VALIDITY = 600  # seconds a signed request may be valid for


def request_message(chain_id: int, claim_id: bytes, obj: str, expires: int) -> str:
    """The text a requester signs (EIP-191 personal message)."""
    return f"collab-blob-request\nchain:{chain_id}\nclaim:0x{claim_id.hex()}\nobject:{obj}\nexpires:{expires}"


def sign_request(account: LocalAccount, chain_id: int, claim_id: bytes, obj: str, validity: int = 120) -> dict[str, Any]:
    """A signed request body."""
    expires = int(time.time()) + validity
    sig = account.sign_message(encode_defunct(text=request_message(chain_id, claim_id, obj, expires)))
    return {"claim_id": "0x" + claim_id.hex(), "object": obj, "expires": expires, "signature": "0x" + sig.signature.hex()}


class BlobServer:
    """HTTP server over a :class:`Store`, gated by ``is_audience(claim_id, signer)``."""

    def __init__(self, store: Store, chain_id: int, is_audience: Callable[[bytes, str], bool], host: str = "127.0.0.1", port: int = 0) -> None:
        self.store, self.chain_id, self.is_audience = store, chain_id, is_audience
        self._roots: dict[bytes, set[bytes]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("blob server: " + fmt, *args)

            def do_GET(self) -> None:
                self._reply(405, {"error": "use POST with a signed JSON body"})

            def do_POST(self) -> None:
                try:
                    status, body, ctype = server.handle(self.path, self._body())
                except CollabError as exc:
                    status, body, ctype = _status(exc), json.dumps({"error": str(exc)}).encode(), "application/json"
                except Exception as exc:  # a bad request must never take the server down
                    log.exception("blob server: unexpected error")
                    status, body, ctype = 500, json.dumps({"error": f"internal error: {type(exc).__name__}"}).encode(), "application/json"
                self._send(status, body, ctype)

            def _body(self) -> bytes:
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    raise BadInput("Content-Length is required") from None
                if not 0 < length <= MAX_REQUEST:
                    raise BadInput(f"request body must be 1..{MAX_REQUEST} bytes")
                return self.rfile.read(length)

            def _reply(self, status: int, data: dict[str, Any]) -> None:
                self._send(status, json.dumps(data).encode(), "application/json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> BlobServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="blob-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _claim_roots(self, claim_id: bytes) -> set[bytes]:
        with self._lock:
            if claim_id not in self._roots:
                self._roots[claim_id] = self.store.roots_of(claim_id)
            return self._roots[claim_id]

    def handle(self, path: str, raw: bytes) -> tuple[int, bytes, str]:
        """Check a request and return (status, body, content type)."""
        if path not in ("/manifest", "/object"):
            raise NotFound(f"no endpoint {path}")
        try:
            req = json.loads(raw)
            claim_id = bytes.fromhex(str(req["claim_id"]).removeprefix("0x"))
            obj, expires, signature = str(req["object"]), int(req["expires"]), str(req["signature"])
        except (ValueError, KeyError, TypeError):
            raise BadInput("body must be JSON with claim_id, object, expires and signature") from None
        if len(claim_id) != 32:
            raise BadInput("claim_id must be 32 bytes")
        now = int(time.time())
        if not now <= expires <= now + MAX_VALIDITY:
            raise Unauthorized("request expired or valid for too long")
        try:
            signer = Account.recover_message(
                encode_defunct(text=request_message(self.chain_id, claim_id, obj, expires)), signature=signature
            )
        except Exception:  # eth_account raises several types for malformed signatures
            raise BadInput("signature does not decode") from None
        if not self.is_audience(claim_id, signer):
            raise Unauthorized(f"{signer} is not in the audience of claim 0x{claim_id.hex()}")
        if path == "/manifest":
            if obj != "manifest":
                raise BadInput("a manifest request signs object 'manifest'")
            return 200, json.dumps(self.store.manifest(claim_id).to_json()).encode(), "application/json"
        try:
            root = bytes.fromhex(obj.removeprefix("0x"))
        except ValueError:
            raise BadInput("object must be a hex root") from None
        if root not in self._claim_roots(claim_id):
            raise NotFound(f"0x{root.hex()} is not an object of claim 0x{claim_id.hex()}")
        try:
            return 200, self.store.tensor_raw(root), "application/octet-stream"
        except NotFound:
            return 200, self.store.program_raw(root), "application/octet-stream"


def _status(exc: CollabError) -> int:
    if isinstance(exc, BadInput):
        return 400
    if isinstance(exc, Unauthorized):
        return 403
    if isinstance(exc, NotFound):
        return 404
    return 500


def fetch(url: str, account: LocalAccount, chain_id: int, claim_id: bytes, obj: str = "manifest", timeout: float = 30) -> bytes:
    """Fetch one object (or the manifest) from a blob server; errors map back to CollabErrors."""
    endpoint = "/manifest" if obj == "manifest" else "/object"
    body = json.dumps(sign_request(account, chain_id, claim_id, obj)).encode()
    req = urllib.request.Request(url.rstrip("/") + endpoint, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except Exception:  # the body may not be JSON
            reason = exc.reason
        kind = {400: BadInput, 403: Unauthorized, 404: NotFound}.get(exc.code, Unavailable)
        raise kind(f"blob server {url}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"blob server {url} is unreachable: {exc}") from None


__all__ = ["BlobServer", "MAX_REQUEST", "fetch", "request_message", "sign_request"]
