"""Sphinx configuration of tunegate's documentation (``make docs``; warnings are errors).

Pages are Markdown (MyST). The CLI reference is rendered from the real argparse parsers
(sphinx-argparse over ``tunegate_cli.build_parser``) and the settings reference from the real
pydantic settings classes (autodoc-pydantic), so neither can drift from the code:
``tests/docs`` builds the site and checks every flag and field is in it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tunegate_cli and the packages, installed or not

project = "tunegate"
author = "the tunegate developers"
copyright = "tunegate developers"
extensions = [
    "myst_parser",
    "sphinxarg.ext",
    "sphinx.ext.autodoc",
    "sphinxcontrib.autodoc_pydantic",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
smartquotes = False  # "--version" in a help text stays two hyphens, as it is typed
html_theme = "alabaster"
html_static_path = ["_static"]
html_theme_options = {"description": "a model-serving gateway with online fine-tuning",
                      "fixed_sidebar": True, "page_width": "1240px", "sidebar_width": "250px",
                      "body_max_width": "none"}
highlight_language = "none"  # an unlabelled block (a tree, a log line) is shown as written
html_title = "tunegate"

# Settings: every field with its type, default, bounds (from the Field constraints) and the
# docstring under it; no validator or JSON-schema noise.
autodoc_pydantic_model_show_json = False
autodoc_pydantic_settings_show_json = False
autodoc_pydantic_model_show_config_summary = False
autodoc_pydantic_settings_show_config_summary = False
autodoc_pydantic_model_show_validator_summary = False
autodoc_pydantic_settings_show_validator_summary = False
autodoc_pydantic_model_show_validator_members = False
autodoc_pydantic_settings_show_validator_members = False
autodoc_pydantic_field_list_validators = False
autodoc_pydantic_model_show_field_summary = True
autodoc_pydantic_settings_show_field_summary = True
autodoc_pydantic_field_show_constraints = True
autodoc_pydantic_model_member_order = "bysource"
autodoc_pydantic_settings_member_order = "bysource"
autodoc_pydantic_model_members = True
autodoc_pydantic_settings_members = True
autodoc_pydantic_model_undoc_members = True
autodoc_pydantic_settings_undoc_members = True
autodoc_pydantic_model_hide_paramlist = True
autodoc_pydantic_settings_hide_paramlist = True
# Methods of the settings classes (loop_for, runtime_for) are code, not settings.
autodoc_default_options = {"exclude-members": "loop_for, runtime_for, model_post_init"}
autodoc_pydantic_model_summary_list_order = "bysource"
autodoc_pydantic_settings_summary_list_order = "bysource"


def _unlisted_pages(listed: str) -> list[str]:
    """Markdown pages under docs/ that index.md's toctrees do not name (a page added with a
    feature, e.g. a converter's notes), so they are in the site rather than a build error."""
    here = Path(__file__).parent
    pages = sorted(p.relative_to(here).with_suffix("").as_posix() for p in here.rglob("*.md")
                   if "_build" not in p.parts and p.name != "index.md")
    named = set(re.findall(r"^([\w./-]+)$", listed, re.M))
    return [page for page in pages if page not in named]


def _list_every_page(app, docname: str, source: list[str]) -> None:
    if docname == root_doc and (extra := _unlisted_pages(source[0])):
        source[0] += "\n```{toctree}\n:maxdepth: 1\n:caption: Notes\n\n" + "\n".join(extra) + "\n```\n"


def setup(app):
    app.connect("source-read", _list_every_page)
