"""The README's library example runs as written, from `knnclass` alone (fake encoder, a tiny real store)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import knnclass
from knnclass.encoders import FakeEncoder

README = Path(__file__).resolve().parents[2] / "README.md"
TOPICS = ["card", "transfer", "pin"]


def _python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_a_library_example_that_imports_only_knnclass() -> None:
    blocks = _python_blocks()
    assert blocks, "no ```python block in README.md"
    for code in blocks:
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("knnclass"):
                assert node.module == "knnclass", f"README imports from {node.module}, not knnclass"
                assert {a.name for a in node.names} <= set(knnclass.__all__)


@pytest.mark.parametrize("indexed", [False, True], ids=["indexes-and-tunes", "existing-collection"])
def test_the_readme_library_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], indexed: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    encoder = FakeEncoder(topics=TOPICS)
    monkeypatch.setattr(knnclass, "load_encoder", lambda *a, **k: encoder)  # the real one needs the model
    rows = [f"{t} problem {i} please help,{t}" for t in TOPICS for i in range(8)]
    Path("tickets.csv").write_text("text,category\n" + "\n".join(rows) + "\n")
    if indexed:  # as the CLI left it: the example only classifies
        with knnclass.open_store("knnclass-data") as store:
            clf = knnclass.Classifier(store, "tickets", encoder=encoder)
            clf.index(knnclass.read_examples(Path("tickets.csv")))
            clf.tune()
        Path("tickets.csv").unlink()
    for code in _python_blocks():
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.split()
    assert printed[0] == "card" and 0 < float(printed[1]) <= 1 and "'card'" in printed[2]
