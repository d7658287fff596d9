"""Time to event with censoring (``mil.task: survival``): the Cox partial likelihood in torch,
Harrell's and Uno's concordance, and the bag models' training and validation steps.

A bag's output is its log risk. The partial likelihood compares a bag with the bags still at
risk at its time, so one bag per step has nothing to compare with: :func:`cox_epoch` scores
``batch_bags`` bags (0: all training bags) one by one, stacks their risks and takes one step
on the batch's partial likelihood (every batch a fresh random draw of the training bags).
Validation scores every validation bag and takes their partial likelihood as one risk set.
The chosen model's log risk is centred on its training bags (:func:`centre_risk`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index

from histodetect.mil.data import Bag, FeatureSource

TIES = ("breslow", "efron")
"""How tied event times share a risk set in the Cox loss (``mil.ties``)."""


def cox_loss(
    risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor, ties: str = "efron"
) -> torch.Tensor:
    """The negative Cox partial log-likelihood of log risks ``risk`` ``(B,)`` per event; 0
    (with a graph) without an event. Breslow's ties: every bag whose time is not earlier is
    at risk, ``-sum_{i: event} (r_i - log sum_{j: t_j >= t_i} exp r_j) / n_events``. Efron's
    (lifelines' and R's default): the ``d`` events tied at a time leave the risk set in
    turn, the ``l``-th (0-based) taking ``log(sum_R exp r - l/d sum_D exp r)``, ``D`` the
    tied events; without ties both are the same."""
    risk, time, event = risk.reshape(-1), time.reshape(-1).to(risk), event.reshape(-1).to(risk)
    n_events = event.sum()
    if float(n_events) == 0:
        return risk.sum() * 0.0
    if ties not in TIES:
        raise ValueError(f"ties {ties!r}: one of {TIES}")
    at_risk = time[None, :] >= time[:, None]  # row i: the risk set of bag i
    if ties == "breslow":
        log_den = torch.logsumexp(risk[None, :].masked_fill(~at_risk, float("-inf")), dim=1)
        return -((risk - log_den) * event).sum() / n_events
    seen = event > 0
    tied = (time[None, :] == time[:, None]) & seen[None, :] & seen[:, None]
    d = tied.sum(1).clamp(min=1).to(risk)
    order = torch.arange(len(risk), device=risk.device)
    rank = (tied & (order[None, :] < order[:, None])).sum(1).to(risk)  # l: tied events before
    top = risk.max().detach()  # shift for exp's range; the log adds it back
    w = torch.exp(risk - top)
    den = (w[None, :] * at_risk).sum(1) - rank / d * (w[None, :] * tied).sum(1)
    log_den = torch.log(den.clamp(min=torch.finfo(risk.dtype).tiny)) + top
    return -((risk - log_den) * event).sum() / n_events


def harrell_cindex(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance of the risks (higher risk: earlier event; lifelines), NaN
    without a comparable pair."""
    time, event, risk = (np.asarray(a, float) for a in (time, event, risk))
    try:
        return float(concordance_index(time, -risk, event))
    except ZeroDivisionError:
        return float("nan")


def uno_cindex(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, tau: float | None = None
) -> float:
    """Uno's concordance (Uno et al. 2011): Harrell's pairs ``t_i < t_j`` with an event at
    ``t_i < tau`` weighted by ``G(t_i)^-2``, ``G`` the Kaplan-Meier estimate of the censoring
    distribution on the same bags (left limit, as scikit-survival's
    ``concordance_index_ipcw``); tied risks count a half; NaN without a comparable pair."""
    time, event, risk = (np.asarray(a, float) for a in (time, event, risk))
    if len(time) < 2:
        return float("nan")
    km = KaplanMeierFitter().fit(time, 1 - event)
    steps = km.survival_function_.iloc[:, 0]
    left = np.array([steps[steps.index < t].iloc[-1] if (steps.index < t).any() else 1.0
                     for t in time])  # fmt: skip
    tau = np.inf if tau is None else tau
    num = den = 0.0
    for i in np.flatnonzero((event == 1) & (time < tau) & (left > 0)):
        later = time > time[i]
        w = 1.0 / left[i] ** 2
        den += w * later.sum()
        num += w * ((risk[i] > risk[later]).sum() + 0.5 * (risk[i] == risk[later]).sum())
    return float(num / den) if den > 0 else float("nan")


def survival_scores(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> dict[str, float]:
    """``cindex`` (Harrell's) and ``cindex_uno`` of ``risk`` against the outcomes."""
    return {"cindex": harrell_cindex(time, event, risk),
            "cindex_uno": uno_cindex(time, event, risk)}  # fmt: skip


def _risks(model: Any, xs: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.cat([model(x.to(device))[0][:, 0] for x in xs])


def outcome_tensors(bags: list[Bag], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The bags' times and events as tensors."""
    time = torch.tensor([b.target for b in bags], dtype=torch.float32, device=device)
    return time, torch.tensor([float(b.event) for b in bags], device=device)


def cox_epoch(
    state: Any, bags: list[Bag], source: FeatureSource, cfg: Any, rng: np.random.Generator,
    device: torch.device,
) -> float:  # fmt: skip
    """One pass over the training bags in random batches of ``cfg.batch_bags`` (0: all in
    one), one optimiser step per batch on its Cox loss (ties by ``cfg.ties``); returns the
    mean batch loss. A batch of a single bag is joined to the one before (it would have no
    risk set). Neither
    ``class_balance`` nor CLAM-SB's instance clustering (a class's) applies: every model
    learns from the Cox loss alone."""
    model = state.model.train()
    order = [bags[int(i)] for i in rng.permutation(len(bags))]
    size = cfg.batch_bags or len(order)
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches[-2] += batches.pop()
    losses = []
    for batch in batches:
        xs = []
        for bag in batch:
            x = source.bag(bag)
            if cfg.max_tiles and len(x) > cfg.max_tiles:
                x = x[torch.from_numpy(rng.choice(len(x), cfg.max_tiles, replace=False))]
            xs.append(x)
        loss = cox_loss(_risks(model, xs, device), *outcome_tensors(batch, device), cfg.ties)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


@torch.inference_mode()
def cox_validate(
    model: Any, bags: list[Bag], source: FeatureSource, device: torch.device,
    ties: str = "efron",
) -> tuple[float, np.ndarray]:  # fmt: skip
    """The validation bags' Cox loss (one risk set, ``ties`` as in training) and their
    risks ``(B, 1)``."""
    model.eval()
    risks = [float(model(x.to(device))[0][0, 0]) for _, x in source.stream(bags)]
    risk = torch.tensor(risks, dtype=torch.float32, device=device)
    loss = float(cox_loss(risk, *outcome_tensors(bags, device), ties))
    return loss, np.array(risks, float)[:, None]


def centre_risk(state: Any, bags: list[Bag], source: FeatureSource, device: torch.device) -> None:
    """Shift the best epoch's log risk (its head's bias) so that its mean over ``bags`` (the
    fold's training bags) is 0. The partial likelihood fixes risks only up to a constant, so
    each fold model would keep its own; centred, the fold models' risks (each out of fold,
    and their mean on test) share one origin and the out-of-fold median is one threshold."""
    net = state.net
    net.load_state_dict(state.best_weights)
    _, risks = cox_validate(net, bags, source, device)
    key = next(k for k in state.best_weights if k.endswith("head.bias"))
    state.best_weights[key] = state.best_weights[key] - float(risks.mean())
