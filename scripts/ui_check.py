"""End-to-end UI check: `dagster dev` + headless Chromium + a run launched over GraphQL.

    .venv/bin/python scripts/ui_check.py [--screenshot docs/ui-graph.png] [--timeout 300]

1. Starts `dagster dev -m pipelines.definitions -h 127.0.0.1 -p <free port>` (what `make ui`
   runs) with a temporary DAGSTER_HOME (a copy of dagster.yaml) and a temporary
   MOE_DATA_DIR, and MOE_DEMO_STAYS=60 so the demo data is tiny.
2. Lists the asset keys through the webserver's GraphQL API.
3. Opens the global asset graph (/asset-groups) in headless Debian Chromium, driven through
   chromedriver's W3C WebDriver HTTP API with the standard library only (no selenium),
   waits until every asset name is in the page's text, and saves a screenshot.
4. Launches the `cohort_refresh` job through the GraphQL `launchRun` mutation and polls the
   run until it ends; SUCCESS is required.

Prints one JSON line with the results; exit code 0 only when every check passed. Needs
/usr/bin/chromium and /usr/bin/chromedriver (`.ci/install_browser` installs them).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("MOE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MOE_CHROMEDRIVER", "/usr/bin/chromedriver")
JOB = "cohort_refresh"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=2400,2600",  # the whole graph at the UI's minimum zoom
]


ALT = "\ue00a"  # WebDriver key code
HIDE_NAV_AND_ZOOM_OUT_JS = """
for (const b of document.querySelectorAll('button')) {
  if ((b.textContent || '').trim() === 'Hide navigation') { b.click(); }
}
const zoomOut = document.querySelector('[data-testid="zoom-out-button"]');
for (let i = 0; zoomOut && i < arguments[0]; i++) { zoomOut.click(); }
"""


def shown(name: str, text: str) -> bool:
    """`name` is in the page's text, whole or as the UI's middle truncation of a long node
    label ("baselin…_mortality": a prefix and a suffix of the name, 3+ characters each)."""
    if name in text:
        return True
    n = len(name)
    return any(
        f"{name[:i]}…{name[j:]}" in text for i in range(3, n - 3) for j in range(i + 1, n - 2)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, payload: Any = None, method: str | None = None, timeout: float = 60) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


class GraphQL:
    def __init__(self, base: str) -> None:
        self.url = f"{base}/graphql"

    def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        out = http_json(self.url, {"query": query, "variables": variables or {}})
        if out.get("errors"):
            raise RuntimeError(f"GraphQL errors: {out['errors']}")
        return out["data"]


class WebDriver:
    """The few W3C WebDriver commands this check needs, over chromedriver's HTTP API."""

    def __init__(self, port: int, user_data_dir: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [*CHROMIUM_ARGS, f"--user-data-dir={user_data_dir}"],
                    },
                }
            }
        }
        self.session = http_json(f"{self.base}/session", caps, timeout=120)["value"]["sessionId"]

    def _cmd(self, path: str, payload: Any = None, method: str | None = None) -> Any:
        url = f"{self.base}/session/{self.session}{path}"
        return http_json(url, payload, method=method, timeout=120)["value"]

    def get(self, url: str) -> None:
        self._cmd("/url", {"url": url})

    def script(self, js: str, *args: Any) -> Any:
        return self._cmd("/execute/sync", {"script": js, "args": list(args)})

    def keys(self, modifier: str, key: str) -> None:
        """Press `key` while holding `modifier` (a WebDriver key code such as ALT)."""
        steps = [
            {"type": "keyDown", "value": modifier},
            {"type": "keyDown", "value": key},
            {"type": "keyUp", "value": key},
            {"type": "keyUp", "value": modifier},
        ]
        self._cmd("/actions", {"actions": [{"type": "key", "id": "kb", "actions": steps}]})

    def screenshot(self, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(self._cmd("/screenshot", method="GET")))

    def quit(self) -> None:
        with contextlib.suppress(urllib.error.URLError, OSError):
            self._cmd("", method="DELETE")


