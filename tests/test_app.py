"""The web demo (_scripts.app): its job function on good and bad input, and the running app in a real
headless browser (Debian's chromium + chromium-driver, installed by make/setup_browser)."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.demo_model import fit_demo_model, toy_images
from training.checkpoint import save_checkpoint
from training.errors import UserError
from training.triplane import build_preset

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# the page's screenshot: docs/images/demo_app.png when ANIME3D_DOC_SCREENSHOT=1 (a docs update), else a
# temporary file (a test run leaves the tracked image alone)
SCREENSHOT_DOC = REPO / "docs" / "images" / "demo_app.png"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("app")
    front, back = toy_images(d)
    fit_demo_model(d / "G.pt", front, back)
    torch.manual_seed(1)
    save_checkpoint(d / "G1.pt", {"G_ema": build_preset("tiny", variant="TriPlaneGenerator", framing="body")},
                    step=0, kimg=0.0)
    return d, front, back


def _job(app, models, d, front, back, name="G.pt", **kw):
    opts = dict(remove_lines=False, mesh_res=48, turntable=2, texture=True, keep_framing=False)
    opts.update(kw)
    return app.run_job(models, d / "work", None, front and str(front), back and str(back), name, **opts)


def test_job_writes_what_the_page_shows(demo):
    from _scripts import app
    import trimesh
    d, front, back = demo
    (d / "work").mkdir(exist_ok=True)
    models = app.Models([d / "G.pt", d / "G1.pt"], registry=d / "none.toml", device="cpu")
    assert list(models.paths) == ["G.pt", "G1.pt"] and models.default == "G.pt"
    seen = []
    res = _job(app, models, d, front, back, progress=lambda f, m: seen.append((f, m)))
    assert res["error"] is None, res["error"]
    out = res["out"]
    for f in ("input_front.png", "input_back.png", "ortho_front.png", "turntable.gif", "mesh.glb", "mesh.ply",
              "summary.json"):
        assert (out / f).is_file(), f
    assert not (out / "triplane.pt").exists()
    m = trimesh.load(out / "mesh.glb", force="mesh")
    assert len(m.vertices) > 100 and isinstance(m.visual, trimesh.visual.TextureVisuals)
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and fr[-1] == 1.0 and any("turntable" in msg for _, msg in seen)
    assert app.status_text(res).startswith("**Done**")


@pytest.mark.parametrize("case", ["no_front", "not_image", "busy", "no_back", "back_for_one_view", "tiny"])
def test_job_answers_bad_input_with_a_message(demo, case):
    from _scripts import app
    d, front, back = demo
    (d / "work").mkdir(exist_ok=True)
    models = app.Models([d / "G.pt", d / "G1.pt"], registry=d / "none.toml", device="cpu")
    f, b, name = front, back, "G.pt"
    if case == "no_front":
        f = None
    elif case == "not_image":
        f = d / "notes.png"
        f.write_text("hello")
    elif case == "busy":
        f = d / "noise.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(f)
    elif case == "no_back":
        b = None
    elif case == "back_for_one_view":
        name = "G1.pt"
    elif case == "tiny":
        f = d / "dot.png"
        Image.fromarray(np.full((1, 1, 4), 255, np.uint8)).save(f)
    res = _job(app, models, d, f, b, name=name, mesh_res=16, texture=False, turntable=0)
    text = app.status_text(res)
    if case == "back_for_one_view":       # not an error: said, and the back is left out
        assert res["error"] is None and "single-view model: the back image is ignored" in text
        assert not (res["out"] / "input_back.png").exists()
        return
    expect = {"no_front": "no front image", "not_image": "notes.png: not a readable image",
              "busy": "no plain background", "no_back": "two-view model: upload the back image",
              "tiny": "1x1 pixels: too small"}[case]
    assert text.startswith("**Error:**") and expect in text and "Traceback" not in text, text


def test_no_models_is_a_one_line_error(tmp_path, capsys):
    from _scripts import app
    (tmp_path / "release.toml").write_text("[models]\n")
    with pytest.raises(UserError, match="no released models are listed yet: start the demo with --ckpt PATH"):
        app.Models([], registry=tmp_path / "release.toml")
    with pytest.raises(SystemExit) as e:
        app.main(["--registry", str(tmp_path / "release.toml")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "--ckpt PATH" in err


# ---------------------------------------------------------------- in a real browser

def _browser_missing() -> str | None:
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.access(exe, os.X_OK):
            return f"{exe} not installed (make/setup_browser installs Debian's chromium and chromium-driver)"
    for mod in ("selenium", "gradio"):
        try:
            __import__(mod)
        except ImportError:
            return f"{mod} not installed (make/setup installs requirements.txt)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_app(demo, tmp_path):
    d, _, _ = demo
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "_scripts.app", "--ckpt", str(d / "G.pt"), "--port", str(port),
                             "--device", "cpu", "--work-dir", str(tmp_path / "work")],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    t0 = time.time()
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() - t0 > 120:
                proc.kill()
                pytest.fail(f"the app did not start: {(tmp_path / 'app.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _driver(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={profile}", "--window-size=1400,1500"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _wait_status(drv, timeout=180):
    from selenium.webdriver.common.by import By
    t0 = time.time()
    while time.time() - t0 < timeout:
        text = drv.find_element(By.ID, "status").text
        if text.startswith(("Done", "Error")):
            return text
        time.sleep(0.5)
    raise AssertionError(f"no result after {timeout} s; status {text!r}")


def test_demo_in_a_headless_browser(demo, running_app, tmp_path):
    why = _browser_missing()
    if why:
        pytest.skip(why)
    import trimesh
    from selenium.webdriver.common.by import By
    d, front, back = demo
    (tmp_path / "notes.png").write_text("not an image")
    profile = tempfile.mkdtemp(prefix="chromium-")
    drv = _driver(profile)
    try:
        drv.get(running_app)
        t0 = time.time()
        while not drv.find_elements(By.CSS_SELECTOR, "#front_file input[type=file]"):
            assert time.time() - t0 < 60, "the page did not load"
            time.sleep(0.5)
        run = drv.find_element(By.ID, "run")
        # bad input first: a non-image file gets a message in the page
        drv.find_element(By.CSS_SELECTOR, "#front_file input[type=file]").send_keys(str(tmp_path / "notes.png"))
        drv.find_element(By.CSS_SELECTOR, "#back_file input[type=file]").send_keys(str(back))
        time.sleep(1.5)
        run.click()
        text = _wait_status(drv)
        assert text.startswith("Error") and "not a readable image" in text and "Traceback" not in text, text
        # now the example pair
        drv.find_element(By.CSS_SELECTOR, "#front_file button[aria-label='Clear']").click() \
            if drv.find_elements(By.CSS_SELECTOR, "#front_file button[aria-label='Clear']") else None
        time.sleep(0.5)
        drv.find_element(By.CSS_SELECTOR, "#front_file input[type=file]").send_keys(str(front))
        time.sleep(1.5)
        run.click()
        t0 = time.time()
        while drv.find_element(By.ID, "status").text.startswith("Error"):   # the old message until it runs
            assert time.time() - t0 < 30, "the second run did not start"
            time.sleep(0.3)
        text = _wait_status(drv)
        assert text.startswith("Done"), text
        t0 = time.time()
        while not (drv.find_elements(By.CSS_SELECTOR, "#mesh_view canvas")
                   and drv.find_elements(By.CSS_SELECTOR, "#downloads a[href*='mesh.glb']")):
            assert time.time() - t0 < 30, "no 3D viewer or GLB link"
            time.sleep(0.5)
        time.sleep(2)                                       # let the viewer draw the mesh
        shot = SCREENSHOT_DOC if os.environ.get("ANIME3D_DOC_SCREENSHOT") == "1" else tmp_path / "demo_app.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(shot))
        assert shot.stat().st_size > 10000
        href = drv.find_element(By.CSS_SELECTOR, "#downloads a[href*='mesh.glb']").get_attribute("href")
        glb = tmp_path / "mesh.glb"
        glb.write_bytes(urllib.request.urlopen(href, timeout=30).read())
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)
    m = trimesh.load(glb, force="mesh")
    assert 1000 < len(m.vertices) < 200000 and len(m.faces) > 1000
    assert isinstance(m.visual, trimesh.visual.TextureVisuals)
