"""The rule engine: serving expertise as data (conf/rules/*.yaml), applied to a request as search constraints,
and troubleshooting rules that map a server log to remedies."""

from planner.rules.engine import Constraints, all_rules, constraints_for, evaluate, load

__all__ = ["Constraints", "all_rules", "constraints_for", "evaluate", "load"]
