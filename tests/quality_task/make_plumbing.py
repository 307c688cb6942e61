"""Writes planner/data/quality/plumbing.jsonl, the accuracy gate's shipped task (docs/quality.md), from the tiny
corpus: the context is a sentence's first 8 words, the answer its 9th word, the three distractors 4-word spans of
other sentences; the answer's position cycles 0-3. tests/test_quality.py checks the shipped file is this output.

    python tests/quality_task/make_plumbing.py > planner/data/quality/plumbing.jsonl
"""

import json
import re
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "planner" / "data" / "tiny_corpus.txt"
ITEMS = 60
CONTEXT_WORDS = 8


def items() -> list[dict]:
    sentences = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+", CORPUS.read_text())
                 if len(s.split()) >= 14]
    out = []
    for i, sentence in enumerate(sentences[:ITEMS]):
        words = sentence.split()
        others = [sentences[(i + 7 * k + 3) % len(sentences)].split() for k in (1, 2, 3)]
        distractors = [" ".join(o[2:6]) for o in others]
        gold = i % 4
        out.append({"context": " ".join(words[:CONTEXT_WORDS]),
                    "choices": distractors[:gold] + [words[CONTEXT_WORDS]] + distractors[gold:], "gold": gold})
    return out


def text() -> str:
    return "".join(json.dumps(item, sort_keys=True) + "\n" for item in items())


if __name__ == "__main__":
    print(text(), end="")
