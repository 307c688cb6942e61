"""Import rule-engine without rebuilding its parser on every run.

rule-engine builds its LALR parser tables when it is imported (ply.yacc with write_tables off): 0.26 s of every
plan on a 2-core machine, a quarter of the CLI's time. ply first tries to import prebuilt tables from the module
`rule_engine.parser.parsetab` and uses them when their grammar signature matches; the package ships none. So the
tables are written once into the planner's cache (PLANNER_CACHE_DIR, default ~/.cache/planner) and handed to ply
under that module name while rule-engine imports. Another rule-engine version has another grammar signature: ply
then ignores the file and builds its tables as before.
"""

import importlib.util
import os
import sys
import tempfile
from pathlib import Path


def _folder() -> Path:
    return Path(os.environ.get("PLANNER_CACHE_DIR", Path.home() / ".cache" / "planner")) / "rule-engine-tables"


def import_rule_engine():
    if "rule_engine" in sys.modules:
        return sys.modules["rule_engine"]
    folder = _folder()
    table = folder / "parsetab.py"
    name = "rule_engine.parser.parsetab"
    if table.is_file():
        try:
            spec = importlib.util.spec_from_file_location(name, table)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[name] = module
        except Exception:  # noqa: BLE001 - a damaged cache file: ply builds the tables itself
            pass
    try:
        import rule_engine
    finally:
        cached = sys.modules.pop(name, None)
    if getattr(cached, "_lr_signature", None) != _signature(rule_engine):
        _write_tables(rule_engine, folder)  # none yet, or another rule-engine's
    return rule_engine


def _signature(rule_engine) -> str:
    """The grammar signature ply compares with a table file's (yacc.yacc does the same reflection)."""
    from rule_engine._vendor.ply import yacc

    parser = rule_engine.Rule.parser
    info = yacc.ParserReflect({k: getattr(parser, k) for k in dir(parser)}, log=yacc.NullLogger())
    info.get_all()
    return info.signature()


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
