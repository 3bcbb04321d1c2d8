"""The control page (`--web`): in a real headless browser (Debian's chromium and its driver)
against a daemon on real JACK ports, and its token beyond loopback."""
from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request

import pytest

from livegen.control import Requests, request
from livegen.errors import ConfigError
from livegen.web import WebPage
from tests.jackmidi import Daemon, Listener, Player
from tests.virtual import MELODY, Rig

STEP = 60 / (120 * 4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("the control page is tested in a real browser: apt-get install --no-install-recommends "
                    "chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=600,1400"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait(what, timeout=20.0, fail=True):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.1)
    if fail:
        raise AssertionError("not within %.0f s" % timeout)
    return None


@pytest.mark.usefixtures("jack_server")
def test_the_page_shows_the_daemon_moves_its_settings_panics_and_draws_the_notes(shift_model, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    config = tmp_path / "rig.toml"
    config.write_text("[presets.verse]\nprogram = 3\nbpm = 90\n")
    web, control = f"127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    d = Daemon("lgweb", "--model", str(shift_model), "--bpm", "120", "--late-ms", "40", "--config", str(config),
               "--web", web, "--control", control)
    player, listener = Player(d.in_port, "lgweb-p"), Listener(d.out_port, "lgweb-l")
    driver = browser()
    try:
        assert f"control page on http://{web}/" in d.output()
        driver.get(f"http://{web}/")
        wait(lambda: driver.find_element(By.ID, "mode").text == "loop")
        assert driver.find_element(By.ID, "bpm").text == "120"
        assert [b.text for b in driver.find_elements(By.CLASS_NAME, "preset")] == ["verse (3)"]
        # a slider dragged to the left: the daemon's setting follows
        slider = driver.find_element(By.ID, "set-temperature")
        ActionChains(driver).click_and_hold(slider).move_by_offset(-slider.size["width"] // 4, 0).release().perform()
        page_value = float(slider.get_attribute("value"))
        assert page_value < 0.9
        wait(lambda: request(control, {"cmd": "status"})["status"]["settings"]["temperature"] == page_value)
        # the notes played and the voices answering them appear in the roll
        t0 = time.perf_counter() + 0.3
        for pitch, start, end in MELODY:
            player.at(t0 + start * STEP, [0x90, pitch, 100])
            player.at(t0 + end * STEP - 0.01, [0x80, pitch, 0])
        roll = driver.find_element(By.ID, "roll")
        # (JACK's dummy server lost 3 of 14 messages on the way in once: at least 3 of 7 notes)
        wait(lambda: int(roll.get_attribute("data-player")) >= 3)
        wait(lambda: int(roll.get_attribute("data-voices")) >= 3)
        # panic: the daemon ends every note, and every channel in use gets all-notes-off (JACK's
        # dummy server may lose the one cycle the burst goes in: then the button is pressed again)
        def all_off():
            return {(0xB1, 123), (0xB2, 123)} & {tuple(m[:2]) for _, m in listener.messages()}

        for press in range(1, 4):
            driver.find_element(By.ID, "panic").click()
            wait(lambda: d.output().count("panic: every note ended") == press)
            if wait(all_off, timeout=2.0, fail=False):
                break
        assert all_off(), "no CC 123 heard after three presses"
        assert driver.find_element(By.ID, "error").text == ""
        assert d.stop() == 0
    finally:
        driver.quit()
        d.stop()
        player.close()
        listener.close()


def fetch(url, data=None, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=5) as r:
            return r.status, r.read(2000)
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_beyond_loopback_the_page_needs_its_token_on_every_request(shift_model, tmp_path):
    rig = Rig(str(shift_model), bpm=120)
    with pytest.raises(ConfigError, match="a page beyond loopback needs a token"):
        WebPage(rig.engine, Requests(rig.engine), f"0.0.0.0:{free_port()}")
    token = "s3cret-token-of-the-stage-rig"
    port = free_port()
    page = WebPage(rig.engine, Requests(rig.engine), f"0.0.0.0:{port}", token)
    page.start()
    try:
        base = f"http://127.0.0.1:{port}"
        for path in ("/", "/api/status", "/api/events", "/api/status?token=wrong"):
            code, body = fetch(base + path)
            assert code == 401 and b"needs its token" in body, (path, code)
        code, body = fetch(base + "/api/request", data=json.dumps({"cmd": "panic"}).encode())
        assert code == 401
        assert fetch(f"{base}/?token={token}")[0] == 200
        code, body = fetch(base + "/api/request", data=json.dumps({"cmd": "set", "key": "bpm", "value": 96}).encode(),
                           headers={"X-Livegen-Token": token})
        assert code == 200 and json.loads(body)["ok"] and rig.engine.settings.bpm == 96
        code, body = fetch(f"{base}/api/request?token={token}", data=b"{not json")
        assert code == 200 and json.loads(body)["ok"] is False          # answered, nothing changed
        assert page.url == f"http://0.0.0.0:{port}/?token={token}"
    finally:
        page.close()
    with pytest.raises(ConfigError, match="HOST:PORT"):
        WebPage(rig.engine, Requests(rig.engine), "localhost")


def test_livegen_keys_makes_a_token_the_page_reads_from_the_keys_folder(tmp_path):
    import os
    import subprocess
    import sys

    from livegen.web import read_token

    r = subprocess.run([sys.executable, "-m", "livegen", "keys", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0 and f"control page token (--web beyond loopback): {tmp_path / 'web.token'}" in r.stdout
    token = (tmp_path / "web.token").read_text().strip()
    assert len(token) >= 24 and oct(os.stat(tmp_path / "web.token").st_mode & 0o777) == "0o600"
    assert read_token("", str(tmp_path)) == token and read_token("", "") == ""
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        read_token(str(tmp_path / "short"), "")
    with pytest.raises(ConfigError, match="cannot read the control page's token"):
        read_token(str(tmp_path / "missing"), "")
