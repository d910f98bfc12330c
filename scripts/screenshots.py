"""Take README's screenshots (docs/*.png) of a demo server in headless chromium.

    PYTHONPATH=. .venv/bin/python scripts/screenshots.py

Starts a server on 127.0.0.1 with a few demo projects (built locally, uploaded over HTTP)
and writes docs/welcome.png, docs/projects.png and docs/project.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser import headless  # noqa: E402
from conftest import PASSWORD, basic, http, make_server  # noqa: E402
from pkgfactory import make_wheel  # noqa: E402
from support import content_type, form  # noqa: E402

DESCRIPTION = """# acme-retry

Retry flaky calls with **backoff**, jitter and a budget.

```python
from acme_retry import retry

@retry(attempts=5, backoff=0.2)
def fetch(url):
    ...
```

- exponential backoff with full jitter
- a retry budget per process
- typed, no dependencies
"""

PROJECTS = [
    ("acme-retry", ["0.9.0", "1.0.0", "1.1.0"], "Retry flaky calls with backoff and jitter"),
    ("acme-config", ["2.3.1"], "Typed configuration from environment variables"),
    ("acme-events", ["0.1.0", "0.2.0"], "The team's event schema and its validators"),
    ("acme-http", ["4.0.0"], "An HTTP client with our defaults: timeouts, retries, tracing"),
    ("acme-testing", ["1.2.0"], "Fixtures and fakes shared by our test suites"),
]


def upload(url: str, wheel: Path) -> None:
    body = form({":action": "file_upload"}, [("content", wheel.name, wheel.read_bytes())])
    resp = http("POST", url + "/", body, {"Content-Type": content_type(),
                                          "Authorization": basic("alice", PASSWORD)})
    assert resp.status == 200, resp.text


def main() -> int:
    docs = ROOT / "docs"
    with tempfile.TemporaryDirectory() as tmp:
        srv = make_server(Path(tmp), None, PYPI_FALLBACK="off").start()
        try:
            for name, versions, summary in PROJECTS:
                for version in versions:
                    latest = version == versions[-1] and name == "acme-retry"
                    upload(srv.url, make_wheel(
                        Path(tmp) / "dist", name, version, summary=summary,
                        requires_python=">=3.10",
                        description=DESCRIPTION if latest else "",
                        content_type="text/markdown" if latest else ""))
            shots = {"welcome.png": ("/", "1200,1400"), "projects.png": ("/projects/", "1000,600"),
                     "project.png": ("/project/acme-retry/", "1100,1500")}
            for name, (path, size) in shots.items():
                out = docs / name
                result = headless(f"--screenshot={out}", f"--window-size={size}",
                                  "--hide-scrollbars", srv.url + path)
                if not out.exists():
                    print(result.stderr[-2000:], file=sys.stderr)
                    return 1
                print(f"{out}: {out.stat().st_size} bytes")
        finally:
            srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
