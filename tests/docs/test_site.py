"""The site builds with no warnings, and its generated references are complete: every flag
of every ``tunegate`` subcommand and every field of every settings class is in the built
pages, so a renamed flag or setting fails here (they are generated from the code, so this
checks that the generation still reaches all of it)."""

from __future__ import annotations

import argparse
import html
import re
from pathlib import Path

from pydantic import BaseModel

import tunegate_cli
from gateway.settings import Settings

from .conftest import DOCS, ROOT

README_MAX_LINES = 200


def _text(page: Path) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page.read_text())))


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for the parser and every sub-parser below it."""
    yield path, parser
    for action in parser._actions:  # argparse keeps no public list of its sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _models(model: type[BaseModel], seen: set[type[BaseModel]]):
    """The settings class and every settings class its fields hold (nested, in dicts)."""
    if model in seen:
        return
    seen.add(model)
    yield model
    for field in model.model_fields.values():
        for arg in _types(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _models(arg, seen)


def _types(annotation):
    yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _types(arg)


def test_every_cli_flag_is_in_the_reference(site):
    page = _text(site / "reference" / "cli.html")
    squeezed = re.sub(r"\s+", "", page)
    missing = []
    for path, parser in _parsers(tunegate_cli.build_parser(every=True)):
        # Each (sub)command's own usage line, with every flag it takes, is in its section...
        usage = re.sub(r"\s+", "", parser.format_usage().removeprefix("usage:"))
        if usage not in squeezed:
            missing.append(f"usage of {' '.join(('tunegate', *path))}")
        # ...and every flag is described, with its help (and default) where it has one.
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):  # -h: the reference is the help
                continue
            missing += [f"{' '.join(path)} {flag}" for flag in action.option_strings if flag not in page]
            if action.help and action.help != argparse.SUPPRESS and "%(" not in action.help \
                    and " ".join(action.help.split()) not in page:
                missing.append(f"help of {' '.join(path)} {action.dest}")
    assert not missing, f"missing from the CLI reference: {missing}"


def test_every_setting_is_in_the_reference(site):
    page = (site / "reference" / "settings.html").read_text()
    models = list(_models(Settings, set()))
    assert {m.__name__ for m in models} >= {"Settings", "RuntimeSettings", "TritonSettings", "LoopSettings",
                                            "LeaderSettings", "TracingSettings"}
    missing = [f"{m.__name__}.{name}" for m in models for name in m.model_fields
               if f'id="{m.__module__}.{m.__name__}.{name}"' not in page]
    assert not missing, f"settings missing from the settings reference: {missing}"


def test_the_site_has_the_pages_a_newcomer_needs(site):
    for page in ("getting-started", "tutorial", "concepts", "guides/convert", "guides/serve", "guides/loop",
                 "guides/finetune", "guides/scale-out", "guides/triton", "guides/helm", "guides/observability",
                 "guides/security", "reference/cli", "reference/settings", "reference/http", "reference/metrics",
                 "reference/exit-codes", "benchmarks", "architecture"):
        assert (site / f"{page}.html").is_file(), page
    assert (site / "_images" / "dashboard-canary.png").is_file()  # the screenshot the dashboard test takes


def test_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    commands = re.findall(r"^make (\w+)", readme, re.M)
    assert commands[:2] == ["demo", "test"], "make demo and make test stay README's first two commands"
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert links and all((ROOT / link).exists() for link in links), [l for l in links if not (ROOT / l).exists()]
    assert all((DOCS / link[len("docs/"):]).exists() for link in links if link.startswith("docs/"))
