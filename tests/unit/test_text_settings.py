"""Cleaning and the long-text strategy as collection settings: stamped, applied alike everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from knnclass.classifier import Classifier
from knnclass.data import Example
from knnclass.encoders import FakeEncoder
from knnclass.errors import InputError
from knnclass.store.edge import EdgeStore
from knnclass.text import TextSettings

TOPICS = ["card", "transfer", "pin"]
EMAIL = (Path(__file__).parents[1] / "data" / "emails" / "short_thread.txt").read_text()


def _examples() -> list[Example]:
    return [Example(f"{t}-{i}", f"{t} problem {i} please help", t) for t in TOPICS for i in range(8)]


def test_default_cleaning_is_stamped_and_applied_to_queries(tmp_path: Path) -> None:
    clf = Classifier(EdgeStore(tmp_path / "s"), "tickets", encoder=FakeEncoder(topics=TOPICS))
    clf.index(_examples())
    clf.tune()
    assert (
        clf.meta().text
        == TextSettings().to_dict()
        == {"clean": "email", "long": "head", "fields": ["text"], "template": None}
    )
    p = clf.classify([EMAIL])[0][0]
    assert p.suggestion == "card"  # the quoted "transfer" thread is gone before embedding
    raw = Classifier(EdgeStore(tmp_path / "r"), "tickets", encoder=FakeEncoder(topics=TOPICS))
    raw.index(_examples(), text=TextSettings(clean="none"))
    raw.tune()
    assert raw.classify([EMAIL])[0][0].suggestion == "transfer"  # as the e-mail comes, the quotes win


def test_stored_text_stays_original_and_settings_must_match(tmp_path: Path) -> None:
    clf = Classifier(EdgeStore(tmp_path / "s"), "tickets", encoder=FakeEncoder(topics=TOPICS))
    clf.index([*_examples(), Example("mail-1", EMAIL, "card")])
    assert clf.get("mail-1").text == EMAIL
    with pytest.raises(InputError, match="cleans with 'email'"):
        clf.index(_examples(), text=TextSettings(clean="none"))
    clf.index(_examples(), text=TextSettings())  # the same settings: fine
    with pytest.raises(InputError, match="cleaning must be one of"):
        TextSettings(clean="html")
    with pytest.raises(InputError, match="long-text strategy"):
        TextSettings(long="tail")


def test_predictions_say_when_a_text_was_shortened(tmp_path: Path) -> None:
    clf = Classifier(EdgeStore(tmp_path / "s"), "tickets", encoder=FakeEncoder(topics=TOPICS, max_tokens=16))
    clf.index(_examples(), text=TextSettings(long="chunk"))
    clf.tune()
    long = " ".join(["card trouble"] * 30)
    short, longp = clf.classify(["card trouble", long])[0]
    assert not short.shortened and longp.shortened and longp.suggestion == "card"
    assert longp.to_dict()["shortened"] is True


def test_requests_with_fields_compose_like_the_index(tmp_path: Path) -> None:
    from knnclass.classifier import ClassifyRequest

    clf = Classifier(EdgeStore(tmp_path / "s"), "tickets", encoder=FakeEncoder(topics=TOPICS))
    clf.index(_examples(), text=TextSettings(fields=("subject", "body")))
    clf.tune()
    one, bad = clf.classify_batch(
        [
            ClassifyRequest([], fields=[{"subject": "pin", "body": "pin problem 3 please help"}]),
            ClassifyRequest([], fields=[{"title": "pin"}]),
        ]
    )
    assert not isinstance(one, Exception) and one.predictions[0].suggestion == "pin"
    assert isinstance(bad, InputError) and "unknown field 'title'" in str(bad)


def test_tune_can_pick_the_long_text_strategy_by_validation(tmp_path: Path) -> None:
    clf = Classifier(EdgeStore(tmp_path / "s"), "tickets", encoder=FakeEncoder(topics=TOPICS, max_tokens=8))
    clf.index(_examples())
    clf.tune()
    # the topic only in the middle of each long validation ticket: head_tail cuts it out
    # (the fake encoder's "head" reads every word; its head_tail and chunk work on words)
    pad = " ".join(["hello there"] * 10)
    val = [Example(f"v{i}", f"{pad} {t} problem {pad}", t) for i, t in enumerate(TOPICS * 3)]
    scores = clf.set_long_text(val, "auto")
    assert set(scores) == {"head", "head_tail", "chunk"} and scores["head_tail"] < max(scores.values())
    assert clf.meta().text["long"] == max(scores, key=lambda k: (scores[k], k == "head"))
    with pytest.raises(InputError, match="needs --validation"):
        clf.set_long_text(None, "auto")
    clf.set_long_text(None, "chunk")
    assert clf.meta().text["long"] == "chunk"
