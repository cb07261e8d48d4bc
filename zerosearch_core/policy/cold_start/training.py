"""Cold-start training: causal-LM pre-training on packed blocks (drills and lessons interleaved), then SFT on protocol
trajectories, with the reading bars that end each phase (:func:`run_cold_start`).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zerosearch_core.config import ColdStartConfig
from zerosearch_core.policy.cold_start.drills import Drill, answer_drill_sequences, pretrain_sequences
from zerosearch_core.policy.cold_start.reading import drill_accuracy_by_form
from zerosearch_core.policy.cold_start.report import by_form_text
from zerosearch_core.policy.cold_start.sft_data import SFTExample

logger = logging.getLogger(__name__)


StepCallback = Callable[[str, int, float], None]
"""Called with (phase, step, loss) after every optimizer step."""


StopCheck = Callable[[int], bool]
"""Called with the step number after each training step; True ends training there."""


def train_causal_lm(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    masks: Sequence[Sequence[int]] | None,
    steps: int,
    batch_size: int,
    learning_rate: float,
    pad_id: int,
    seed: int,
    phase: str,
    on_step: StepCallback | None = None,
    schedule: str = "cosine",
    stop: StopCheck | None = None,
    interleaved: Interleaved | None = None,
) -> list[float]:
    """Train ``model`` for ``steps`` AdamW steps on batches drawn (seeded, without replacement per epoch) from
    ``sequences``; the loss covers positions whose mask is 1 (every token when ``masks`` is None). The learning
    rate decays to 0 along a cosine (``schedule="cosine"``) or stays at ``learning_rate`` (``"constant"``).
    ``stop``, called with the step number after every step, ends training early when it returns True (the steps
    before are those of a run without it). With ``interleaved``, every ``interleaved.every``-th step draws its
    batch from ``interleaved``'s sequences instead (a pool of its own, so batches of short and long texts are
    never padded to one width).

    Returns:
        The loss of every step.
    """
    if not sequences:
        raise ValueError(f"{phase}: no training sequences; check the cold_start settings and the data.")
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"{phase}: unknown learning-rate schedule {schedule!r}; use 'cosine' or 'constant'.")

    def factor(step: int) -> float:
        return 1.0 if schedule == "constant" else 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / max(steps, 1)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    pools: list[tuple[Sequence[Sequence[int]], Sequence[Sequence[int]] | None]] = [(sequences, masks)]
    if interleaved is not None:
        pools.append((interleaved.sequences, interleaved.masks))
    orders: list[list[int]] = [[] for _ in pools]
    losses: list[float] = []
    model.train()
    for step in range(1, steps + 1):
        pool = 1 if interleaved is not None and step % interleaved.every == 0 else 0
        (texts, text_masks), order = pools[pool], orders[pool]
        if len(order) < batch_size:
            fresh = list(range(len(texts)))
            rng.shuffle(fresh)
            order.extend(fresh)
        picked, orders[pool] = order[:batch_size], order[batch_size:]
        input_ids, _, labels = _collate(
            [texts[i] for i in picked], None if text_masks is None else [text_masks[i] for i in picked], pad_id
        )
        # Right padding under a causal mask: no real token sees a pad, so no attention mask is needed, and without
        # one the attention takes its fast causal path (about a fifth faster on the CPU for SFT batches).
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(phase, step, losses[-1])
        if stop is not None:
            model.eval()
            stopping = stop(step)
            model.train()
            if stopping:
                break
    model.eval()
    return losses


@dataclass(frozen=True)
class Interleaved:
    """A second pool of training sequences, one batch of which replaces every ``every``-th step's
    (:func:`train_causal_lm`)."""

    sequences: Sequence[Sequence[int]]
    masks: Sequence[Sequence[int]]
    every: int


def _collate(
    sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[int]] | None, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels (-100 where padded or masked out)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    labels = torch.full((len(sequences), width), -100, dtype=torch.long)
    for row, ids in enumerate(sequences):
        ids_t = torch.tensor(list(ids), dtype=torch.long)
        input_ids[row, : len(ids)] = ids_t
        attention[row, : len(ids)] = 1
        keep = torch.ones(len(ids), dtype=torch.bool) if masks is None else torch.tensor(list(masks[row])) == 1
        labels[row, : len(ids)] = torch.where(keep, ids_t, torch.full_like(ids_t, -100))
    return input_ids, attention, labels


def run_cold_start(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: ColdStartConfig,
    corpus_texts: Sequence[str],
    sft_examples: Sequence[SFTExample],
    seed: int,
    on_step: StepCallback | None = None,
    extra_texts: Sequence[str] = (),
    heldout_drills: Sequence[Drill] = (),
    on_reading: Callable[[str, int, float], None] | None = None,
    answer_drills: Sequence[Drill] = (),
    sft_reading: Callable[[], float] | None = None,
    pretrain_lessons: Sequence[SFTExample] = (),
    pretrain_lesson_reading: Callable[[], float] | None = None,
) -> dict[str, list[float]]:
    """Pre-train on ``corpus_texts`` mixed with ``extra_texts`` (if ``cfg.pretrain_steps``; see
    :func:`pretrain_sequences`) and then SFT on ``sft_examples`` (if any).

    With ``cfg.pretrain_reading_bar`` set, pre-training runs from ``pretrain_steps`` on until the accuracy on
    ``heldout_drills`` (checked every ``pretrain_check_every`` steps, each check passed to ``on_reading``) reaches
    the bar, or until ``pretrain_max_steps``. With ``answer_drills`` (``pretrain_texts_loss: answer``), those drills
    replace ``extra_texts`` in the mix and only their answers are learned (:func:`answer_drill_sequences`).
    With ``cfg.pretrain_lesson_every`` set, every that many pre-training steps trains on a batch of
    ``pretrain_lessons`` (protocol trajectories) instead, and the bar also holds for ``pretrain_lesson_reading``
    (the least-read form of held-out lessons, made to search): a check scores the lower of the two. In the
    same way, with ``cfg.sft_reading_bar`` set and ``sft_reading`` given (EM on held-out reading lessons made to
    search, :func:`reading_accuracy`), SFT runs from ``sft_steps`` on, checked at each multiple of ``sft_check_every``,
    until that EM reaches the bar or ``sft_max_steps`` (its cosine schedule then spans ``sft_max_steps``). If SFT
    ends below the bar, the whole cold start starts again from the weights ``model`` came with, pre-training and
    SFT with the next seeds (``seed + 2k`` and ``seed + 2k + 1`` for attempt ``k``), up to ``cfg.sft_restarts``
    times, and the attempt whose last SFT check read best is kept (the first to pass the bar ends the search). The
    steps and checks of a restart reach ``on_step`` and ``on_reading`` shifted by each phase's steps per earlier
    attempt (its max steps with a bar, else its steps).

    Returns:
        Loss curves keyed ``pretrain`` and ``sft`` (empty when a phase is off); ``reading``: the accuracy of every
        pre-training check, made at the steps ``reading_step``; ``sft_reading`` and ``sft_reading_step``: the
        same for the SFT checks (steps counted within their attempt); ``reading_attempt`` and ``sft_attempt``:
        the attempt of each check (0 first); ``sft_kept``: the attempt kept; ``sft_final_reading``: the kept
        attempt's last check, when it was made after its last step (it then measured the returned weights),
        else empty. ``pretrain`` and ``sft`` hold the kept attempt's losses.
    """
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    curves: dict[str, list[float]] = {
        "pretrain": [],
        "sft": [],
        "reading": [],
        "reading_step": [],
        "sft_reading": [],
        "sft_reading_step": [],
        "reading_attempt": [],
        "sft_attempt": [],
        "sft_kept": [],
        "sft_final_reading": [],
    }
    offsets = {"pretrain": 0, "sft": 0}  # each phase's steps in earlier attempts: restarts log on one rising axis

    def shifted_step(phase: str, step: int, loss: float) -> None:
        if on_step is not None:
            on_step(phase, step + offsets[phase], loss)

    def gate(phase: str, key: str, first: int, every: int, bar: float, check: Callable[[], float]) -> StopCheck:
        def stop(step: int) -> bool:
            if step < first or step % every:
                return False
            accuracy = check()
            curves[key].append(accuracy)
            curves[f"{key}_step"].append(float(step))
            if on_reading is not None:
                on_reading(phase, step + offsets[phase], accuracy)
            return accuracy >= bar

        return stop

    pretrain_stop = None
    if cfg.pretrain_reading_bar > 0 and heldout_drills:
        pretrain_stop = gate(
            "pretrain",
            "reading",
            cfg.pretrain_steps,
            cfg.pretrain_check_every,
            cfg.pretrain_reading_bar,
            lambda: _least_read(model, tokenizer, heldout_drills, pretrain_lesson_reading),
        )
    sft_stop = None
    if cfg.sft_reading_bar > 0 and sft_reading is not None:
        sft_stop = gate("sft", "sft_reading", cfg.sft_steps, cfg.sft_check_every, cfg.sft_reading_bar, sft_reading)
    masks: list[list[int]] | None = None
    blocks: list[list[int]] = []
    if cfg.pretrain_steps:
        if answer_drills:
            blocks, masks = answer_drill_sequences(corpus_texts, answer_drills, tokenizer, cfg.pretrain_corpus_repeat)
        else:
            blocks = pretrain_sequences(corpus_texts, extra_texts, tokenizer, cfg.pretrain_corpus_repeat)
    interleaved = None
    if cfg.pretrain_lesson_every and pretrain_lessons:
        interleaved = Interleaved(
            [e.input_ids for e in pretrain_lessons], [e.loss_mask for e in pretrain_lessons], cfg.pretrain_lesson_every
        )
    sft_sequences = [e.input_ids for e in sft_examples]
    sft_masks = [e.loss_mask for e in sft_examples]
    sft = bool(sft_examples) and cfg.sft_steps > 0
    restarts = cfg.sft_restarts if sft and sft_stop is not None else 0
    initial = _copy_state(model) if restarts else None
    pretrain_length = cfg.pretrain_max_steps if pretrain_stop else cfg.pretrain_steps
    sft_length = cfg.sft_max_steps if sft_stop else cfg.sft_steps
    kept: tuple[float, int, list[float], list[float], dict[str, torch.Tensor] | None] | None = None
    for attempt in range(restarts + 1):
        if attempt:  # a fresh draw of the whole cold start: the initial weights, the next seeds
            assert initial is not None
            model.load_state_dict(initial)
        offsets.update(pretrain=attempt * pretrain_length, sft=attempt * sft_length)
        pretrain_losses: list[float] = []
        if cfg.pretrain_steps:
            checks_before = len(curves["reading"])
            pretrain_losses = train_causal_lm(
                model,
                blocks,
                masks,
                pretrain_length,
                cfg.pretrain_batch_size,
                cfg.pretrain_learning_rate,
                pad_id,
                seed + 2 * attempt,
                "pretrain",
                shifted_step,
                cfg.pretrain_schedule,
                pretrain_stop,
                interleaved,
            )
            curves["reading_attempt"].extend([float(attempt)] * (len(curves["reading"]) - checks_before))
        if not sft:
            curves["pretrain"] = pretrain_losses
            break
        checks_before = len(curves["sft_reading"])
        sft_losses = train_causal_lm(
            model,
            sft_sequences,
            sft_masks,
            sft_length,
            cfg.sft_batch_size,
            cfg.sft_learning_rate,
            pad_id,
            seed + 2 * attempt + 1,
            "sft",
            shifted_step,
            stop=sft_stop,
        )
        checks = curves["sft_reading"][checks_before:]
        curves["sft_attempt"].extend([float(attempt)] * len(checks))
        last = checks[-1] if checks else -1.0
        if kept is None or last > kept[0]:
            kept = (last, attempt, pretrain_losses, sft_losses, _copy_state(model) if restarts else None)
        if sft_stop is None or last >= cfg.sft_reading_bar:
            break
    if kept is not None:
        last, attempt, curves["pretrain"], curves["sft"], state = kept
        if state is not None:
            model.load_state_dict(state)
        curves["sft_kept"] = [float(attempt)]
        steps = [s for s, a in zip(curves["sft_reading_step"], curves["sft_attempt"], strict=True) if a == attempt]
        if steps and steps[-1] == len(curves["sft"]):
            curves["sft_final_reading"] = [last]  # the kept attempt's last check measured these very weights
    return curves


def _least_read(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    drills: Sequence[Drill],
    lesson_reading: Callable[[], float] | None,
) -> float:
    """The pre-training check: the held-out drills' least-read form, or the held-out lessons' least-read form
    (``lesson_reading``) when that is lower."""
    by_form = drill_accuracy_by_form(model, tokenizer, drills)
    logger.info("Held-out drills read, by form: %s", by_form_text(by_form))
    least = min(by_form.values())
    return least if lesson_reading is None else min(least, lesson_reading())


def _copy_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s weights (a tiny model's: a few MB)."""
    return {key: value.detach().clone() for key, value in model.state_dict().items()}
