"""The report page's Jinja template (templates/report/report.html.j2): where it is, in a source
tree or an installed package, compiled once per process, and compiled ahead on a background
thread while a local run evaluates.
"""
from __future__ import annotations

import os
import threading
from typing import Any

TEMPLATE_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    'templates', 'report')
if not os.path.isdir(TEMPLATE_DIR):
    # An installed package (a Dataflow or Dask worker, which writes the report at the end of a
    # run) has no source tree: setup.py ships templates/ as the `headstream_templates` package.
    import importlib.util
    _spec = importlib.util.find_spec('headstream_templates')
    if _spec is not None and _spec.submodule_search_locations:
        TEMPLATE_DIR = os.path.join(list(_spec.submodule_search_locations)[0], 'report')
TEMPLATE_NAME = 'report.html.j2'

_template: Any = None
_template_lock = threading.Lock()


def page_template() -> Any:
    """The page's Jinja template, compiled once per process.

    Raises:
      FileNotFoundError: the template file is missing (a broken install).
    """
    global _template
    with _template_lock:
        if _template is None:
            import jinja2
            env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                                     autoescape=jinja2.select_autoescape(['html', 'j2']),
                                     undefined=jinja2.StrictUndefined)
            try:
                _template = env.get_template(TEMPLATE_NAME)
            except jinja2.TemplateNotFound as e:
                raise FileNotFoundError('headstream report: page template %s not found'
                                        % os.path.join(TEMPLATE_DIR, TEMPLATE_NAME)) from e
        return _template


def prepare_in_background() -> threading.Thread:
    """Compiles the page template (and imports Jinja) on a background thread, while a local run
    evaluates, so the report costs less at the run's end. Errors are left for the report writer
    to raise."""
    def compile_quietly() -> None:
        try:
            page_template()
        except Exception:  # noqa: BLE001 -- write_report raises it where it belongs
            pass
    thread = threading.Thread(target=compile_quietly, name='headstream-report-template',
                              daemon=True)
    thread.start()
    return thread
