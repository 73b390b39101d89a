"""A real viewer for the tests: the built OHIF viewer and Orthanc's DICOMweb from one origin, driven
by headless Chromium through Playwright.

The OHIF build comes from the npm package ``@ohif/app`` (``.ci/run`` unpacks the pinned version under
``.cache/ohif/<version>``, or ``QOQ_OHIF_DIST`` names another build); the browser is Debian's
``chromium`` with software WebGL.
A small proxy serves the viewer's files (any unknown path is the single-page app), its configuration
(one DICOMweb data source at ``/dicom-web``), and forwards ``/dicom-web/...`` to Orthanc — splitting
a comma-separated ``includefield``, which Orthanc's DICOMweb 1.7 ignores — with the cross-origin
isolation headers OHIF's workers need.
"""

from __future__ import annotations

import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OHIF_VERSION = "3.13.2"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox",
                 "--disable-dev-shm-usage"]

APP_CONFIG = """window.config = {
  routerBasename: null,
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  showErrorDetails: 'always',
  defaultDataSourceName: 'orthanc',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'orthanc',
    configuration: {
      friendlyName: 'Orthanc (test PACS)',
      name: 'orthanc',
      wadoUriRoot: '/dicom-web',
      qidoRoot: '/dicom-web',
      wadoRoot: '/dicom-web',
      qidoSupportsIncludeField: true,
      supportsReject: false,
      imageRendering: 'wadors',
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      omitQuotationForMultipartRequest: true,
      bulkDataURI: {enabled: true},
    },
  }],
};
"""
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                     "Cross-Origin-Resource-Policy": "same-origin"}
CONTENT_TYPES = {".js": "application/javascript", ".css": "text/css", ".html": "text/html", ".wasm": "application/wasm",
                 ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".woff2": "font/woff2"}


def ohif_dist() -> Path:
    """The built viewer's folder: ``QOQ_OHIF_DIST``, else where ``.ci/run`` unpacks the pinned version."""
    return Path(os.environ.get("QOQ_OHIF_DIST", REPO / ".cache" / "ohif" / OHIF_VERSION / "package" / "dist"))


def split_includefield(query: str) -> str:
    """``includefield=a,b`` as repeated parameters (Orthanc's DICOMweb 1.7 reads only those)."""
    pairs = []
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key == "includefield":
            pairs += [(key, part) for part in value.split(",") if part]
        else:
            pairs.append((key, value))
    return urllib.parse.urlencode(pairs)


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer

    def log_message(self, format: str, *args) -> None:
        """Quiet: the tests read the browser's console, not the proxy's access log."""

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**ISOLATION_HEADERS, "Content-Type": content_type, **(extra or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        """DICOMweb to Orthanc, the configuration, the viewer's files, else the app's index."""
        path, _, query = self.path.partition("?")
        if path.startswith("/dicom-web/"):
            self._proxy(path, split_includefield(query))
            return
        if path == "/app-config.js":
            self._send(200, APP_CONFIG.encode(), CONTENT_TYPES[".js"])
            return
        file = (self.server.dist / urllib.parse.unquote(path).lstrip("/")).resolve()
        if not file.is_file() or self.server.dist not in file.parents:
            file = self.server.dist / "index.html"
        self._send(200, file.read_bytes(), CONTENT_TYPES.get(file.suffix, "application/octet-stream"))

    def _proxy(self, path: str, query: str) -> None:
        url = f"{self.server.orthanc_url}{path}" + (f"?{query}" if query else "")
        headers = {name: value for name, value in self.headers.items() if name.lower() in {"accept", "range"}}
        # Orthanc's DICOMweb writes its base URL into bulk data URIs (an encapsulated PDF's document) from the
        # Forwarded header: the viewer's origin, so the browser fetches them through this proxy, not cross-origin.
        headers["Forwarded"] = f"host={self.headers.get('Host', '')};proto=http"
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                self._send(answer.status, answer.read(), answer.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as error:
            self._send(error.code, error.read(), error.headers.get("Content-Type", "text/plain"))


class ViewerServer(ThreadingHTTPServer):
    """OHIF and Orthanc's DICOMweb on one loopback origin."""

    daemon_threads = True

    def __init__(self, orthanc_url: str, dist: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.orthanc_url, self.dist = orthanc_url, dist.resolve()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The viewer's base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> ViewerServer:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.shutdown()
        self.server_close()
