"""Performance and scale: as-of tensorizing, training, inference and note embedding, with cost growth.

One command prints a table and writes ``benchmarks/results/perf.json`` (machine description included)::

    .venv/bin/python benchmarks/perf.py --sizes 10000,100000,1000000

Each cohort size is written shard by shard with ``stream_synthetic`` (events equal ``make_synthetic``'s) and
tensorized shard by shard in a fresh process, so that the reported peak memory is that stage's own. Training and
inference run on a ``make_synthetic(--model-subjects)`` cohort (a subset: said so in the table), note embedding on
distinct synthetic note texts. Cost growth: the log-log slope of time against events across sizes (tensorizing,
``training_queries``), across batches (training steps), across held-out subsets (batch inference) and across text
counts (notes); 1 = linear.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, git_state, machine_info, markdown_table, package_versions, write_json

RESULTS = REPO / "benchmarks" / "results" / "perf.json"
TARGETS = {
    "tensorize_speedup_vs_pandas": 20.0,
    "tensorize_events_per_s": 2e6,
    "batch_inference_subjects_per_s": 5000.0,
    "single_patient_p95_ms": 20.0,
    "peak_rss_gib_largest": 8.0,
    "training_share_of_matmul": 0.25,
}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _ram_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return None


def describe_machine() -> dict[str, Any]:
    info = machine_info()
    info.update(cpu_model=_cpu_model(), ram_gib=_ram_gib())
    info["packages"] = package_versions(["torch", "polars", "numpy", "pandas", "lightning", "migpt-traj"])
    info["git"] = git_state()
    return info


def slope(x: list[float], y: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x) (None with fewer than two distinct x)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if np.unique(lx).size < 2:
        return None
    return float(np.polyfit(lx, ly, 1)[0])


def _child(args: list[str]) -> dict[str, Any]:
    """Run one stage of this script in a fresh Python process and return its JSON result."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"stage {args} failed:\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


STAGES = ("tensorize", "model", "notes")


def run(
    sizes: list[int],
    *,
    out: Path,
    model_subjects: int,
    pandas_samples: int,
    note_sizes: list[int],
    latency_calls: int,
    stages: tuple[str, ...] = STAGES,
) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": describe_machine(), "targets": TARGETS, "tensorize": []}
    with tempfile.TemporaryDirectory(prefix="perf_") as tmp:
        for n in sizes if "tensorize" in stages else []:
            root = Path(tmp) / f"root_{n}"
            gen = _child(["generate", str(n), str(root)])
            row = _child(["tensorize", str(root), str(pandas_samples)])
            row.update(n_subjects=n, generate_s=gen["wall_s"], generate_peak_rss_mib=gen["peak_rss_mib"])
            result["tensorize"].append(row)
            print(f"tensorized {n:,} subjects: {row['input_events_per_s']:,.0f} events/s", flush=True)
            subprocess.run(["rm", "-rf", str(root)], check=False)
    if "model" in stages:
        result["model"] = _child(["model", str(model_subjects), str(latency_calls)])
    if "notes" in stages:
        result["notes"] = _child(["notes", ",".join(map(str, note_sizes))])
    if set(stages) == set(STAGES):
        result["growth"] = _growth(result)
        result["targets_met"] = _targets_met(result)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    write_json(out, result)
    if "growth" in result:
        print(render(result))
    print(f"wrote {out}")
    return result


def _growth(r: dict[str, Any]) -> dict[str, float | None]:
    ts = r["tensorize"]
    tr, inf = r["model"]["training"], r["model"]["inference"]["batch_api_predict_risk"]
    notes = r["notes"]["sizes"]
    return {
        "tensorize": slope([t["input_events"] for t in ts], [t["tensorize_s"] for t in ts]),
        "training_queries": slope([t["input_events"] for t in ts], [t["queries_s"] for t in ts]),
        "load_validate": slope([t["events"] for t in ts], [t["load_s"] for t in ts]),
        "training_step": slope(tr["step_tokens"], tr["step_seconds"]),
        "batch_inference": slope([v["events"] for v in inf.values()], [v["s"] for v in inf.values()]),
        "notes_cold": slope([n["texts"] for n in notes], [n["cold_s"] for n in notes]),
    }


