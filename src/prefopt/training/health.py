"""Health checks: rules over a run's logged metrics that name the common DPO failures.

Every rule reads the history of logged steps (the dicts the Trainer logs and
``metrics.jsonl`` keeps) and says, at most once per run, that a failure it knows holds:

=========================  ================================================================
rule                       fires when
=========================  ================================================================
likelihood-displacement    chosen log-probs fall ``displacement_nats_per_token`` below the
                           reference (per token) while the reward margin rises, on the training
                           or the eval pairs (Razin et al. 2024,
                           https://arxiv.org/abs/2410.08847)
accuracy-pinned            reward accuracy is 1.0 at ``accuracy_pinned_logs`` logged steps in
                           a row, starting in the first half of the run, with margins growing
flat-loss                  after ``flat_loss_steps`` steps neither the loss (from its first
                           value) nor the reward margin (from 0) moved ``flat_loss_tolerance``
length-exploitation        the per-pair reward margin correlates with the chosen-minus-rejected
                           length (``rewards/length_correlation``) at ``length_correlation`` or
                           more, at two logged steps in a row
beta-clamped               an adaptive β sits at its clamp (``beta_at_clamp``) for
                           ``beta_clamp_steps`` steps in a row
grad-norm-spike            a gradient norm ``grad_spike_factor`` times the median of the earlier
                           ones (at least 5 of them)
train-eval-gap             at an evaluation, the mean train reward accuracy since the previous
                           one is ``eval_accuracy_gap`` above the eval accuracy
=========================  ================================================================

The rules are plain Python on dicts (no torch): :class:`HealthMonitor` feeds them one logged
step at a time; :class:`prefopt.training.health_watch.HealthWatch` connects it to a run.
Thresholds come from the ``health:`` config section (:class:`prefopt.config.HealthConfig`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prefopt.config import HealthConfig

LN2 = math.log(2)
#: The share of pairs right at which accuracy counts as pinned at 1.0 (the logged value is a
#: mean over the logging window, so a float close to 1).
PINNED = 0.999
#: Gradient norms seen before a spike can be judged against their median.
SPIKE_HISTORY = 5
#: ``beta_at_clamp`` at or above this over a logging window: β sat at its clamp all along.
CLAMPED = 0.99


@dataclass(frozen=True)
class Finding:
    """One health finding: which rule, at which optimizer step, what was seen, what to do."""

    rule: str
    step: int
    message: str
    advice: str

    def event(self) -> dict[str, Any]:
        """The ``metrics.jsonl`` line of the finding."""
        return {"step": self.step, "event": "health", **asdict(self)}

    @classmethod
    def from_event(cls, record: dict[str, Any]) -> Finding:
        return cls(str(record["rule"]), int(record["step"]), record["message"], record["advice"])

    def line(self) -> str:
        """``step 24: likelihood displacement: ...; advice``, for consoles."""
        return f"step {self.step}: {self.rule}: {self.message}. {self.advice}"


@dataclass
class History:
    """The logged steps so far, training and evaluation apart, and the run's length."""

    train: list[dict[str, Any]]
    evaluation: list[dict[str, Any]]
    max_steps: int

    def values(self, key: str, split: str = "train") -> list[tuple[int, float]]:
        """``(step, value)`` of every training (or ``split="eval"``: evaluation) log that has a
        finite ``key``."""
        found = []
        for log in self.train if split == "train" else self.evaluation:
            value = log.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                found.append((int(log["step"]), float(value)))
        return found


Rule = Callable[[History, HealthConfig], "Finding | None"]


# -- the rules -------------------------------------------------------------------------------
def likelihood_displacement(history: History, config: HealthConfig) -> Finding | None:
    """On the training pairs, or on the eval pairs (where it shows on answers never trained
    on, as in the measured case of arXiv 2410.08847's kind)."""
    for prefix, where in (("", ""), ("eval_", " on the eval data")):
        split = "eval" if prefix else "train"
        shifts = history.values(f"{prefix}logps/chosen_shift_per_token", split)
        margins = history.values(f"{prefix}rewards/margins", split)
        if not shifts or not margins or (len(margins) < 2 and not prefix):
            continue
        step, shift = shifts[-1]
        # An evaluation alone (the closing one) is measured against step 0, where the policy
        # is the reference and every margin 0.
        first_margin = margins[0][1] if len(margins) > 1 else 0.0
        margin = margins[-1][1]
        if shift > -config.displacement_nats_per_token or margin <= max(first_margin, 0.0):
            continue
        if prefix and history.train and int(history.train[-1]["step"]) > step:
            continue  # judged when the evaluation is logged
        chosen = _last(history, f"{prefix}logps/chosen", split)
        reference = _last(history, f"{prefix}logps/ref_chosen", split)
        sums = (
            f" (a chosen answer: {chosen:.1f} nats on average, {reference:.1f} under the reference)"
            if chosen is not None and reference is not None
            else ""
        )
        return Finding(
            "likelihood-displacement",
            step,
            f"chosen log-probs{where} fell {-shift:.2f} nats per token below the reference"
            f"{sums} while the reward margin rose from {first_margin:.3g} to {margin:.3g}: the "
            "model is making the chosen answers less likely too, only the rejected ones faster",
            "Add an NLL term on the chosen answers (--rpo-alpha 1 with dpo or factual), lower "
            "training.learning_rate, or train fewer epochs.",
        )
    return None


