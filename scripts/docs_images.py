"""The documentation's pictures, made from the demo's MLflow store by the MLflow UI itself.

    bash scripts/demo.sh                       # first: the demo's runs, models and registry
    python scripts/docs_images.py              # writes docs/img/*.png
    python scripts/docs_images.py --out DIR --experiment NAME

Run it again after an MLflow upgrade changes the UI. The store is found as ``mlflow ui`` finds it
from the clone's root: ``$MLFLOW_TRACKING_URI`` (an http(s) server is used as the UI; a sqlite or
file store gets its own ``mlflow ui`` on a free port, stopped on exit) or else ``./mlflow.db``. The
experiment is ``--experiment``, else ``$MLFLOW_EXPERIMENT_NAME``, else ``Default``; its latest
pipeline run (the parent of the training stages' runs) is the one pictured.

Headless Chromium renders the pages, driven over its DevTools pipe (no extra Python package): one
page load gives both the picture and the rendered DOM, which the slow UI test
(tests/pipeline/test_pipeline_e2e.py) checks, so the pictures are made by the code that test runs.
The runs table's columns reach the UI as a shared view, which is what the UI's Share button writes:
the experiment tag ``mlflow.sharedViewState.tfqadocs`` (set on the experiment pictured), named by
``?viewStateShareKey=tfqadocs``. The UI keeps which runs are expanded out of shared views, so the
pipeline run's children are unfolded by clicking its expander, as a user would.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tfqa.core.destinations import written_whole
from tfqa.core.errors import PREFIX, UserError, one_line
from tfqa.core.servers import ServerFailed, ServerProcess, free_port, stop_group

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "img"
WINDOW = (1600, 1000)
SHARE_KEY = "tfqadocs"
RUNS_TABLE = "runs-table.png"
COMPARE = "compare-variants.png"
LOGGED_MODELS = "logged-models.png"
REGISTRY = "registry.png"
UI_PICTURES = (RUNS_TABLE, COMPARE, LOGGED_MODELS, REGISTRY)
VALIDATE_PLOTS = {
    "validate-pr.png": "validation/precision_recall.png",
    "validate-slices.png": "validation/error_analysis/slices.png",
    "validate-agreement.png": "validation/error_analysis/agreement.png",
}
FIRST = "run `bash scripts/demo.sh` first"
_RUN_NAME_COL = "attributes.`Run Name`"
_COLUMNS = ["attributes.`Models`", "metrics.`dev/long_f1`", "metrics.`dev/short_f1`"]
# Wide enough for a stage's name and a metric's every digit (MLflow 3.17 prints them all).
# (The UI applies widths to the columns named in the view's columnOrder.)
_WIDTHS = {
    _RUN_NAME_COL: 250,
    "runDateAndNestInfo": 130,
    "duration": 90,
    "attributes.`Models`": 120,
    "metrics.`dev/long_f1`": 170,
    "metrics.`dev/short_f1`": 170,
}
# Panels that would cover the page in a picture: the assistant's chat and the shared-view banner.
_DISMISS = (
    'button[data-component-id="mlflow.assistant.chat_panel.close"]',
    'button[data-component-id="mlflow.experiment_page.shared_view.dismiss"]',
    '[role="dialog"] button[aria-label="Close"]',  # the registry's "new Model Registry UI" notice
)


MODEL_TRAINING = "Model training"
"""The UI's switch between its GenAI and its model-training views (kept in the browser's storage):
the latter names the tabs as an ML engineer reads them (Runs, Models, Model registry)."""


def write_whole(path: Path, data: bytes) -> None:
    """``data`` into ``path``, whole or not at all (a reader never sees half a picture)."""
    with written_whole(path) as tmp:
        Path(tmp).write_bytes(data)


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise UserError("headless Chromium is needed for the UI pictures: install Debian's `chromium` (scripts/test.sh does)")
    return found


class Browser:
    """One headless Chromium, driven over the DevTools protocol on its pipe (fd 3 in, fd 4 out,
    NUL-terminated JSON), so waiting for a page and clicking on it need no Python package."""

    def __init__(self, window: tuple[int, int] = WINDOW, timeout_s: float = 60.0):
        self.window, self.timeout_s = window, timeout_s
        self._profile = tempfile.TemporaryDirectory(prefix="tfqa-chromium-")
        to_child, from_child = os.pipe(), os.pipe()
        # Above any descriptor the child opens first, so the dup2 onto 3 and 4 cannot clobber them.
        child_in = fcntl.fcntl(to_child[0], fcntl.F_DUPFD_CLOEXEC, 100)
        child_out = fcntl.fcntl(from_child[1], fcntl.F_DUPFD_CLOEXEC, 100)
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            f"--user-data-dir={self._profile.name}",
            f"--window-size={window[0]},{window[1]}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        try:
            self._proc = subprocess.Popen(
                [chromium_binary(), *flags],
                close_fds=False,  # Python opens its descriptors close-on-exec: only 3 and 4 are inherited
                preexec_fn=lambda: (os.dup2(child_in, 3), os.dup2(child_out, 4)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # close() ends its renderer and zygote processes with it
            )
        finally:  # the child's ends: it has its own copies now
            for fd in (to_child[0], from_child[1], child_in, child_out):
                os.close(fd)
        self._send_fd, self._recv_fd = to_child[1], from_child[0]
        self._buffer, self._last_id = b"", 0

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for fd in (self._send_fd, self._recv_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        stop_group(self._proc)
        self._profile.cleanup()

    def _call(self, method: str, session: str | None = None, **params) -> dict:
        self._last_id += 1
        msg = {"id": self._last_id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._send_fd, json.dumps(msg).encode() + b"\0")
        while True:  # events arrive in between; only the answer to this call matters here
            while b"\0" not in self._buffer:
                chunk = os.read(self._recv_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited ({self._proc.poll()}) during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._last_id:
                if "error" in answer:
                    raise RuntimeError(f"chromium {method}: {answer['error']}")
                return answer["result"]

    def open(self, url: str) -> Page:
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        w, h = self.window
        self._call("Emulation.setDeviceMetricsOverride", session, width=w, height=h, deviceScaleFactor=1, mobile=False)
        self._call("Page.navigate", session, url=url)
        return Page(self, target, session, url)


@dataclass
class Page:
    browser: Browser
    target: str
    session: str
    url: str

    def eval(self, expression: str):
        result = self.browser._call("Runtime.evaluate", self.session, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def settle(self, ready: str = "true", quiet_s: float = 2.0) -> None:
        """Wait until the JavaScript condition ``ready`` holds and the page's text has not changed
        for ``quiet_s`` (the UI fetches its data after the page has loaded)."""
        start = time.monotonic()
        last, since = None, start
        while time.monotonic() - start < self.browser.timeout_s:
            # (Before the page has its body, and while the UI redraws, the expression may throw.)
            try:
                now = self.eval(
                    f"(() => {{ try {{ return [document.readyState === 'complete' && Boolean({ready}),"
                    " document.body.innerText] } catch (e) { return [false, String(e)] } })()"
                )
            except RuntimeError:  # a navigation replaced the page's JavaScript context meanwhile
                now = None
            if now != last:
                last, since = now, time.monotonic()
            elif now and now[0] and time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.25)
        raise UserError(f"the MLflow UI did not finish drawing {self.url} within {self.browser.timeout_s:.0f} s")

    def click(self, selector: str) -> bool:
        """Click the first element matching the CSS ``selector``; False when there is none."""
        return bool(self.eval(f"(e => e ? (e.click(), true) : false)(document.querySelector({json.dumps(selector)}))"))

    def click_button(self, text: str) -> bool:
        """Click the first ``role="button"`` element whose text is ``text``; False when there is none."""
        return bool(
            self.eval(
                "(e => e ? (e.click(), true) : false)(Array.from(document.querySelectorAll('[role=button]'))"
                f".find(e => e.innerText.trim() === {json.dumps(text)}))"
            )
        )

    def dom(self) -> str:
        return self.eval("document.documentElement.outerHTML")

    def close(self) -> None:
        """Close the tab (the UI would otherwise go on refreshing it)."""
        self.browser._call("Target.closeTarget", targetId=self.target)

    def screenshot(self, path: Path) -> None:
        data = self.browser._call("Page.captureScreenshot", self.session, format="png")["data"]
        write_whole(path, base64.b64decode(data))


@dataclass
class Rendered:
    loaded: str  # the page's DOM as the UI first drew it
    shown: str  # the DOM of the picture, after the clicks


def render(
    browser: Browser, url: str, png: Path, ready: str = "true", clicks: tuple[str, ...] = (), then: str = "true"
) -> Rendered:
    """Picture of ``url`` written to ``png``: drawn once ``ready`` holds, panels that cover it
    closed, then each of ``clicks`` (CSS selectors) clicked and drawn again once ``then`` holds."""
    page = browser.open(url)
    try:
        page.settle(ready)
        for selector in _DISMISS:
            page.click(selector)
        loaded = page.dom()
        for selector in clicks:
            if not page.click(selector):
                raise UserError(f"the MLflow UI shows nothing to click at {selector} on {url}")
        page.settle(f"({ready}) && ({then})", quiet_s=1.0)
        page.screenshot(png)
        return Rendered(loaded, page.dom())
    finally:
        page.close()


def resolve_store(env: dict[str, str] | None = None, root: Path = REPO) -> tuple[str, Path]:
    """The tracking URI that ``mlflow ui`` run from the clone's ``root`` opens, and the folder to
    run it in: ``$MLFLOW_TRACKING_URI`` (from here), else ``root/mlflow.db`` (from ``root``). Refuses
    a local store that does not exist, which ``mlflow ui`` would quietly create empty."""
    env = os.environ if env is None else env
    uri = env.get("MLFLOW_TRACKING_URI", "").strip()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/"), Path.cwd()
    where = Path.cwd() if uri else root
    if not uri:
        uri = f"sqlite:///{root / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
    else:  # a database server: mlflow ui connects to it as it is
        return uri, where
    if not (where / path).exists():
        raise UserError(f"no MLflow store at {where / path}: {FIRST}, or set MLFLOW_TRACKING_URI to the demo's store")
    return uri, where


@contextmanager
def mlflow_ui(uri: str, cwd: Path = REPO, start_timeout_s: float = 90.0) -> Iterator[str]:
    """The UI's address for the store ``uri``: a server's own, or an ``mlflow ui`` of ours on a free
    port, stopped (its whole process group) when the block ends, also on an error or Ctrl-C."""
    if uri.startswith(("http://", "https://")):
        yield uri
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as logs:
        cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--port", str(port)]
        server = ServerProcess(cmd, f"http://127.0.0.1:{port}", Path(logs) / "ui.log", cwd=cwd, start_timeout_s=start_timeout_s)
        try:
            server.start()
        except ServerFailed as e:
            raise UserError(f"`mlflow ui` did not start: {one_line(str(e))}") from None
        try:
            yield server.url
        finally:
            server.stop()


@dataclass
class Pipeline:
    """The runs pictured: the experiment's latest pipeline run and its stages."""

    experiment_id: str
    parent: object  # mlflow.entities.Run
    children: list = field(default_factory=list)
    training: list = field(default_factory=list)  # the training stages' runs, oldest first
    models: list[str] = field(default_factory=list)  # registered models with a version from them


