"""Import rule-engine without rebuilding its parser on every run.

rule-engine builds its LALR parser tables when it is imported (ply.yacc with write_tables off): 0.26 s of every
plan on a 2-core machine, a quarter of the CLI's time. ply reads prebuilt tables from an importable module named
`parsetab` when that module's grammar signature matches, so the tables are written once into the planner's cache
(PLANNER_CACHE_DIR, default ~/.cache/planner) and found there afterwards. Another rule-engine version has another
grammar signature: ply then ignores the file and builds its tables as before.
"""

import os
import sys
import tempfile
from pathlib import Path


def _folder() -> Path:
    return Path(os.environ.get("PLANNER_CACHE_DIR", Path.home() / ".cache" / "planner")) / "rule-engine-tables"


def import_rule_engine():
    folder = _folder()
    sys.path.insert(0, str(folder))
    try:
        import rule_engine
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("parsetab", None)  # the generic name stays free for anyone else's ply grammar
    if not (folder / "parsetab.py").is_file():
        _write_tables(rule_engine, folder)
    return rule_engine


def _write_tables(rule_engine, folder: Path) -> None:
    """Build the tables once more, writing them this time; atomically, as other planners may be starting."""
    from rule_engine._vendor.ply import yacc

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            yacc.yacc(module=rule_engine.Rule.parser, debug=False, write_tables=True, outputdir=tmp,
                      tabmodule="parsetab", errorlog=yacc.NullLogger())
            os.replace(Path(tmp) / "parsetab.py", folder / "parsetab.py")
    except OSError:
        pass  # a read-only home: every run builds the tables, as rule-engine itself does