def _targets_met(r: dict[str, Any]) -> dict[str, Any]:
    largest = r["tensorize"][-1]
    inf = r["model"]["inference"]
    measured = {
        "tensorize_speedup_vs_pandas": min(t["pandas"]["speedup_same_samples"] for t in r["tensorize"]),
        "tensorize_events_per_s": min(t["input_events_per_s"] for t in r["tensorize"]),
        "batch_inference_subjects_per_s": inf["batch_api_predictions_per_s"],
        "single_patient_p95_ms": inf["single_api_predict_risk_one_subject_cohort"]["p95_ms"],
        "peak_rss_gib_largest": max(largest["peak_rss_mib_library"], largest["generate_peak_rss_mib"]) / 1024,
        "training_share_of_matmul": r["model"]["training"]["share_of_square_matmul"],
    }
    lower_is_better = {"single_patient_p95_ms", "peak_rss_gib_largest"}
    return {
        k: {"measured": v, "target": TARGETS[k], "met": v <= TARGETS[k] if k in lower_is_better else v >= TARGETS[k]}
        for k, v in measured.items()
    }


def render(r: dict[str, Any]) -> str:
    """The results as markdown tables (printed, and pasted into PERFORMANCE.md)."""
    m = r["machine"]
    lines = [
        f"Machine: {m.get('cpu_model')}, {m.get('cpu_count')} cores, {m.get('ram_gib') or 0:.0f} GiB RAM; torch "
        f"{m['packages']['torch']}, polars {m['packages']['polars']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m.get('load_average_at_start') or [])}, at end "
        f"{', '.join(f'{x:.1f}' for x in m.get('load_average_at_end') or [])}.",
        "",
    ]
    rows = []
    for t in r["tensorize"]:
        p = t["pandas"]
        rows.append(
            [
                f"{t['n_subjects']:,}",
                f"{t['input_events']:,}",
                f"{t['tensorize_s']:.2f}",
                f"{t['input_events_per_s'] / 1e6:.2f}",
                f"{t['input_events_per_cpu_s'] / 1e6:.2f}",
                f"{t['queries_s']:.2f}",
                f"{p['speedup_same_samples']:.0f}× ({p['samples']:,} samples)",
                f"{t['peak_rss_mib_library'] / 1024:.2f}",
                f"{t['shards']}",
            ]
        )
    header = ["subjects", "train events", "tensorize s", "M events/s", "M events/CPU-s", "training_queries s"]
    lines += ["**As-of tensorizing** (every history prefix of every train subject; shard by shard)", ""]
    lines.append(markdown_table([*header, "vs pandas", "peak RSS GiB", "shards"], rows))
    tr = r["model"]["training"]
    gf = tr["matmul_gflops"]
    lines += [
        "",
        f"**Training** (default model: d_model {tr['d_model']}, {tr['n_layers']} layers, {tr['parameters']:,} "
        f"parameters, batch {tr['batch_size']}; subset: {tr['train_subjects']:,} train subjects of a "
        f"{r['model']['inference']['cohort_subjects']:,}-subject cohort, one epoch, {tr['torch_threads']} threads)",
        "",
        markdown_table(
            ["samples/s", "events/s", "queries/s", "achieved GFLOP/s", *[f"matmul {k} GFLOP/s" for k in gf], "share"],
            [
                [
                    f"{tr['samples_per_s']:,.0f}",
                    f"{tr['events_per_s']:,.0f}",
                    f"{tr['queries_per_s']:,.0f}",
                    f"{tr['achieved_gflops']:.2f}",
                    *[f"{v:.1f}" for v in gf.values()],
                    f"{tr['share_of_square_matmul']:.1%} of square, {tr['share_of_model_shaped_matmul']:.1%} of "
                    f"model-shaped",
                ]
            ],
        ),
    ]
    inf = r["model"]["inference"]
    rows = [
        [
            "`predict_risk` on a one-subject cohort (public API, end to end)",
            *_pp(inf, "single_api_predict_risk_one_subject_cohort"),
        ],
        ["`predict_risk` for one subject of the whole cohort", *_pp(inf, "single_api_predict_risk_in_full_cohort")],
        ["raw `TrajectoryModule.log_hazard` on one tensorized sample", *_pp(inf, "single_raw_module_forward")],
    ]
    b = inf["batch_api_predict_risk"]["1.0"]
    lines += [
        "",
        "**Inference** (no autograd: `torch.inference_mode`)",
        "",
        markdown_table(["single patient", "p50 ms", "p95 ms"], rows),
        "",
        f"Batch: `predict_risk` on {b['predictions']:,} held-out (subject, landmark) predictions: "
        f"{b['predictions_per_s']:,.0f} predictions/s end to end (tensorizing included).",
    ]
    nt = r["notes"]
    lines += [
        "",
        f"**Note embedding** (all-MiniLM-L6-v2, CPU; model load {nt['model_load_plus_one_text_s']:.1f} s)",
        "",
        markdown_table(
            ["distinct texts", "cold texts/s", "cached texts/s", "cached, new encoder texts/s"],
            [
                [
                    f"{n['texts']:,}",
                    f"{n['cold_texts_per_s']:,.0f}",
                    f"{n['cached_texts_per_s']:,.0f}",
                    f"{n['cached_new_encoder_texts_per_s']:,.0f}",
                ]
                for n in nt["sizes"]
            ],
        ),
    ]
    g = r["growth"]
    lines += [
        "",
        "**Cost growth** (log-log slope of time against events; 1 = linear)",
        "",
        markdown_table(list(g), [[("n/a" if v is None else f"{v:.2f}") for v in g.values()]]),
    ]
    tm = r["targets_met"]
    lines += [
        "",
        "**Targets**",
        "",
        markdown_table(
            ["target", "goal", "measured", "met"],
            [[k, f"{v['target']:g}", f"{v['measured']:,.3g}", "yes" if v["met"] else "**no**"] for k, v in tm.items()],
        ),
    ]
    return "\n".join(lines)


