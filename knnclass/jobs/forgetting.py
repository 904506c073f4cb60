"""The forgetting check: general skill outside the task, before and after tuning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["GENERAL_PAIRS", "forgetting_figures", "general_vectors"]

# Paraphrase pairs far from support tickets: the "general skill" the forgetting check
# measures before and after tuning (each sentence's nearest neighbour should be its pair).
GENERAL_PAIRS: list[tuple[str, str]] = [
    ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ("It will rain heavily tomorrow afternoon.", "Expect strong showers tomorrow after lunch."),
    ("She won the marathon in record time.", "The runner finished the 42 km race faster than anyone before."),
    ("Add two cups of flour and stir well.", "Mix in a pair of cups of flour thoroughly."),
    ("The museum opens at nine on weekdays.", "On working days the gallery lets visitors in from 9 am."),
    ("He plays the violin in an orchestra.", "He is a violinist in a symphony ensemble."),
    ("The volcano erupted, covering the town in ash.", "Ash from the eruption blanketed the village."),
    ("My grandmother grows tomatoes in her garden.", "Grandma cultivates tomatoes in her backyard."),
    ("The football match ended in a draw.", "Neither team won the soccer game."),
    ("Astronauts repaired the telescope in orbit.", "The space crew fixed the orbiting observatory."),
    ("The train to Paris was delayed by an hour.", "Our Paris-bound train ran sixty minutes late."),
    ("Photosynthesis turns sunlight into chemical energy.", "Plants convert light into stored energy."),
    ("The children built a sandcastle at the beach.", "Kids made a castle out of sand by the sea."),
    ("This novel is set in nineteenth-century Russia.", "The book takes place in Russia in the 1800s."),
    ("The dog barked at the mail carrier.", "The postman was barked at by the dog."),
    ("Water boils at one hundred degrees Celsius.", "At 100 °C water starts to boil."),
    ("The band released a new album last week.", "Last week the group put out their latest record."),
    ("He sprained his ankle while hiking.", "He twisted his ankle on a mountain walk."),
    ("The bakery sells fresh bread every morning.", "Each morning the baker offers newly baked loaves."),
    ("Elephants have excellent long-term memory.", "An elephant remembers things for many years."),
    ("The chess champion defended her title.", "The reigning chess queen kept her crown."),
    ("Snow closed the mountain pass overnight.", "The mountain road was blocked by snow during the night."),
    ("The students are preparing for their exams.", "The pupils are studying for upcoming tests."),
    (
        "A new species of frog was discovered in the rainforest.",
        "Scientists found a previously unknown frog in the jungle.",
    ),
    ("The painter used bright colours for the sunset.", "The artist painted the sunset in vivid hues."),
    ("The ship sailed across the Atlantic in ten days.", "The vessel crossed the Atlantic Ocean in a week and a half."),
    ("My phone battery dies quickly in the cold.", "Cold weather drains my mobile's battery fast."),
    ("The festival attracts thousands of visitors each summer.", "Every summer the fair draws huge crowds."),
    ("He is learning to speak Japanese.", "He is studying the Japanese language."),
    ("The bridge was built in the fourteenth century.", "The bridge dates from the 1300s."),
    ("The soup needs a little more salt.", "Add a pinch of salt to the soup."),
    ("Bees pollinate many of the crops we eat.", "Much of our food depends on pollination by bees."),
    ("The referee showed him a red card.", "He was sent off by the referee."),
    ("The lake freezes solid every winter.", "Each winter the lake turns to ice."),
    ("She painted the fence white.", "The fence was painted white by her."),
    ("The old castle is said to be haunted.", "People claim ghosts live in the ancient fortress."),
]


def forgetting_figures(embed: Callable[[list[str]], np.ndarray], base_vecs: np.ndarray | None = None) -> dict[str, Any]:
    """General skill outside the task: paraphrase retrieval accuracy on GENERAL_PAIRS and,
    given the original model's vectors, top-5 neighbourhood agreement with it."""
    texts = [s for pair in GENERAL_PAIRS for s in pair]
    vecs = embed(texts)
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -np.inf)
    nn = sims.argmax(axis=1)
    partner = np.arange(len(texts)) ^ 1
    out: dict[str, Any] = {"paraphrase_accuracy": round(float(np.mean(nn == partner)), 4), "n": len(texts)}
    if base_vecs is not None:
        b = base_vecs @ base_vecs.T
        np.fill_diagonal(b, -np.inf)
        k = 5
        mine = np.argsort(-sims, axis=1)[:, :k]
        theirs = np.argsort(-b, axis=1)[:, :k]
        overlap = [len(set(x) & set(y)) / k for x, y in zip(mine, theirs, strict=True)]
        out["neighbour_agreement"] = round(float(np.mean(overlap)), 4)
    return out


def general_vectors(embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """The GENERAL_PAIRS sentences embedded (the reference for neighbour agreement)."""
    return embed([s for pair in GENERAL_PAIRS for s in pair])
