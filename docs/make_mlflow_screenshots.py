"""Screenshots of the MLflow UI for docs/tracking.md, taken in a real (headless) Chromium.

Runs a small digits-edm experiment (3 lambdas, 4 generations, ~3 minutes on 2 CPU cores) against a
throwaway MLflow server, then opens the UI pages a researcher reads and writes them to
``docs/images/mlflow-*.png``:

- ``mlflow-runs.png``: the experiment's runs table (parent run with one child per chain);
- ``mlflow-chain-charts.png``: one chain's model metrics (training loss at step = images seen,
  so the generations line up; FD per generation);
- ``mlflow-images.png``: the chart view's sample grids with their step (= generation) slider.

Each page is checked for what it must show (run names, metric names) before its screenshot is
kept, so a blank or error page fails the script instead of landing in the docs. The browser is
driven by Playwright on the system's Chromium (no browser download); neither is a dependency of
autophagy, so give the script a Python of its own:

    apt-get install chromium && python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright==1.65.2
    /tmp/pw/bin/python docs/make_mlflow_screenshots.py             # autophagy and mlflow from .venv
    /tmp/pw/bin/python docs/make_mlflow_screenshots.py --keep DIR  # keep the MLflow store in DIR; reuse it
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
VENV_BIN = REPO / ".venv" / "bin"  # autophagy and the MLflow server (bash .ci/install)
OVERRIDES = [
    "loop.lambdas=[0,0.5,inf]",
    "loop.generations=4",
    "train.gen0_budget_kimg=60",
    "train.budget_kimg=20",
    "sample.n_eval=500",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest(uri: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(uri + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("make_mlflow_screenshots: no Chromium found (apt-get install chromium)")


def click_if_present(page, selector: str) -> None:
    """Click the first element matching ``selector`` when the page has one (UI details vary by version)."""
    found = page.locator(selector)
    if found.count():
        found.first.click()
        page.wait_for_timeout(1500)


def show(page, url: str) -> None:
    """Open ``url`` on the "Model training" side of the UI, without the assistant panel."""
    page.goto(url)
    page.wait_for_timeout(8000)  # the UI polls the server: no network-idle moment to wait for
    click_if_present(page, "text=Model training")
    click_if_present(page, "[aria-label=Close]")


def expect(page, name: str, *needles: str) -> None:
    text = page.content()
    missing = [needle for needle in needles if needle not in text]
    if missing:
        sys.exit(f"make_mlflow_screenshots: the {name} page does not show {missing}: not keeping its screenshot")


def take_screenshots(uri: str, eid: str, chain_id: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=browser(), args=["--no-sandbox"])
        page = chromium.new_page(viewport={"width": 1600, "height": 1000})
        show(page, f"{uri}/#/experiments/{eid}/runs")
        click_if_present(page, "button[data-component-id$='runnamecellrenderer.tsx_46']")  # the parent's children
        expect(page, "runs", "digits-edm", "lam-0.5-seed-0")
        # The parent's last-generation FD per lambda as columns: the configurations side by side.
        click_if_present(page, "[data-testid=column-selection-dropdown]")
        page.keyboard.type("fd_train/lam")
        page.wait_for_timeout(1500)
        page.locator("[data-testid=column-selector-tree] .du-bois-light-tree-checkbox").first.click()  # "Metrics (3)"
        page.keyboard.press("Escape")
        page.wait_for_timeout(1500)
        page.screenshot(path=out / "mlflow-runs.png")
        show(page, f"{uri}/#/experiments/{eid}/runs/{chain_id}/model-metrics")
        expect(page, "chain-charts", "train/loss", "fd_train")
        page.screenshot(path=out / "mlflow-chain-charts.png", full_page=True)
        show(page, f"{uri}/#/experiments/{eid}/runs?compareRunsMode=CHART")
        page.locator("input[placeholder='Search metric charts']").first.fill("samples")  # the image cards
        page.wait_for_timeout(4000)
        expect(page, "images", "samples")
        # Full screen: the grid with its step (= generation) slider, below the run's parameters.
        card_menu = page.locator("[data-testid=experiment-view-compare-runs-card-menu]").first
        card_menu.locator("xpath=preceding-sibling::button[1]").click()
        page.wait_for_timeout(4000)
        page.mouse.move(800, 500)
        page.mouse.wheel(0, 700)
        page.wait_for_timeout(1500)
        page.screenshot(path=out / "mlflow-images.png", full_page=True)
        chromium.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the MLflow store in this folder")
    args = parser.parse_args()
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="autophagy-screens-"))
    scratch.mkdir(parents=True, exist_ok=True)
    reuse = (scratch / "runs" / "digits-edm" / "report").is_dir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "AUTOPHAGY_PROGRESS": "0"}
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
        + [
            "--backend-store-uri",
            f"sqlite:///{scratch / 'mlflow.db'}",
            "--artifacts-destination",
            str(scratch / "art"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(uri + "/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        if not reuse:
            overrides = [arg for override in OVERRIDES for arg in ("-S", override)]
            subprocess.run(
                [str(VENV_BIN / "autophagy"), "run", "--config", "configs/digits-edm.yaml"]
                + ["--root", str(scratch / "runs"), *overrides],
                cwd=REPO,
                env={**env, "MLFLOW_TRACKING_URI": uri},
                check=True,
            )
        experiment = rest(uri, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=digits-edm")["experiment"]
        eid = experiment["experiment_id"]
        runs = rest(uri, "/api/2.0/mlflow/runs/search", {"experiment_ids": [eid], "max_results": 50})["runs"]
        chains = {
            {t["key"]: t["value"] for t in run["data"]["tags"]}["autophagy.lambda"]: run
            for run in runs
            if any(t["key"] == "autophagy.role" and t["value"] == "chain" for t in run["data"]["tags"])
        }
        chain = chains["0.5"]
        shots = scratch / "shots"
        shots.mkdir(exist_ok=True)
        take_screenshots(uri, eid, chain["info"]["run_id"], shots)
        IMAGES.mkdir(parents=True, exist_ok=True)
        for shot in sorted(shots.glob("mlflow-*.png")):
            shutil.copyfile(shot, IMAGES / shot.name)
            print(f"wrote docs/images/{shot.name}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
