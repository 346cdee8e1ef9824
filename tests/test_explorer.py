"""The explorer in a real browser: headless Chromium (the distribution's package) driven by Selenium.

Set CLIPLENS_EXPLORER_SCREENSHOTS to a folder to keep a screenshot of each view (docs/img/ holds them).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]
gr = pytest.importorskip("gradio", reason="needs the explore extra (pip install -e '.[explore]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[dev]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from cliplens.explore import build_app  # noqa: E402

RUN = "results/{line}/model=tiny_random/dataset=skimage_samples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def explorer(smoke_run):
    port = free_port()
    app = build_app(smoke_run / "results")
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, ssr_mode=False, quiet=True)
    yield f"http://127.0.0.1:{port}"
    app.close()


@pytest.fixture(scope="module")
def browser(explorer):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.get(explorer)
    WebDriverWait(driver, 60).until(lambda d: "random weights" in d.find_element(By.TAG_NAME, "body").text)
    yield driver
    driver.quit()


def text_of(driver, elem_id: str) -> str:
    return driver.find_element(By.ID, elem_id).text


def wait_for(driver, condition, timeout: float = 240):
    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: condition())


def images_in(driver, elem_id: str) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img"))


def open_tab(driver, name: str) -> None:
    tab = next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role='tab']") if b.text.strip() == name)
    tab.click()


def type_into(driver, elem_id: str, text: str) -> None:
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    box.clear()
    box.send_keys(text)


def table_rows(driver, elem_id: str) -> list[list[str]]:
    """The cells of a Gradio table, row by row (header excluded), read from its text."""
    grid = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} [role='grid']")
    columns, count = int(grid.get_attribute("aria-colcount")), int(grid.get_attribute("aria-rowcount")) - 1
    lines = text_of(driver, elem_id).splitlines()
    cells = lines[lines.index(grid.get_attribute("aria-label")) + 1 + columns :]
    return [cells[i * columns : (i + 1) * columns] for i in range(count)]


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("CLIPLENS_EXPLORER_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"explorer-{name}.png"))


def test_every_view_names_the_model_and_its_random_weights(browser):
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "tiny_random" in body and "random weights" in body
    assert {b.text.strip() for b in browser.find_elements(By.CSS_SELECTOR, "button[role='tab']")} >= {
        "Perturbations",
        "Maps",
        "Heads",
        "Search",
    }


def test_perturbations_view_sorts_images_by_susceptibility(browser, smoke_run):
    open_tab(browser, "Perturbations")
    browser.find_element(By.ID, "perturbations-go").click()
    wait_for(browser, lambda: "most susceptible first" in text_of(browser, "perturbations-text"))
    wait_for(browser, lambda: images_in(browser, "perturbations-gallery") >= 4)
    susceptibility = pd.read_parquet(smoke_run / RUN.format(line="perturbation") / "susceptibility.parquet")
    family = susceptibility[susceptibility["family"] == "contrast"]  # the first family, alphabetically
    assert "contrast at severity 5" in text_of(browser, "perturbations-text")
    rows = table_rows(browser, "perturbations-table")
    assert len(rows) == len(family)
    assert sorted(row[0] for row in rows) == sorted(family["image_id"])
    shown = [float(row[7]) for row in rows]  # the susceptibility column
    assert shown == sorted(shown, reverse=True)
    assert rows[0][0] == family.loc[family["susceptibility"].idxmax(), "image_id"]
    screenshot(browser, "perturbations")


def test_maps_view_computes_a_typed_prompt_and_reads_stored_labels(browser):
    open_tab(browser, "Maps")
    type_into(browser, "maps-prompt", "a red rocket on the moon")
    browser.find_element(By.ID, "maps-go").click()
    wait_for(browser, lambda: "a red rocket on the moon" in text_of(browser, "maps-text"))
    assert "computed now" in text_of(browser, "maps-text")
    wait_for(browser, lambda: images_in(browser, "maps-gallery") >= 4)  # the image, raw, surgery, gradcam
    screenshot(browser, "maps")
    type_into(browser, "maps-prompt", "astronaut")  # the first image's own label: stored by the workflow
    browser.find_element(By.ID, "maps-go").click()
    wait_for(browser, lambda: "stored by the workflow" in text_of(browser, "maps-text"))


def test_heads_view_shows_textspan_label_neighbours_and_topic_map(browser, smoke_run):
    open_tab(browser, "Heads")
    type_into(browser, "heads-text", "a photo of a cat")
    browser.find_element(By.ID, "heads-go").click()
    wait_for(browser, lambda: "property" in text_of(browser, "heads-text-out"))
    wait_for(browser, lambda: images_in(browser, "heads-topic") >= 1)
    header = text_of(browser, "heads-text-out")
    layer, head = (int(v) for v in header.split("Layer ")[1].split(":")[0].split(", head "))
    labels = pd.read_csv(smoke_run / RUN.format(line="interpret") / "head_labels.csv")
    expected = labels[(labels["layer"] == layer) & (labels["head"] == head)]["label"].iloc[0]
    assert f"property {expected}" in header
    spans = pd.read_csv(smoke_run / RUN.format(line="interpret") / "textspan.csv")
    first_text = spans[(spans["layer"] == layer) & (spans["head"] == head) & (spans["rank"] == 0)]["text"].iloc[0]
    assert table_rows(browser, "heads-spans")[0][1] == first_text
    assert images_in(browser, "heads-nearest") >= 1
    screenshot(browser, "heads")


def test_search_view_finds_heads_of_a_property_and_of_a_text(browser, smoke_run):
    labels = pd.read_csv(smoke_run / RUN.format(line="interpret") / "head_labels.csv")
    prop = labels["label"].value_counts().index[0]
    open_tab(browser, "Search")
    type_into(browser, "search-query", prop)
    browser.find_element(By.ID, "search-go").click()
    wait_for(browser, lambda: f"labelled {prop}" in text_of(browser, "search-heads"))
    expected = labels[labels["label"] == prop]
    assert sorted((int(r[0]), int(r[1])) for r in table_rows(browser, "search-heads")) == sorted(
        zip(expected["layer"], expected["head"])
    )
    wait_for(browser, lambda: images_in(browser, "search-gallery") >= 1)
    type_into(browser, "search-query", "a snowy mountain")
    browser.find_element(By.ID, "search-go").click()
    wait_for(browser, lambda: "a snowy mountain" in text_of(browser, "search-text"))
    wait_for(browser, lambda: "std of projection" in text_of(browser, "search-heads"))
    screenshot(browser, "search")


def test_the_command_serves_the_results_and_prints_only_its_address(smoke_run):
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    command = [sys.executable, "-m", "cliplens.cli", "explore", str(smoke_run / "results"), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [process.stdout.readline()]
        while "cliplens explorer of" not in lines[-1] and process.poll() is None:
            lines.append(process.stdout.readline())
        assert f"http://127.0.0.1:{port}/ (Ctrl-C stops it)" in lines[-1], lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=30)
    assert "share=True" not in "".join(lines) + rest  # no hint on public links: the explorer serves locally
