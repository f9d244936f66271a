"""Champion and challenger: a search's best model replaces the model users transcribe
with only when it is better.

MLflow's convention, over the registered model (``piano`` by default):

- the **champion** serves: alias ``champion`` (and ``production``), stage Production, so
  ``models:/piano/Production``, ``models:/piano@champion`` and ``pianotx transcribe``'s
  default all name it. In a store with none, the bundled model is registered once as a
  version of its own (tagged ``pianotx.bundled``) and made champion, so the registry
  shows where the default came from;
- the **challenger** is the latest search's best model: registered as a new version with
  alias ``challenger``, then scored against the champion with ``pianotx evaluate``'s code
  (:func:`pianotx.evaluate.evaluate_split`, each model on the features it was trained
  on, with the decoding it carries) on the search dataset's validation split, which
  model selection may use, and its test split, reported beside it;
- it is promoted when it is better on the search's objective
  (:func:`comparison_metric`), or as ``--promote always|never`` says; either way the
  comparison is an MLflow run of experiment ``evaluation`` (both models' scores, the
  decision), linked from the search run, and the search says the decision in one line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pianotx.config import ConfigError
from pianotx.locations import Store
from pianotx.store import Manifest
from pianotx.tuning.space import TRIAL_OBJECTIVES

POLICIES = ("if-better", "always", "never")
SPLITS = ("validation", "test")  # the first decides; the second is reported beside it
# The evaluation metric that stands for a search objective computed per epoch (frame
# counts at a fixed threshold): the mir_eval frame scores; a loss stands for nothing an
# evaluation scores, so note F1 (what a transcription is judged by) decides.
EPOCH_METRICS = {"val_f1": "frame_f1", "val_precision": "frame_precision", "val_recall": "frame_recall"}


def comparison_metric(objective: str) -> str:
    """The evaluation score (a key of :func:`pianotx.evaluate.evaluate_piece`, higher is
    better) that decides for a search's ``objective``."""
    if objective in TRIAL_OBJECTIVES:  # mir_eval scores already: the same score on the whole split
        return objective.removeprefix("val_")
    return EPOCH_METRICS.get(objective, "note_f1")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ConfigError(f"--promote must be one of {', '.join(POLICIES)}, got {policy!r}")
    return policy


def bundled_digest() -> str:
    from pianotx.transcribe import BUNDLED_MODEL

    return hashlib.sha256(BUNDLED_MODEL.read_bytes()).hexdigest()[:16]


def ensure_champion(store: Store, name: str, register: bool = True) -> int | None:
    """The champion version of ``name``; in a store with none, the bundled model,
    registered (once) and promoted (unless ``register`` is false: then ``None``)."""
    from pianotx import tracking

    version = tracking.champion_version(store, name)
    if version is not None or not register:
        return version
    return register_bundled(store, name)


def register_bundled(store: Store, name: str) -> int:
    """Register the bundled model as a version of ``name`` (once: a version tagged with
    its digest is reused) and make it champion; the version."""
    from pianotx import tracking
    from pianotx.transcribe import BUNDLED_MODEL, load_local

    digest = bundled_digest()
    version = tracking.version_with_tag(store, name, tracking.BUNDLED_TAG, digest)
    if version is None:
        transcriber = load_local(BUNDLED_MODEL)
        meta = json.loads(BUNDLED_MODEL.with_suffix(".json").read_text())
        uri = tracking.log_bundled(store, transcriber.model, meta, digest, transcriber.features.n_bins)
        version = tracking.register_version(
            store,
            uri,
            name,
            tags={tracking.BUNDLED_TAG: digest},
            description=f"The model bundled with pianotx (pianotx/bundled/piano.keras, {meta.get('source', '')}).",
        )
    tracking.promote(store, name, version)
    return version


@dataclass(frozen=True)
class Outcome:
    """How a search's registration ended."""

    challenger: int
    champion: int  # the version serving now
    promoted: bool
    summary: str  # the one line the search says
    comparison_run: str | None = None


def score(store: Store, uri: str, manifest: Manifest) -> dict[str, dict[str, float]]:
    """``uri``'s mean scores on each of :data:`SPLITS` the dataset has pieces in, as
    ``pianotx evaluate`` computes them."""
    from pianotx.evaluate import evaluate_split
    from pianotx.transcribe import load_transcriber

    transcriber = load_transcriber(uri, store.tracking_uri)
    scores = {}
    for split in SPLITS:
        if manifest.pieces(split):
            _, mean = evaluate_split(
                transcriber.probabilities, manifest, split, transcriber.decoding, features=transcriber.features
            )
            scores[split] = mean
    return scores


