"""Does a policy copy the bridge person out of the first passage into its second query, or recall a pairing?

Teacher-forced through the first search: for each two-hop question, the prompt, the search of the question itself and
the block real search returns are given, and the greedy continuation is read. It prints how often the continuation
searches again, searches exactly the bridge query of the question's decomposition, and names the bridge person:

    .venv/bin/python scripts/bridge_copy.py --params toy/params.yaml --model toy/data/models/policy_init --on test
    .venv/bin/python scripts/bridge_copy.py --params toy/params.yaml --model toy/data/models/policy_init --on lessons

``--on test`` uses the world's two-hop test questions and corpus; ``--on lessons`` the reading world's two-hop
questions that the cold start did not train on (their people do appear in other lessons, so a policy that recalls
pairings scores there and not on the test world). ``--json`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zerosearch_core.agent.prompts import build_prompt_ids  # noqa: E402
from zerosearch_core.config import load_config  # noqa: E402
from zerosearch_core.data.corpus import load_corpus  # noqa: E402
from zerosearch_core.models.build import load_causal_lm, load_tokenizer  # noqa: E402
from zerosearch_core.policy.cold_start.drills import read_reading_lessons  # noqa: E402
from zerosearch_core.policy.cold_start.reading import greedy_continuations  # noqa: E402
from zerosearch_core.policy.cold_start.sft_data import search_calls  # noqa: E402
from zerosearch_core.search.local import BM25Retriever, LocalSearchEngine  # noqa: E402
from zerosearch_core.seeding import derive_seed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("toy/params.yaml"))
    parser.add_argument("--model", type=Path, required=True, help="a policy folder, e.g. toy/data/models/policy_init")
    parser.add_argument("--on", choices=["test", "lessons"], default="test")
    parser.add_argument("--limit", type=int, default=200, help="questions at most")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cfg = load_config(args.params)
    assert cfg.world is not None, "a toy-world profile is needed (world: section)"
    world = Path(cfg.world.output_dir)
    cold = cfg.cold_start
    if args.on == "test":
        questions = [json.loads(line) for line in (world / "test_2hop.jsonl").read_text().splitlines()]
        passages = load_corpus(str(world / "corpus.jsonl"))
    else:
        lessons = read_reading_lessons(
            Path(str(cold.reading_corpus)), Path(str(cold.reading_questions)), cold.reading_examples,
            cold.reading_heldout, derive_seed(cfg.seed, "reading_lessons"),
        )  # fmt: skip
        trained = set(lessons.train["id"])
        every = [json.loads(line) for line in Path(str(cold.reading_questions)).read_text().splitlines()]
        questions = [q for q in every if len(q.get("decomposition", [])) > 1 and q["id"] not in trained]
        passages = lessons.passages
    questions = questions[: args.limit]
    tokenizer, model = load_tokenizer(args.model), load_causal_lm(args.model).eval()
    engine = LocalSearchEngine(BM25Retriever.build(passages), {})
    calls = search_calls(
        tokenizer, engine, cfg.rollout, cfg.search.top_k, [(q["question"], q["answer"]) for q in questions]
    )
    contexts = [
        build_prompt_ids(tokenizer, q["question"], "search", cfg.rollout.use_chat_template) + search + block
        for q, (search, block) in zip(questions, calls, strict=True)
    ]
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    texts = []
    for start in range(0, len(contexts), 32):
        texts += [tokenizer.decode(ids) for ids in greedy_continuations(model, contexts[start : start + 32], pad, 40)]
    again = exact = named = 0
    for question, text in zip(questions, texts, strict=True):
        bridge_query = question["decomposition"][1]
        bridge = [w for w in bridge_query.rstrip("?").split() if w[0].isupper() and w not in question["question"]]
        again += text.lstrip().startswith("<search>")
        exact += f"<search> {bridge_query} </search>" in text
        named += bool(bridge) and all(word in text.split("</search>")[0] for word in bridge)
    n = len(questions)
    figures = {"questions": n, "searches_again": again / n, "exact_bridge_query": exact / n, "names_bridge": named / n}
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"{args.model} on {args.on} ({n} two-hop questions), teacher-forced through the first search:")
        rates = f"searches again {again / n:.0%}, the exact bridge query {exact / n:.0%}"
        print(f"  {rates}, names the bridge {named / n:.0%}")
        for question, text in list(zip(questions, texts, strict=True))[:3]:
            print(f"  {question['decomposition'][1]!r} -> {text.split('</search>')[0].strip()!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
