"""rule-engine's parser tables are cached once and read back (planner/rules/parser_tables.py)."""

import subprocess
import sys

CODE = """
import sys
built = []
sys.setprofile(lambda frame, event, arg: built.append(1) if event == "call"
               and frame.f_code.co_name == "lr_parse_table" else None)
from planner.rules.parser_tables import import_rule_engine
re = import_rule_engine()
sys.setprofile(None)
assert "rule_engine.parser.parsetab" not in sys.modules
print(re.Rule("gpu.memory_gib > 40").matches({"gpu": {"memory_gib": 80}}), "built" if built else "read")
"""


def run(env_dir):
    env = {"PLANNER_CACHE_DIR": str(env_dir), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)


def test_tables_written_once_then_read(tmp_path):
    assert run(tmp_path).stdout.split() == ["True", "built"]
    table = tmp_path / "rule-engine-tables" / "parsetab.py"
    assert table.is_file() and "_lr_signature" in table.read_text()
    stamp = table.stat().st_mtime_ns
    assert run(tmp_path).stdout.split() == ["True", "read"]
    assert table.stat().st_mtime_ns == stamp  # read, not rebuilt
    assert not [p for p in table.parent.iterdir() if p.is_dir() and p.name != "__pycache__"]  # no temp dirs left


def test_stale_tables_are_rebuilt(tmp_path):
    folder = tmp_path / "rule-engine-tables"
    folder.mkdir()
    (folder / "parsetab.py").write_text("_tabversion = '3.10'\n_lr_signature = 'another grammar'\n"
                                        "_lr_action = {}\n_lr_goto = {}\n_lr_productions = []\n_lr_method = 'LALR'\n")
    assert run(tmp_path).stdout.split() == ["True", "built"]
    assert "another grammar" not in (folder / "parsetab.py").read_text()  # replaced by this version's tables