def find_pipeline(client, experiment: str) -> Pipeline:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UserError(f"no MLflow experiment {experiment!r} in {client.tracking_uri}: {FIRST}, or name it with --experiment")
    eid = exp.experiment_id
    # A rerun's parent holds only "(reused)" runs, which carry no tfqa.stage: the pipeline that ran
    # the stages is the latest parent of training-stage runs.
    trained = client.search_runs([eid], "tags.`tfqa.stage` LIKE 'train_%'", max_results=1000)
    parents = {r.data.tags.get("mlflow.parentRunId") for r in trained} - {None}
    if not parents:
        raise UserError(f"experiment {experiment!r} holds no pipeline run with training stages: {FIRST}")
    parent = max((client.get_run(p) for p in parents), key=lambda r: r.info.start_time)
    children = client.search_runs([eid], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=1000)
    training = [r for r in trained if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    training.sort(key=lambda r: r.info.start_time)
    ids = ", ".join(f"'{r.info.run_id}'" for r in training)
    models = sorted({mv.name for mv in client.search_model_versions(f"run_id IN ({ids})")})
    if not models:
        raise UserError(f"no registered model has a version from pipeline run {parent.info.run_id}'s training: {FIRST}")
    return Pipeline(eid, parent, children, training, models)


def share_view(client, experiment_id: str, key: str = SHARE_KEY) -> str:
    """The runs table's view (columns, widths; sorted by creation time, so children nest under
    their parent) stored as the UI's Share button stores one; returns the URL query naming it."""
    state = {"selectedColumns": _COLUMNS, "columnOrder": list(_WIDTHS), "columnWidths": _WIDTHS}
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{key}", json.dumps(state))
    return f"viewStateShareKey={key}"


def _has_row(run_id: str) -> str:
    return f"document.querySelector('[row-id=\"{run_id}\"]')"


def _shows_all(texts: list[str]) -> str:
    return f"{json.dumps(texts)}.every(t => document.body.innerText.includes(t))"


@dataclass
class Pictures:
    files: dict[str, Path]  # picture name -> file written
    pages: dict[str, Rendered]  # UI picture name -> its page's DOM, as loaded and as pictured


def render_ui(browser: Browser, ui: str, client, pipeline: Pipeline, out: Path) -> Pictures:
    """The four UI pictures of ``pipeline`` into ``out``: the runs table with the pipeline run's
    stages unfolded, the training runs compared, the Logged Models tab and the Model Registry."""
    out.mkdir(parents=True, exist_ok=True)
    eid, parent_id = pipeline.experiment_id, pipeline.parent.info.run_id
    files = {name: out / name for name in UI_PICTURES}
    names = [r.info.run_name for r in pipeline.training]
    ids = [r.info.run_id for r in pipeline.training]
    compare = f"{ui}/#/compare-runs?runs={quote(json.dumps(ids))}&experiments={quote(json.dumps([eid]))}"
    _model_training_view(browser, f"{ui}/#/experiments/{eid}/runs", _has_row(parent_id))
    pages = {
        RUNS_TABLE: render(
            browser,
            f"{ui}/#/experiments/{eid}/runs?{share_view(client, eid)}",
            files[RUNS_TABLE],
            ready=_has_row(parent_id),
            clicks=(f'[row-id="{parent_id}"] [col-id="{_RUN_NAME_COL}"] button',),  # the pipeline run's expander
            then=" && ".join(_has_row(i) for i in ids),
        ),
        # The runs' names and metrics, the plots and the parameters (hundreds) folded away above them.
        COMPARE: render(
            browser,
            compare,
            files[COMPARE],
            ready=_shows_all(names),
            clicks=(
                '[aria-label="collapse Visualizations"]',
                '[aria-label="collapse Parameters"]',
            ),
        ),
        LOGGED_MODELS: render(browser, f"{ui}/#/experiments/{eid}/models", files[LOGGED_MODELS], _shows_all(names)),
        REGISTRY: render(browser, f"{ui}/#/models", files[REGISTRY], _shows_all(pipeline.models)),
    }
    return Pictures(files, pages)


def _model_training_view(browser: Browser, url: str, ready: str) -> None:
    """Switch the UI to its model-training view for every later page (a UI without the switch
    shows its one view)."""
    page = browser.open(url)
    try:
        page.settle(ready)
        page.click_button(MODEL_TRAINING)
    finally:
        page.close()


def copy_validate_plots(client, experiment_id: str, out: Path) -> dict[str, Path]:
    """validate's own plots, from the experiment's latest finished validate run."""
    runs = client.search_runs(
        [experiment_id],
        "tags.`tfqa.stage` = 'validate' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise UserError(f"experiment {experiment_id} holds no finished validate run: {FIRST}")
    run_id = runs[0].info.run_id
    written = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, artifact in VALIDATE_PLOTS.items():
            try:
                local = client.download_artifacts(run_id, artifact, tmp)
            except Exception as e:  # MlflowException or OSError, by artifact store
                raise UserError(f"validate run {run_id} has no artifact {artifact}: {one_line(str(e))}") from None
            write_whole(out / name, Path(local).read_bytes())
            written[name] = out / name
    return written


def make_pictures(out: Path, experiment: str, uri: str, ui_cwd: Path = REPO) -> Pictures:
    """Every picture of the experiment's latest pipeline run into ``out``: validate's plots, then
    the UI's (``mlflow ui`` in ``ui_cwd`` unless ``uri`` is a server)."""
    from mlflow.tracking import MlflowClient

    chromium_binary()  # refuse before writing any picture
    client = MlflowClient(uri)
    pipeline = find_pipeline(client, experiment)
    out.mkdir(parents=True, exist_ok=True)
    plots = copy_validate_plots(client, pipeline.experiment_id, out)
    with mlflow_ui(uri, cwd=ui_cwd) as ui, Browser() as browser:
        shown = render_ui(browser, ui, client, pipeline, out)
    return Pictures({**plots, **shown.files}, shown.pages)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"folder for the pictures (default: {OUT.relative_to(REPO)})")
    ap.add_argument(
        "--experiment",
        default=os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default",
        help="the demo's experiment (default: $MLFLOW_EXPERIMENT_NAME, else Default)",
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A `kill` ends the script as Ctrl-C does: through the blocks that stop mlflow ui and Chromium.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        uri, ui_cwd = resolve_store()
        written = make_pictures(args.out, args.experiment, uri, ui_cwd).files
    except UserError as e:
        print(f"{PREFIX}{one_line(str(e))}", file=sys.stderr)
        return 1
    for path in written.values():
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    print(f"{len(written)} pictures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
