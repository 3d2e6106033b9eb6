"""The dashboard's static files (`agfast/ui/`), served at `/` and `/ui/…` from memory.

Every file is read once when the routes are built and becomes one exact route, so no request path is ever
turned into a file name (no traversal to guard). Each answer carries its type, an ETag (a reload of an
unchanged file is a 304) and the security headers a page holding admin powers needs: a Content-Security-Policy
that allows only our own scripts and styles (nothing inline), no framing, no sniffing, no referrer.
The page itself is public; everything it shows comes from the admin API, behind sign-in.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from agfast.http.errors import Family
from agfast.http.protocol import Request
from agfast.http.response import Response
from agfast.http.router import GET, Router

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
INDEX = "index.html"
# The paths that show the dashboard itself.
INDEX_PATHS = ("/", "/ui", "/ui/")
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
}
CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    b"content-security-policy: " + CSP + b"\r\n"
    b"x-content-type-options: nosniff\r\n"
    b"referrer-policy: no-referrer\r\n"
    b"x-frame-options: DENY\r\n"
    # File names carry no version: the browser keeps a copy but asks (If-None-Match) before each use.
    b"cache-control: no-cache\r\n"
)


class StaticFile:
    __slots__ = ("body", "content_type", "etag", "headers")

    def __init__(self, body: bytes, content_type: bytes) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
        self.headers = SECURITY_HEADERS + b"etag: " + self.etag + b"\r\n"

    def serve(self, req: Request, resp: Response) -> None:
        if req.headers.get(b"if-none-match") == self.etag:
            resp.send(304, b"", self.content_type, self.headers)
            return
        resp.send(200, self.body, self.content_type, self.headers)


def load_files(root: Path = UI_DIR) -> dict[str, StaticFile]:
    """`/ui/<relative path>` → file, for every file of a known type under `root`."""
    files: dict[str, StaticFile] = {}
    for path in sorted(root.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue
        files["/ui/" + path.relative_to(root).as_posix()] = StaticFile(path.read_bytes(), content_type)
    return files


def register(router: Router, root: Path = UI_DIR) -> None:
    files = load_files(root)
    index = files.get("/ui/" + INDEX)
    if index is None:
        return  # an install without the dashboard's files: nothing to serve
    for path in INDEX_PATHS:
        router.add((GET,), path, index.serve, Family.ADMIN, public=True)
    for path, static in files.items():
        router.add((GET,), path, static.serve, Family.ADMIN, public=True)
