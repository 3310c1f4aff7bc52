"""Drive one JupyterLab 4 notebook through the page, as a student does.

Every action goes through the user interface: clicks into CodeMirror editors, key presses,
inserted text, the menu bar. Every wait is on a DOM condition (the kernel indicator, the cell
prompts, an output appearing), never a fixed sleep.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re

from playwright.sync_api import Locator, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
]
STDERR = "application/vnd.jupyter.stderr"

# -- page-side helpers (JavaScript run in the page by page.evaluate / wait_for_function) -------

_CELLS = "document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')"

_KERNEL_IDLE = """() => {
  const name = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-KernelName');
  const status = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
  return !!name && !!status && !/no kernel/i.test(name.innerText) && name.innerText.trim() !== ''
      && status.dataset.status === 'idle';
}"""

# Run All is finished when no prompt shows [*], some cell has run, and the kernel is idle.
_RUN_FINISHED = """() => {
  const prompts = [...%s].filter(c => c.classList.contains('jp-CodeCell'))
      .map(c => (c.querySelector('.jp-InputPrompt')?.innerText || '').trim());
  if (prompts.some(p => p.includes('*'))) return false;
  if (!prompts.some(p => /\\d/.test(p))) return false;
  return (%s)();
}""" % (_CELLS, _KERNEL_IDLE)

_SNAPSHOT = (
    """() => [...%s].map((cell, index) => ({
  index,
  kind: cell.classList.contains('jp-CodeCell') ? 'code'
      : cell.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw',
  prompt: (cell.querySelector('.jp-InputPrompt')?.innerText || '').trim(),
  outputs: [...cell.querySelectorAll('.jp-OutputArea-output')].map(output => ({
    mime: output.getAttribute('data-mime-type')
        || output.querySelector('[data-mime-type]')?.getAttribute('data-mime-type') || '',
    text: output.innerText,
    svg: output.querySelectorAll('svg').length
        + output.querySelectorAll('img[src^="data:image/svg+xml"]').length,
  })),
}))"""
    % _CELLS
)


@dataclasses.dataclass
class Output:
    mime: str
    text: str
    svg: int  # rendered SVG pictures in this output (inline <svg> or SVG <img>)


@dataclasses.dataclass
class CellView:
    """What the page shows for one cell after a run."""

    index: int
    kind: str
    prompt: str
    outputs: list[Output]

    @property
    def text(self) -> str:
        return "\n".join(output.text for output in self.outputs)

    @property
    def executed(self) -> bool:
        return bool(re.search(r"\d", self.prompt))

    @property
    def errors(self) -> list[str]:
        """Outputs that show an error: anything on stderr, or a traceback anywhere."""
        return [output.text for output in self.outputs if output.mime == STDERR or "Traceback" in output.text]

    def describe(self) -> str:
        shown = "\n".join(f"    [{output.mime}] {output.text.strip()[:1500]}" for output in self.outputs)
        return f"cell {self.index} ({self.kind}, prompt {self.prompt!r}):\n{shown or '    (no output)'}"


class NotebookPage:
    """One notebook open in JupyterLab, in one Playwright page."""

    def __init__(self, page: Page, timeout_ms: float = 60_000):
        self.page = page
        self.timeout_ms = timeout_ms
        page.set_default_timeout(timeout_ms)

    # -- opening ----------------------------------------------------------------------------

    def open(self, url: str, n_cells: int) -> None:
        """Load the lab page and wait until all `n_cells` cells are shown and the kernel is idle."""
        self.page.goto(url)
        self.page.wait_for_function(f"() => {_CELLS}.length === {n_cells}")
        self.wait_for_kernel_idle()

    def wait_for_kernel_idle(self) -> None:
        self.page.wait_for_function(_KERNEL_IDLE)

    def cell(self, index: int) -> Locator:
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)

    def extension_state(self) -> dict:
        """Which lab extensions the page loaded, and what nbgrader's put into the interface."""
        return self.page.evaluate("""() => {
          const config = JSON.parse(document.getElementById('jupyter-config-data').textContent);
          return {
            federated: (config.federated_extensions || []).map(e => e.name),
            disabled: config.disabledExtensions || [],
            menus: [...document.querySelectorAll('.lm-MenuBar-itemLabel')].map(e => e.innerText.trim()),
            toolbar: [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar-item')]
                .map(e => e.innerText.trim()).filter(Boolean),
          };
        }""")

    # -- editing ----------------------------------------------------------------------------

    def editor_text(self, index: int) -> str:
        lines = self.cell(index).locator(".cm-content .cm-line").all_inner_texts()
        return "\n".join("" if line == "\n" else line for line in lines)

    def type_into_cell(self, index: int, text: str) -> None:
        """Replace the text of cell `index` as a student would: (double-)click, select all, type."""
        cell = self.cell(index)
        cell.scroll_into_view_if_needed()
        if "jp-mod-rendered" in (cell.get_attribute("class") or ""):  # a rendered markdown cell
            cell.locator(".jp-MarkdownOutput").dblclick()
        cell.locator(".cm-content").click()
        self.page.wait_for_function(
            "(i) => %s[i].querySelector('.cm-editor').classList.contains('cm-focused')" % _CELLS, arg=index
        )
        self.page.keyboard.press("ControlOrMeta+A")
        self.page.keyboard.insert_text(text)
        self.page.keyboard.press("Escape")  # back to command mode

    def save(self) -> None:
        """File > Save (Ctrl+S in command mode) and wait until the tab is no longer dirty."""
        self.page.keyboard.press("ControlOrMeta+S")
        self.page.wait_for_function(
            "() => !document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)')"
            ".classList.contains('jp-mod-dirty') && !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')"
        )

    # -- running ----------------------------------------------------------------------------

    def menu(self, menu: str, item: str) -> None:
        """Click a menu of the menu bar, then one of its items (by their labels)."""
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{re.escape(menu)}$")).click()
        label = self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$"))
        self.page.locator(".lm-Menu-item", has=label).click()

    def run_all(self) -> None:
        """Run > Run All Cells, then wait until every cell that will run has run."""
        self.menu("Run", "Run All Cells")
        self.page.wait_for_function(_RUN_FINISHED)

    def snapshot(self) -> list[CellView]:
        cells = self.page.evaluate(_SNAPSHOT)
        return [CellView(c["index"], c["kind"], c["prompt"], [Output(**o) for o in c["outputs"]]) for c in cells]

    # -- pictures ---------------------------------------------------------------------------

    def screenshot_notebook(self, path: pathlib.Path) -> None:
        """The whole notebook in one picture: make the window tall enough that nothing scrolls."""
        path.parent.mkdir(parents=True, exist_ok=True)
        size = self.page.viewport_size
        hidden = self.page.evaluate(
            """() => {
          const scroller = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
          const cells = %s;
          if (!scroller || !cells.length) return 0;
          const bottom = cells[cells.length - 1].getBoundingClientRect().bottom
              - scroller.getBoundingClientRect().top + scroller.scrollTop;
          return Math.max(0, Math.ceil(bottom - scroller.clientHeight));
        }"""
            % _CELLS
        )
        self.page.set_viewport_size({"width": size["width"], "height": min(size["height"] + hidden + 24, 30_000)})
        self.page.evaluate("""() => new Promise(done => {
          const scroller = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
          if (scroller) scroller.scrollTop = 0;
          requestAnimationFrame(() => requestAnimationFrame(done));
        })""")
        self.page.screenshot(path=str(path))
        self.page.set_viewport_size(size)

    def screenshot_cell(self, index: int, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.cell(index).scroll_into_view_if_needed()
        self.cell(index).screenshot(path=str(path))


def read_notebook(path: pathlib.Path) -> dict:
    return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))


def cell_text(cell: dict) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source
