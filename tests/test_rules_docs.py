"""docs/rules.md is generated from the rule files and must match them."""

from planner.rules import docs

from conftest import ROOT


def test_rules_doc_is_current():
    assert (ROOT / "docs" / "rules.md").read_text() == docs.render(), \
        "docs/rules.md is stale: python -m planner.rules.docs > docs/rules.md"
