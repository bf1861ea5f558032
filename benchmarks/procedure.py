"""The original's procedure against tfqa's, one switch at a time, on the demo's dev set.

Reads what two finished demos left in the tracking store (each one's latest ``validate`` run:
its cached per-candidate outputs of the five variants, its dev file): the default demo
(``registry/demo.yaml``, ``html_tokens=tfqa``) and the demo run with ``registry/demo-original.yaml``
(every model retrained with ``html_tokens=original``). For each,
every combination of decoding (joint / original), cascade (off / the original's: variant 1 keeps
each example's top 10 above 0.2, variant 4 the top 4 of those above 0.35 / the same top-k cuts
with no score threshold) and weights (equal /
the original's 0, .3, .3, .2, .2) is decoded and scored with the official metric; the table also
gives the candidates that reach the ensemble and the inference seconds they cost (each model's
measured rate on this dev set times the candidates it scores).

    python -m tfqa.pipeline.demo
    python -m tfqa.pipeline.demo --manifest registry/demo-original.yaml --work-dir demo-original --experiment demo-original
    python benchmarks/procedure.py --manifest registry/demo.yaml --manifest registry/demo-original.yaml
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WEIGHTS = {"equal": [0.2] * 5, "original": [0.0, 0.3, 0.3, 0.2, 0.2]}


def latest_validate(manifest: str):
    """The latest FINISHED validate run of ``manifest`` in the tracking store (MLFLOW_TRACKING_URI,
    else ./mlflow.db, where the demo keeps it)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}")
    want = Path(manifest).resolve()
    runs = [
        r
        for e in client.search_experiments()
        for r in client.search_runs(
            [e.experiment_id],
            "tags.`tfqa.stage` = 'validate' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
        )
        if Path(r.data.params.get("validate.manifest", "")).resolve() == want
    ]
    if not runs:
        raise SystemExit(f"no finished validate run of {manifest} in this store (run the demo with it first)")
    return max(runs, key=lambda r: r.info.start_time)


def load(manifest: str):
    """(html_tokens, model names in variant order, outputs, seconds per model, DevSet)."""
    import pandas as pd

    from tfqa.evaluation.dev import DevSet
    from tfqa.inference.manifest import EnsembleManifest

    run = latest_validate(manifest)
    tags, params = run.data.tags, run.data.params
    names = [m.name for m in sorted(EnsembleManifest.load(manifest).models, key=lambda m: m.variant)]
    inference = Path(params["validate.output_dir"]) / "inference"
    outputs, seconds = {}, {}
    for n in names:
        path = inference / tags[f"tfqa.outputs.{n}"]
        outputs[n] = pd.read_parquet(path)
        seconds[n] = json.loads(path.with_suffix(".json").read_text())["seconds"]
    html = {tags.get(f"tfqa.html_tokens.{n}", "tfqa") for n in names}
    dev = DevSet.read(params["validate.dev_data"], int(float(params.get("validate.dev_examples", 0))))
    return "/".join(sorted(html)), names, outputs, seconds, dev


# The original's cascade, and the same top-k cuts without its score thresholds (which were set
# for the original's models' confidence, not for small ones').
CASCADES = {"off": None, "on": (0.2, 0.35), "top-k only": (0.0, 0.0)}


def evaluate(names, outputs, seconds, dev, decode: str, cascade: str, weights: str) -> dict:
    from tfqa.evaluation.dev import score_outputs
    from tfqa.inference import decode as dec
    from tfqa.inference.cascade import restrict, run_cascade
    from tfqa.inference.ensemble import ensemble
    from tfqa.inference.manifest import CascadeStage

    cut = CASCADES[cascade]
    stages = [CascadeStage(names[0], 10, cut[0]), CascadeStage(names[3], 4, cut[1])] if cut else []
    n_all = len(outputs[names[0]])

    def from_every_candidate(name, keys):
        out = restrict(outputs[name], keys, name)
        return out, seconds[name] * len(out) / n_all

    casc = run_cascade(stages, from_every_candidate)
    w = WEIGHTS[weights]
    ens = ensemble([restrict(outputs[n], casc.keys, n) for n in names], w, names=names)
    official = score_outputs(ens, dev, dec.DecodeConfig(decode=decode))[0].official_metrics()
    n_ens = len(ens)
    cost = sum(st.seconds for st in casc.stages) + sum(seconds[n] * n_ens / n_all for n, wk in zip(names, w) if wk > 0)
    return {
        "long_f1": official["long-best-threshold-f1"],
        "short_f1": official["short-best-threshold-f1"],
        "candidates": n_ens,
        "of": n_all,
        "seconds": cost,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--manifest",
        action="append",
        required=True,
        help="the manifest of a finished demo's validate run (repeat): its five models are compared",
    )
    args = ap.parse_args()
    rows = []
    for manifest in args.manifest:
        html, names, outputs, seconds, dev = load(manifest)
        for n in names:
            from tfqa.evaluation.dev import score_outputs
            from tfqa.inference import decode as dec

            for decode in ("joint", "original"):
                o = score_outputs(outputs[n], dev, dec.DecodeConfig(decode=decode))[0].official_metrics()
                rows.append(
                    {
                        "html_tokens": html,
                        "model": n,
                        "decode": decode,
                        "cascade": "-",
                        "weights": "-",
                        "long_f1": o["long-best-threshold-f1"],
                        "short_f1": o["short-best-threshold-f1"],
                    }
                )
        for decode, cascade, weights in itertools.product(("joint", "original"), CASCADES, WEIGHTS):
            r = evaluate(names, outputs, seconds, dev, decode, cascade, weights)
            rows.append({"html_tokens": html, "model": "ensemble", "decode": decode, "cascade": cascade, "weights": weights, **r})
    print("| html_tokens | model | decode | cascade | weights | long F1 | short F1 | candidates | inference s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cand = f"{r['candidates']} / {r['of']}" if "candidates" in r else ""
        secs = f"{r['seconds']:.1f}" if "seconds" in r else ""
        print(
            f"| {r['html_tokens']} | {r['model']} | {r['decode']} | {r['cascade']} | {r['weights']} | "
            f"{r['long_f1']:.4f} | {r['short_f1']:.4f} | {cand} | {secs} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
