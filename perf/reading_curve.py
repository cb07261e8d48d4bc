"""Benchmark: when does the tiny toy model learn to read? Held-out reading accuracy along the cold start's
pre-training.

Rebuilds the toy profile's pre-training in memory, as ``init_policy`` does it: the tiny model of ``model``, the
world's passages repeated ``cold_start.pretrain_corpus_repeat`` times mixed with ``world.reading_drills`` reading
drills, batch ``pretrain_batch_size``, rate ``pretrain_learning_rate`` held constant. Every ``--every`` steps it
prints the greedy accuracy on held-out drills (people in no training drill). Chance is about 1/10 (8-12 values per
attribute). Nothing is written and no pipeline output is needed::

    .venv/bin/python perf/reading_curve.py [--params toy/params.yaml] [--steps 5000] [--every 500]

What was measured is in docs/toy-world.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zerosearch_core.config import load_config  # noqa: E402
from zerosearch_core.data.toyworld import generate_world, reading_drills  # noqa: E402
from zerosearch_core.models.build import build_tiny_policy
from zerosearch_core.policy.cold_start.drills import pretrain_sequences
from zerosearch_core.policy.cold_start.recipe import tokenizer_texts
from zerosearch_core.policy.cold_start.training import train_causal_lm

ANSWER_MARK = " Answer:"


def accuracy(model: torch.nn.Module, tokenizer, drills) -> float:  # type: ignore[no-untyped-def]
    """Share of drills whose greedy continuation after "Answer:" starts with the answer word."""
    correct = 0
    for drill in drills:
        prefix = drill.text.rsplit(ANSWER_MARK, 1)[0] + ANSWER_MARK
        ids = tokenizer(prefix, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        words = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split()
        correct += bool(words) and words[0] == drill.answer
    return correct / len(drills)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("toy/params.yaml"))
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--heldout", type=int, default=100)
    args = parser.parse_args()
    cfg = load_config(args.params)
    if cfg.world is None or not cfg.world.reading_drills:
        raise SystemExit(f"{args.params} has no world with reading_drills; use toy/params.yaml.")
    world = generate_world(cfg.world)
    count = cfg.world.reading_drills
    drills = reading_drills(count + args.heldout, world.entities, cfg.world.seed)
    train, heldout = drills[:count], drills[count:]
    corpus = [f"{passage.title}\n{passage.text}" for passage in world.passages]
    texts = [d.text for d in train]
    model, tokenizer = build_tiny_policy(cfg.model, tokenizer_texts(corpus, [], texts), seed=1)
    sequences = pretrain_sequences(corpus, texts, tokenizer, cfg.cold_start.pretrain_corpus_repeat)
    pad_id = int(tokenizer.pad_token_id)
    cold = cfg.cold_start
    print(
        f"{len(train)} drills + {len(corpus)} passages x{cold.pretrain_corpus_repeat}, {len(heldout)} held out; "
        f"model {cfg.model.num_layers}x{cfg.model.hidden_size}; batch {cold.pretrain_batch_size}, "
        f"lr {cold.pretrain_learning_rate} constant"
    )
    print("step  heldout_acc  loss   seconds")
    print(f"{0:>5}  {accuracy(model, tokenizer, heldout):>11.2f}")
    for start in range(0, args.steps, args.every):
        began = time.perf_counter()
        losses = train_causal_lm(
            model,
            sequences,
            None,
            args.every,
            cold.pretrain_batch_size,
            cold.pretrain_learning_rate,
            pad_id,
            seed=start,
            phase="pretrain",
            schedule="constant",
        )
        seconds = time.perf_counter() - began
        acc = accuracy(model, tokenizer, heldout)
        print(f"{start + args.every:>5}  {acc:>11.2f}  {sum(losses[-20:]) / 20:.3f}  {seconds:>7.0f}", flush=True)


if __name__ == "__main__":
    main()