def wait_until(what: str, fn: Any, timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except (urllib.error.URLError, OSError, RuntimeError, KeyError) as exc:
            last = exc
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """End a process group this script started (dagster dev spawns the webserver, daemon and
    code server as children): SIGTERM, then SIGKILL after 20 s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


LOCATIONS_Q = """{ repositoriesOrError { __typename
  ... on RepositoryConnection { nodes { name location { name } } }
  ... on PythonError { message } } }"""
ASSETS_Q = "{ assetNodes { assetKey { path } } }"
LAUNCH_Q = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on InvalidSubsetError { message }
  ... on RunConflict { message } } }"""
RUN_Q = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def check(
    screenshot: Path | None, timeout: float, keep: bool = False, zoom_out_clicks: int = 0
) -> dict[str, Any]:
    result: dict[str, Any] = {"ok": False}
    work = Path(tempfile.mkdtemp(prefix="moe_ui_check_"))
    home, data, profile = work / "dagster_home", work / "data", work / "chromium_profile"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        MOE_DATA_DIR=str(data),
        MOE_DEMO_STAYS=os.environ.get("MOE_DEMO_STAYS", "60"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.pop("MOE_MIMIC_ROOT", None)
    port, driver_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    dagster = str(Path(sys.executable).with_name("dagster"))
    cmd = [dagster, "dev", "-m", "pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)]
    server = driver_proc = None
    driver: WebDriver | None = None
    log = (work / "dagster_dev.log").open("wb")
    t0 = time.monotonic()
    try:
        server = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        gql = GraphQL(base)

        def location() -> tuple[str, str] | None:
            if server is not None and server.poll() is not None:
                raise SystemExit(f"dagster dev exited with {server.returncode}; see {log.name}")
            repos = gql(LOCATIONS_Q)["repositoriesOrError"]
            nodes = repos.get("nodes") or []
            return (nodes[0]["location"]["name"], nodes[0]["name"]) if nodes else None

        loc, repo = wait_until("the code location to load", location, timeout)
        result["server_ready_s"] = round(time.monotonic() - t0, 1)
        names = sorted("/".join(n["assetKey"]["path"]) for n in gql(ASSETS_Q)["assetNodes"])
        result["assets"] = len(names)

        # The browser: chromedriver + headless Chromium, fresh profile.
        driver_proc = subprocess.Popen(
            [CHROMEDRIVER, f"--port={driver_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(
            "chromedriver", lambda: http_json(f"http://127.0.0.1:{driver_port}/status"), 30, 0.3
        )
        driver = WebDriver(driver_port, profile)
        graph_url = f"{base}/asset-groups"  # "Global asset lineage"
        driver.get(graph_url)
        # Skip the "Join the Dagster community" dialog that a localhost UI shows once.
        driver.script("localStorage.setItem('communityNux', '1')")
        driver.get(graph_url)
        time.sleep(5)
        # Groups start collapsed in the global graph: Alt+E is the UI's "Expand all groups"
        # (remembered in localStorage), then reload so the layout starts from the expanded
        # graph.
        driver.keys(ALT, "e")
        time.sleep(2)
        driver.get(graph_url)

        def missing() -> list[str]:
            text = driver.script("return document.body ? document.body.textContent : ''") or ""
            return [n for n in names if not shown(n.split("/")[-1], text)]

        t_page = time.monotonic()
        try:
            wait_until("every asset name in the graph page", lambda: not missing(), timeout)
        finally:
            result["missing_in_page"] = missing()
        result["graph_page_s"] = round(time.monotonic() - t_page, 1)
        if screenshot is not None:
            # For the picture only: hide the left navigation and zoom out to fit the graph.
            driver.script(HIDE_NAV_AND_ZOOM_OUT_JS, zoom_out_clicks)
            time.sleep(3)
            driver.screenshot(screenshot)
            result["screenshot"] = str(screenshot)

        # A materialization launched through GraphQL.
        params = {
            "selector": {"repositoryLocationName": loc, "repositoryName": repo, "jobName": JOB},
            "runConfigData": {},
        }
        launched = gql(LAUNCH_Q, {"p": params})["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launchRun failed: {launched}")
        run_id = launched["run"]["runId"]
        result["run_id"] = run_id
        t_run = time.monotonic()

        def finished() -> str | None:
            status = gql(RUN_Q, {"id": run_id})["runOrError"].get("status")
            return status if status in TERMINAL else None

        result["run_status"] = wait_until(f"run {run_id} to finish", finished, timeout, 2)
        result["run_s"] = round(time.monotonic() - t_run, 1)
        result["ok"] = not result["missing_in_page"] and result["run_status"] == "SUCCESS"
    except Exception as exc:  # reported in the JSON line, with the server log's tail
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if driver is not None:
            driver.quit()
        stop(driver_proc)
        stop(server)
        log.close()
        if keep or not result["ok"]:
            result["workdir"] = str(work)
            tail = (work / "dagster_dev.log").read_text(errors="replace")[-3000:]
            if not result["ok"]:
                result["dagster_dev_log_tail"] = tail
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["total_s"] = round(time.monotonic() - t0, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG of the asset graph")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per wait")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            print(json.dumps({"ok": False, "error": f"{exe} not found; run .ci/install_browser"}))
            return 2
    result = check(args.screenshot, args.timeout, args.keep)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