def accuracy_pinned(history: History, config: HealthConfig) -> Finding | None:
    accuracies = history.values("rewards/accuracies")
    count = config.accuracy_pinned_logs
    if len(accuracies) < count:
        return None
    streak = accuracies[-count:]
    if any(value < PINNED for _, value in streak):
        return None
    start = _streak_start(accuracies, lambda value: value >= PINNED)
    if history.max_steps > 0 and start > history.max_steps / 2:
        return None  # reached late in the run: what training is for
    margins = dict(history.values("rewards/margins"))
    first, last = margins.get(streak[0][0]), margins.get(streak[-1][0])
    if first is None or last is None or last <= first:
        return None
    return Finding(
        "accuracy-pinned",
        streak[-1][0],
        f"reward accuracy has been 1.0 since step {start} of {history.max_steps} while the "
        f"margin keeps growing ({first:.3g} to {last:.3g}): every pair is already told apart",
        "The pairs may be too easy (check `prefopt data doctor` for length bias) or the "
        "learning rate too high: lower training.learning_rate or train fewer steps.",
    )


def flat_loss(history: History, config: HealthConfig) -> Finding | None:
    """A preference loss only (it needs the reward margins: an SFT loss is not judged), over
    two logged steps at least (one value has not "stayed" anywhere yet)."""
    losses = history.values("loss")
    margins = history.values("rewards/margins")
    if len(losses) < 2 or not margins or losses[-1][0] < config.flat_loss_steps:
        return None
    first = losses[0][1]
    if any(abs(value - first) > config.flat_loss_tolerance for _, value in losses):
        return None
    if any(abs(value) > config.flat_loss_tolerance for _, value in margins):
        return None
    at = f"ln 2 = {LN2:.4f}" if abs(first - LN2) <= config.flat_loss_tolerance else f"{first:.4f}"
    return Finding(
        "flat-loss",
        losses[-1][0],
        f"the loss has stayed at {at} for {losses[-1][0]} steps and the reward margin is still "
        "about 0: nothing is training",
        "Check training.learning_rate (too low?), that the adapter's target_modules exist "
        "in the model, and that the algorithm does not filter out every pair.",
    )


def length_exploitation(history: History, config: HealthConfig) -> Finding | None:
    correlations = history.values("rewards/length_correlation")
    if len(correlations) < 2:
        return None
    if any(value < config.length_correlation for _, value in correlations[-2:]):
        return None
    margin = _last(history, "rewards/margins")
    if margin is None or margin <= 0:
        return None
    step, value = correlations[-1]
    return Finding(
        "length-exploitation",
        step,
        f"the reward margin tracks the length difference of chosen and rejected "
        f"(correlation {value:.2f} over recent pairs): the model may be learning that longer "
        "is better",
        "Check `prefopt data doctor` for length bias; balance the data, or train with a "
        "length-normalised loss from the prefopt-losses pack (simpo, ipo).",
    )


def beta_clamped(history: History, config: HealthConfig) -> Finding | None:
    clamped = history.values("beta_at_clamp")
    if not clamped or clamped[-1][1] < CLAMPED:
        return None
    index = len(clamped) - 1
    while index > 0 and clamped[index - 1][1] >= CLAMPED:
        index -= 1
    since = clamped[index - 1][0] if index > 0 else 0  # the streak covers the steps after it
    step = clamped[-1][0]
    if step - since < config.beta_clamp_steps:
        return None
    beta = _last(history, "beta")
    value = f" (β = {beta:.3g})" if beta is not None else ""
    return Finding(
        "beta-clamped",
        step,
        f"the adaptive β has sat at its clamp{value} for the {step - since} steps up to step "
        f"{step}: it no longer adapts to the data",
        "Widen the clamp (algorithm beta_min / beta_max), lower its adaptation rate "
        "(algorithm alpha), or start from a β closer to where it settles.",
    )