def compare(
    store: Store,
    name: str,
    challenger: int,
    champion: int,
    manifest: Manifest,
    objective: str,
    policy: str,
) -> dict[str, Any]:
    """Score both versions on the dataset's held-out splits and decide; the comparison
    as plain data (what :func:`pianotx.tracking.log_comparison` records)."""
    metric = comparison_metric(objective)
    roles: dict[str, Any] = {}
    for role, version in (("challenger", challenger), ("champion", champion)):
        uri = f"models:/{name}/{version}"
        roles[role] = {"version": version, "uri": uri, "scores": score(store, uri, manifest)}
    if "validation" not in roles["challenger"]["scores"]:
        raise ConfigError(f"{manifest.root}: the validation split has no pieces to compare the models on")
    new = roles["challenger"]["scores"]["validation"][metric]
    old = roles["champion"]["scores"]["validation"][metric]
    better = new > old
    promoted = policy == "always" or (policy == "if-better" and better)
    label = metric.replace("note_with_offset", "note+offset").replace("_", " ").replace(" f1", " F1")
    tests = [roles[r]["scores"].get("test", {}).get(metric) for r in ("challenger", "champion")]
    first, second = tests if promoted else tests[::-1]
    test = f"; test {first:.4f} against {second:.4f}" if first is not None and second is not None else ""
    if promoted:
        why = "" if better else " (--promote always)"
        summary = (
            f"promoted {name} version {challenger} to champion{why}: validation {label} {new:.4f} against "
            f"version {champion}'s {old:.4f}{test}"
        )
    else:
        why = "--promote never" if policy == "never" else "not better"
        summary = (
            f"kept {name} version {champion} as champion ({why}): validation {label} {old:.4f} against the "
            f"challenger version {challenger}'s {new:.4f}{test}; the challenger is models:/{name}@challenger"
        )
    return {
        "model_name": name,
        "objective": objective,
        "metric": metric,
        "policy": policy,
        "decision": "promoted" if promoted else "kept",
        "summary": summary,
        "dataset": str(manifest.root.resolve()),
        "dataset_fingerprint": manifest.data["fingerprint"],
        "challenger": roles["challenger"],
        "champion": roles["champion"],
    }


def settle(
    store: Store,
    name: str,
    model_uri: str,
    manifest: Manifest,
    objective: str,
    policy: str = "if-better",
    search_run: str | None = None,
    version_tags: dict[str, Any] | None = None,
    description: str | None = None,
) -> Outcome:
    """Register ``model_uri`` (a search's best model) as the challenger of ``name``,
    compare it with the champion and promote it or not (see the module docstring).

    A search resumed after it settled gets the recorded outcome back; one killed before
    is compared afresh (the registration is reused).
    """
    from pianotx import tracking

    check_policy(policy)
    if search_run is not None:
        tags = tracking.run_tags(store, search_run)
        done = tracking.comparison_of(store, tags[tracking.COMPARISON_TAG]) if tracking.DECISION_TAG in tags else None
        if done is not None:
            serving = tracking.champion_version(store, name) or int(done["champion"]["version"])
            challenger = int(done["challenger"]["version"])
            promoted = done["decision"] == "promoted"
            return Outcome(challenger, serving, promoted, done["summary"], tags[tracking.COMPARISON_TAG])
    champion = ensure_champion(store, name)
    assert champion is not None
    challenger = tracking.register_version(store, model_uri, name, tags=version_tags, description=description)
    tracking.set_alias(store, name, tracking.CHALLENGER_ALIAS, challenger)
    if challenger == champion:
        summary = f"{name} version {challenger} is already the champion"
        return Outcome(challenger, champion, False, summary)
    comparison = compare(store, name, challenger, champion, manifest, objective, policy)
    dataset = manifest.root.resolve().name
    for role in ("challenger", "champion"):  # each version's scores, by dataset, in the registry's view
        scores = comparison[role]["scores"]
        keys = ("note_f1", "note_with_offset_f1", "frame_f1")
        values = {f"{dataset}.{split}_{key}": scores[split][key] for split in scores for key in keys}
        tracking.set_version_tags(store, name, comparison[role]["version"], values)
    run_id = tracking.log_comparison(store, comparison, search_run)
    promoted = comparison["decision"] == "promoted"
    if promoted:
        tracking.promote(store, name, challenger)
    if search_run is not None:
        tracking.set_run_tags(store, search_run, {tracking.DECISION_TAG: comparison["decision"]})
    return Outcome(challenger, challenger if promoted else champion, promoted, comparison["summary"], run_id)
