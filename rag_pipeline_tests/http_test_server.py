"""``rag-pipeline serve`` with test hooks in the search (tests only): a query ``sleep:<s> ...``
sleeps that long first, the query ``boom`` raises an error that names a path.

    python -m rag_pipeline_tests.http_test_server --host 127.0.0.1 --port 8080 [--dev]
"""

from __future__ import annotations

import argparse
import time

from rag_pipeline.settings import Settings
from serving import server
from serving.searcher import Searcher


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--dev", action="store_true")
    args = ap.parse_args()
    real = Searcher.search

    def hooked(self, request, principal, **kw):
        query = request if isinstance(request, str) else request.query
        if query.startswith("sleep:"):
            time.sleep(float(query.split()[0][len("sleep:") :]))
        elif query == "boom":
            raise RuntimeError("boom in /srv/secret/path.db")
        return real(self, request, principal, **kw)

    Searcher.search = hooked
    server.serve(Settings.from_env(), args.host, args.port, dev=args.dev)


if __name__ == "__main__":
    main()
