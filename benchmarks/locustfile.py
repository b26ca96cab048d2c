"""Locust users for benchmarks/load_test.py (run by it: `locust --headless`, one run per concurrency level).

Env: LOAD_PAYLOADS (manifest.json written by load_test.py), LOAD_REQUESTS (stop after this many answers),
LOAD_OUT (every request's record as JSON), LOAD_TOKEN (bearer token, optional).
Requests go round-robin through the manifest (the mix of valid images and every bad-input kind); each
answer is checked: a valid image must get a 200 whose body is a schema-valid SafetyReport, a bad one
its expected 4xx. Connection failures are recorded with status 0.
"""

import json
import os
import time
from pathlib import Path

import gevent

from locust import HttpUser, constant, events, task
from locust.exception import StopUser

from safetyvlm.schema import SafetyReport

MANIFEST = json.loads(Path(os.environ["LOAD_PAYLOADS"]).read_text())
ROOT = Path(os.environ["LOAD_PAYLOADS"]).parent
for p in MANIFEST:
    p["data"] = (ROOT / p["file"]).read_bytes()
LIMIT = int(os.environ.get("LOAD_REQUESTS", "100"))
AUTH = {"Authorization": f"Bearer {os.environ['LOAD_TOKEN']}"} if os.environ.get("LOAD_TOKEN") else {}
STATE = {"issued": 0, "records": []}


class Client(HttpUser):
    wait_time = constant(0)  # closed loop: concurrency = users

    @task
    def analyze(self):
        if STATE["issued"] >= LIMIT:
            raise StopUser()
        p = MANIFEST[STATE["issued"] % len(MANIFEST)]
        STATE["issued"] += 1
        kw = {"params": {"retrieval": "false"}, "timeout": 300}
        if p["how"] == "multipart":
            kw["files"] = {"image": ("upload", p["data"], p["ctype"])}
            kw["headers"] = AUTH
        else:
            kw["data"] = p["data"]
            kw["headers"] = {**AUTH, "Content-Type": p["ctype"]}
        t0 = time.time()
        with self.client.post("/analyze", name=p["kind"], catch_response=True, **kw) as r:
            status = r.status_code or 0
            ok = status == p["status"]
            detail = ""
            if ok and status == 200:
                try:
                    SafetyReport.model_validate(r.json())
                except Exception as e:  # noqa: BLE001 - any failure is a schema failure
                    ok, detail = False, f"schema: {type(e).__name__}"
            elif ok:
                try:
                    ok = isinstance(r.json().get("error"), str)
                except ValueError:
                    ok, detail = False, "error body is not JSON"
            if ok:
                r.success()
            else:
                r.failure(detail or f"status {status}, expected {p['status']}")
        STATE["records"].append({"name": p["name"], "kind": p["kind"], "status": status, "ok": ok,
                                 "detail": detail, "start": t0, "end": time.time()})


@events.test_start.add_listener
def _stop_after_limit(environment, **_):
    """Quit once LIMIT answers are in (from its own greenlet: a user calling quit() would kill itself
    halfway). Requests still in flight then are not counted."""
    def watch():
        while len(STATE["records"]) < LIMIT:
            gevent.sleep(0.02)
        environment.runner.quit()

    gevent.spawn(watch)


@events.quitting.add_listener
def _write(environment, **_):
    Path(os.environ["LOAD_OUT"]).write_text(json.dumps(STATE["records"]))
