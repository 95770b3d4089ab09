"""The docs say what the code does: man page options and targets, README parameters."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest
from docutils.core import publish_string

from iterfs import params
from iterfs.catalog import BUNDLED_DIR, READMES_DIR
from iterfs.cli import build_parser
from iterfs.objects import read_object

ROOT = Path(__file__).resolve().parent.parent
MAN_PAGES = sorted((ROOT / "man").glob("*.rst"))


def bundled_targets() -> set[str]:
    from iterfs.catalog import FIELDS_PLACEHOLDER, GENERIC

    return {p.target for path in BUNDLED_DIR.glob("*.bpf.o") for p in read_object(path).programs} - {
        GENERIC, FIELDS_PLACEHOLDER}


def cli_options(parser: argparse.ArgumentParser) -> set[str]:
    options = set()
    for action in parser._actions:
        options.update(o for o in action.option_strings if o not in ("-h", "--help"))
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                options.add(name)
                options |= cli_options(sub)
    return options


@pytest.mark.parametrize("page", MAN_PAGES, ids=lambda p: p.name)
def test_man_page_renders_without_groff_warnings(page):
    roff = publish_string(page.read_text(), writer="manpage",
                          settings_overrides={"report_level": 2, "halt_level": 2})
    done = subprocess.run(["groff", "-man", "-ww", "-z"], input=roff, capture_output=True)
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()


def test_man_page_documents_every_option_and_target():
    import importlib.util

    spec = importlib.util.spec_from_file_location("targets", ROOT / "man" / "targets.py")
    targets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(targets)
    tree = (ROOT / "man" / "iterfs.7.rst").read_text()
    assert tree == targets.rewritten(tree), "iterfs(7) TARGETS differs from the READMEs: run make man"
    command = (ROOT / "man" / "iterfs.8.rst").read_text()
    for option in cli_options(build_parser()):
        assert f"**{option}**" in command, f"{option} is not in iterfs(8)"
    for target in bundled_targets():
        assert f"**{target}**" in tree, f"target {target} is not in iterfs(7)"


def test_every_bundled_target_has_a_readme_naming_its_parameters():
    readme_md = (ROOT / "README.md").read_text()
    for target in bundled_targets():
        readme = (READMES_DIR / target).read_text()
        assert readme.startswith(f"{target}:")
        schema = params.schema_for(target)
        for key in schema.keys:
            assert f"{key}=" in readme, f"{target}/README does not mention {key}="
        assert (f"{target}/all" in readme or "  all " in readme) == schema.walks_all
        assert f"`{target}`" in readme_md, f"README.md does not list {target}"


def test_the_readme_table_of_layers_is_the_import_graph():
    """Every module is in "How one cat travels", and imports only modules of rows below its own."""
    import ast
    import re

    text = (ROOT / "README.md").read_text()
    table = text[text.index("## How one `cat` travels"):].split("\n\n")[1]
    rows = [set(re.findall(r"`iterfs/(\w+)(?:\.py|/)`", line)) for line in table.splitlines()[2:]]
    row_of = {module: index for index, modules in enumerate(rows) for module in modules}
    modules = {p.stem for p in (ROOT / "iterfs").glob("*.py")} - {"__init__", "__main__", "mount_helper"}
    assert modules | {"_libbpf"} == set(row_of), "modules missing from the README table, or gone from iterfs/"
    entry_points = rows[-1]
    for module in sorted(modules - entry_points):
        tree = ast.parse((ROOT / "iterfs" / f"{module}.py").read_text())
        imported = {n.module.split(".")[0] if n.module else a.name
                    for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1
                    for a in n.names}
        for other in imported:
            assert row_of[other] > row_of[module] or (row_of[other] == row_of[module] and other != module), \
                f"{module} imports {other}, which the README puts above it"
