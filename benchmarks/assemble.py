"""Assemble benchmarks/RESULTS.md and benchmarks/RELIABILITY.md from benchmarks/results/*.md.

Each benchmark script writes its own table; this only puts them under headings.

    python benchmarks/assemble.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

SECTIONS = [
    ("spine", "Banking77 end to end (the spine)", "benchmarks/spine.py"),
    ("encoder", "Encoder speed and fidelity", "benchmarks/encoder.py"),
    ("service", "Service latency at 100k", "benchmarks/service.py"),
    (
        "service-10k",
        "Service overhead on Banking77 as is (issue #21)",
        "benchmarks/service.py --n 10003 --tune --no-baseline --concurrency 16 --name service-10k",
    ),
    ("scale", "Embedded store at scale", "benchmarks/scale.py"),
    ("scale-1m-m32", "Embedded store at 1M: tuned HNSW (the defaults)", "benchmarks/scale.py --sizes 1000000"),
    ("scale-1m-ef", "Embedded store at 1M: the earlier HNSW settings (m 16), for comparison", "benchmarks/scale.py"),
    (
        "scale-ef",
        "Search ef scaled to the collection size (issue #21)",
        "benchmarks/scale.py --sizes 10000 100000 300000 --ef auto 64 128 512 --name scale-ef",
    ),
    ("swap", "A served store swapping in an index built out of process", "benchmarks/swap.py"),
    ("reports", "Reports and label quality", "benchmarks/reports.py"),
    (
        "openset",
        "Trustworthy decisions: calibration, unknown tickets, operating points",
        "benchmarks/openset.py --tuned, then --tuned-only --tuned-strategy contrastive --tuned-lr 5e-5, then --latency",
    ),
    (
        "openset-frontier",
        "Open set: the default objective against the best trade-off (#15)",
        "benchmarks/openset_frontier.py",
    ),
    ("cleaning", "Tickets as e-mails: cleaning and long texts", "benchmarks/cleaning.py"),
    ("finetune", "Warm-start strategies", "benchmarks/finetune.py"),
    (
        "contrastive",
        "Contrastive tuning (issue #19)",
        "benchmarks/finetune.py --compare-losses / --strategies knn,contrastive",
    ),
    (
        "finetune-contrastive-3ep",
        "Contrastive tuning, three full epochs (issue #19): batch-all",
        "benchmarks/finetune.py --strategies knn,contrastive --epochs 3 --contrastive-lr 5e-5 --max-seq-length 64 "
        "--threads 2 --name finetune-contrastive-3ep",
    ),
    (
        "finetune-contrastive-3ep-mnrl",
        "Contrastive tuning, three full epochs (issue #19): MultipleNegativesRankingLoss",
        "benchmarks/finetune.py --strategies knn,contrastive --loss mnrl --epochs 3 --contrastive-lr 5e-5 "
        "--max-seq-length 64 --threads 2 --name finetune-contrastive-3ep-mnrl",
    ),
    (
        "finetune-contrastive-mnrl-lr1e-4",
        "Contrastive tuning, three full epochs (issue #19): MultipleNegativesRankingLoss at lr 1e-4",
        "benchmarks/finetune.py --strategies knn,contrastive --loss mnrl --epochs 3 --contrastive-lr 1e-4 "
        "--max-seq-length 64 --threads 2 --name finetune-contrastive-mnrl-lr1e-4",
    ),
    (
        "finetune-contrastive-mnrl-b128",
        "Contrastive tuning, three full epochs (issue #19): MultipleNegativesRankingLoss, batches of 128",
        "benchmarks/finetune.py --strategies knn,contrastive --loss mnrl --epochs 3 --contrastive-lr 5e-5 "
        "--max-seq-length 64 --threads 2 --batch-size 128 --name finetune-contrastive-mnrl-b128",
    ),
    (
        "finetune-2stage-contrastive",
        "Two stages (issue #19): full tuning, then contrastive tuning on top",
        "benchmarks/finetune.py --strategies full --epochs 4 --max-seq-length 64 --threads 2 --name finetune-2stage-full, "
        "then --strategies knn,contrastive --loss mnrl --epochs 3 --contrastive-lr 5e-5 --base-model RUN/full/encoder-st "
        "--name finetune-2stage-contrastive",
    ),
    (
        "finetune-ensemble",
        "Ensemble rule: a head blended with the kNN vote (issue #19)",
        "benchmarks/finetune.py --strategies knn,transfer,full --name finetune-ensemble",
    ),
    ("tickets", "Tickets as they are: two label sets, metadata filters, ids (issue #16)", "benchmarks/tickets.py"),
    ("reliability", "Reliability (details in RELIABILITY.md)", "benchmarks/reliability.py"),
]

INTRO = """# knnclass benchmark results

Measured on the project's machine: 2 CPU cores (AVX-512 VNNI until 2026-11; an AVX2-only AMD EPYC
for the sections measured on 2026-12-02), 24 GiB, no GPU, shared with other work, so absolute numbers are noisy; every comparison is against a baseline measured
in the same run, and ratios are what to read. Each section names the script that produced
it; re-run it to refresh its table (then `python benchmarks/assemble.py`).
"""


NOTES_FILE = RESULTS / "notes.json"
RELIABILITY_EXTRA = ("backup", "live")  # hand-measured sections appended to RELIABILITY.md


def main() -> None:
    import json

    notes = json.loads(NOTES_FILE.read_text()) if NOTES_FILE.exists() else {}
    parts = [INTRO]
    for name, title, script in SECTIONS:
        f = RESULTS / f"{name}.md"
        if f.exists():
            body = f.read_text().strip()
            if body.startswith("# "):  # a script's own page title: the section heading stands for it
                body = body.split("\n", 1)[1].strip() if "\n" in body else ""
            parts += [f"## {title}", "", f"Script: `{script}`.", "", body, ""]
            if name in notes:
                parts += [f"> {notes[name]}", ""]
    (HERE / "RESULTS.md").write_text("\n".join(parts))
    rel = RESULTS / "reliability.md"
    if rel.exists():
        (HERE / "RELIABILITY.md").write_text(
            "# Reliability and security figures\n\n"
            "What was tried, how many times, and what held. Long variants come from "
            "`benchmarks/reliability.py`; short variants of every scenario run in the default test suite "
            "(`tests/integration/test_reliability.py`, `tests/integration/test_service_real.py`, "
            "`tests/unit/test_service.py`, `tests/unit/test_classifier.py`).\n\n"
            + rel.read_text()
            + "".join(
                "\n" + (RESULTS / f"{name}.md").read_text()
                for name in RELIABILITY_EXTRA
                if (RESULTS / f"{name}.md").exists()
            )
        )


if __name__ == "__main__":
    main()