def _pp(inf: dict[str, Any], key: str) -> list[str]:
    return [f"{inf[key]['p50_ms']:.1f}", f"{inf[key]['p95_ms']:.1f}"]


def _run_child(argv: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import perf_stages as st

    kind, rest = argv[0], argv[1:]
    if kind == "generate":
        import time

        from migpt_traj.datasets.synthetic import stream_synthetic

        t = time.perf_counter()
        stream_synthetic(int(rest[0]), Path(rest[1]), seed=0)
        out = {"wall_s": time.perf_counter() - t, "peak_rss_mib": st.peak_rss_mib()}
    elif kind == "tensorize":
        out = st.tensorize_stage(Path(rest[0]), pandas_samples=int(rest[1]))
    elif kind == "model":
        out = st.model_stage(int(rest[0]), latency_calls=int(rest[1]))
    else:
        out = st.notes_stage([int(x) for x in rest[0].split(",")])
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _run_child(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="cohort sizes, comma separated")
    parser.add_argument("--model-subjects", type=int, default=3000, help="cohort size for training and inference")
    parser.add_argument("--pandas-samples", type=int, default=1000, help="samples the pandas reference runs on")
    parser.add_argument("--note-sizes", default="64,128,256", help="distinct note texts per encoder run")
    parser.add_argument("--latency-calls", type=int, default=50, help="single-patient calls timed")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"subset of {','.join(STAGES)} (table: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    a = parser.parse_args(argv)
    run(
        [int(x) for x in a.sizes.split(",")],
        out=a.out,
        model_subjects=a.model_subjects,
        pandas_samples=a.pandas_samples,
        note_sizes=[int(x) for x in a.note_sizes.split(",")],
        latency_calls=a.latency_calls,
        stages=tuple(x for x in a.stages.split(",") if x),
    )


if __name__ == "__main__":
    main()