def grad_norm_spike(history: History, config: HealthConfig) -> Finding | None:
    norms = history.values("grad_norm")
    if len(norms) <= SPIKE_HISTORY:
        return None
    step, norm = norms[-1]
    median = statistics.median(value for _, value in norms[:-1])
    if median <= 0 or norm < config.grad_spike_factor * median:
        return None
    return Finding(
        "grad-norm-spike",
        step,
        f"the gradient norm jumped to {norm:.3g}, {norm / median:.0f} times the median of the "
        f"earlier steps ({median:.3g})",
        "Lower training.learning_rate, keep training.max_grad_norm clipping on (default 1.0), "
        "or look for an unusual batch (very long or broken pairs) near this step.",
    )


def train_eval_gap(history: History, config: HealthConfig) -> Finding | None:
    if not history.evaluation:
        return None
    latest = history.evaluation[-1]
    step = int(latest["step"])
    if history.train and int(history.train[-1]["step"]) > step:
        return None  # judged when the evaluation is logged, not at later training steps
    evaluated = latest.get("eval_rewards/accuracies")
    earlier = int(history.evaluation[-2]["step"]) if len(history.evaluation) > 1 else 0
    accuracies = history.values("rewards/accuracies")
    window = [value for at, value in accuracies if earlier < at <= step]
    window = window or [value for at, value in accuracies if at <= step][-1:]
    if not isinstance(evaluated, (int, float)) or not window:
        return None
    trained = statistics.fmean(window)
    if trained - evaluated < config.eval_accuracy_gap:
        return None
    return Finding(
        "train-eval-gap",
        step,
        f"train reward accuracy {trained:.2f} (the steps before this evaluation) against "
        f"{evaluated:.2f} on the eval data: the model fits the training pairs without "
        "generalising",
        "Train fewer epochs or with a lower learning rate, add data, and check the train and "
        "eval files for duplicates and shared prompts (`prefopt data doctor --eval`).",
    )


RULES: dict[str, Rule] = {
    "likelihood-displacement": likelihood_displacement,
    "accuracy-pinned": accuracy_pinned,
    "flat-loss": flat_loss,
    "length-exploitation": length_exploitation,
    "beta-clamped": beta_clamped,
    "grad-norm-spike": grad_norm_spike,
    "train-eval-gap": train_eval_gap,
}


# -- the monitor -----------------------------------------------------------------------------
class HealthMonitor:
    """Feeds logged steps to every rule; each rule's first finding is kept, later ones are not
    (a finding is news once)."""

    def __init__(self, config: HealthConfig, max_steps: int = 0) -> None:
        self.config = config
        self.history = History([], [], max_steps)
        self.findings: list[Finding] = []

    def observe(self, step: int, logs: dict[str, Any]) -> list[Finding]:
        """Add one logged step; the findings that hold for the first time now."""
        record = {"step": step, **logs}
        if any(key.startswith("eval_") for key in logs):
            self.history.evaluation.append(record)
        elif "loss" in logs:
            self.history.train.append(record)
        else:
            return []
        if not self.config.enabled:
            return []
        fired = {finding.rule for finding in self.findings}
        new = []
        for name, rule in RULES.items():
            if name not in fired:
                finding = rule(self.history, self.config)
                if finding is not None:
                    new.append(finding)
        self.findings.extend(new)
        return new

    def replay(self, records: Sequence[dict[str, Any]]) -> None:
        """Restore the state of a resumed run from its ``metrics.jsonl`` lines: the logged
        steps become history (no rule fires on them again) and earlier findings stay found."""
        for record in records:
            if record.get("event") == "health":
                self.findings.append(Finding.from_event(record))
            elif "step" in record and "event" not in record:
                logs = {key: value for key, value in record.items() if key != "step"}
                target = (
                    self.history.evaluation
                    if any(key.startswith("eval_") for key in logs)
                    else self.history.train
                )
                if "loss" in logs or target is self.history.evaluation:
                    target.append(record)


def length_correlation(margins: Sequence[float], length_gaps: Sequence[float]) -> float | None:
    """Pearson correlation of per-pair reward margins with chosen-minus-rejected lengths, or
    ``None`` when either does not vary (e.g. every margin 0 at the first step)."""
    if len(margins) < 2 or len(margins) != len(length_gaps):
        return None
    mean_m, mean_g = statistics.fmean(margins), statistics.fmean(length_gaps)
    dm = [value - mean_m for value in margins]
    dg = [value - mean_g for value in length_gaps]
    spread = math.sqrt(sum(d * d for d in dm) * sum(d * d for d in dg))
    if spread <= 1e-12 * max(1.0, len(margins)):
        return None
    return sum(a * b for a, b in zip(dm, dg, strict=True)) / spread


def _last(history: History, key: str, split: str = "train") -> float | None:
    values = history.values(key, split)
    return values[-1][1] if values else None


def _streak_start(values: list[tuple[int, float]], holds: Callable[[float], bool]) -> int:
    """The step of the first log of the streak of logs, ending at the last, where ``holds``."""
    index = len(values) - 1
    while index > 0 and holds(values[index - 1][1]):
        index -= 1
    return values[index][0]
