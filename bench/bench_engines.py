"""Engine benchmark (``make bench-engines``): ONNX Runtime vs TVM on the zoo, written to bench/engines.{json,md}.

Per model: raw ONNX Runtime latency in-process (fp32 and int8, median after warm-up), TVM untuned
and tuned latency as ratios to ORT, TVM compile time and cached (warm-start) load time, peak RSS,
and an output-parity check. Every measurement runs in its own fresh process, so the peak RSS is that
configuration's alone and thread pools never interfere.

With ``--runner-url`` it also measures a running runner's ``POST /run`` against raw ORT
(:func:`bench_runner_overhead`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from services.common.zoo import ZOO_NAMES

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = list(ZOO_NAMES)  # every Table III network
console = Console(stderr=True)


# ----------------------------------------------------------------------------- measurement (child)


def _feeds(model_name: str, specs: list[Any]) -> dict[str, np.ndarray]:
    """The zoo's deterministic synthetic input (valid token ids for MobileBERT), shaped for ``specs``."""
    from services.common.zoo import ZOO_NAMES, synthetic_inputs

    return synthetic_inputs(model_name if model_name in ZOO_NAMES else specs, seed=0)


def _time_runs(run: Any, feeds: dict[str, np.ndarray], runs: int, warmup: int, budget_s: float) -> dict[str, Any]:
    """Median / p90 latency in ms; stops early past ``budget_s`` (untuned TVM can take seconds a run)."""
    for _ in range(warmup):
        run(feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs:
        t0 = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    times_ms = sorted(t * 1e3 for t in times)
    return {
        "median_ms": round(statistics.median(times_ms), 3),
        "p90_ms": round(times_ms[min(len(times_ms) - 1, int(0.9 * len(times_ms)))], 3),
        "runs": len(times_ms),
    }


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """One configuration in a fresh process: load, time, report outputs and peak RSS."""
    from services.common.engines import get_engine
    from services.common.engines.tvm_engine import TvmEngine

    path = Path(job["path"])
    threads = int(job["threads"])
    out: dict[str, Any] = {"engine": job["engine"], "variant": job["variant"], "file": path.name}
    try:
        t0 = time.perf_counter()
        if job["engine"] == "onnxruntime":
            model = get_engine("onnxruntime").load(path, threads=threads)
            out["load_s"] = round(time.perf_counter() - t0, 3)
        else:
            engine = TvmEngine(
                cache_dir=Path(job["tvm_cache"]) if job.get("tvm_cache") else None,
                tuning_dir=Path(job["tuning_dir"]) if job.get("tuning_dir") else None,
            )
            model = engine.load(path, threads=threads, tuned=job["variant"] == "tuned")
            out.update(
                load_s=round(time.perf_counter() - t0, 3),
                compile_s=model.info.compile_s,
                compiled_now=not model.info.from_cache,
                artifact=str(model.info.artifact),
            )
            # Warm start = what a restarted runner pays: a new engine on the same cache.
            t0 = time.perf_counter()
            TvmEngine(cache_dir=engine.cache_dir, tuning_dir=engine.tuning_dir).load(
                path, threads=threads, tuned=job["variant"] == "tuned"
            )
            out["cached_load_s"] = round(time.perf_counter() - t0, 3)
        feeds = _feeds(job["model"], model.inputs)
        outputs = model.run(feeds)
        out.update(_time_runs(model.run, feeds, job["runs"], job["warmup"], job["budget_s"]))
        out["outputs"] = [np.asarray(o, dtype=np.float32).ravel()[:4096].tolist() for o in outputs]
    except Exception as e:  # reported in the table, the benchmark goes on
        out["error"] = f"{type(e).__name__}: {e}"[:500]
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _peak_rss_mb() -> float:
    """This process's peak resident set. VmHWM belongs to the address space, which exec replaced;
    ru_maxrss would also carry the forking parent's RSS over the exec (Linux keeps it in the
    process's signal struct), so it serves only where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def tune_job(job: dict[str, Any]) -> dict[str, Any]:
    """MetaSchedule tuning in a child process (it imports TVM's intrinsic library and forks builders)."""
    from services.common.engines.tune import count_valid_records, tune

    t0 = time.perf_counter()
    try:
        db = tune(
            Path(job["path"]),
            "llvm",
            job["trials"],
            Path(job["tuning_dir"]) if job.get("tuning_dir") else None,
            threads=job["threads"],
        )
        return {"db": str(db), "tune_s": round(time.perf_counter() - t0, 1), "records": count_valid_records(db)}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"[:500], "tune_s": round(time.perf_counter() - t0, 1)}


def _in_child(fn: Any, job: dict[str, Any]) -> dict[str, Any]:
    # spawn (not fork): the parent may hold TVM / ORT thread pools, and RSS must start from zero.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, job).result()


# ----------------------------------------------------------------------------- runner overhead


def bench_runner_overhead(url: str, model: str, n: int = 50, raw_ort_ms: float | None = None) -> dict[str, Any]:
    """Median wall time of ``POST {url}/run`` (synthetic input, edge CPU fp32 on ORT) vs raw ORT in-process.

    ``host_exec_ms`` is the runner's own measurement of the network execution, so
    ``client_ms - host_exec_ms`` is HTTP + (de)serialisation + scheduling overhead.
    """
    import httpx

    body = {
        "model": model,
        "target": {"runner": "edge", "processor": "cpu", "precision": "fp32", "dvfs": None, "engine": "onnxruntime"},
        "synthetic": True,
    }
    client_ms: list[float] = []
    host_ms: list[float] = []
    with httpx.Client(base_url=url.rstrip("/"), timeout=60.0) as client:
        for i in range(n + 3):
            t0 = time.perf_counter()
            r = client.post("/run", json=body)
            dt = (time.perf_counter() - t0) * 1e3
            r.raise_for_status()
            if i < 3:  # warm-up: first calls may load the model
                continue
            client_ms.append(dt)
            host_ms.append(float(r.json().get("host_exec_s", 0.0)) * 1e3)
    res: dict[str, Any] = {
        "url": url,
        "model": model,
        "n": n,
        "client_median_ms": round(statistics.median(client_ms), 3),
        "host_exec_median_ms": round(statistics.median(host_ms), 3),
    }
    res["overhead_ms"] = round(res["client_median_ms"] - res["host_exec_median_ms"], 3)
    if raw_ort_ms:
        res["raw_ort_median_ms"] = raw_ort_ms
        res["runner_vs_raw"] = round(res["client_median_ms"] / raw_ort_ms, 3)
    return res


# ----------------------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    import onnx
    import onnxruntime
    import psutil

    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:  # not Linux, or no model name
        cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    info: dict[str, Any] = {
        "host": platform.node(),
        "os": platform.platform(),
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
    }
    try:
        import tvm

        info["tvm"] = tvm.__version__
    except ImportError:
        info["tvm"] = None
    return info


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _max_diff(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    if "outputs" not in a or "outputs" not in b:
        return None
    return float(
        max(np.abs(np.asarray(x) - np.asarray(y)).max() for x, y in zip(a["outputs"], b["outputs"], strict=True))
    )


def summarise(model: str, r: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ort32, ort8 = r.get("ort_fp32", {}), r.get("ort_int8", {})
    tvm_u, tvm_t = r.get("tvm_untuned", {}), r.get("tvm_tuned", {})
    return {
        "model": model,
        "ort_fp32_ms": ort32.get("median_ms"),
        "ort_int8_ms": ort8.get("median_ms"),
        "int8_speedup": _ratio(ort32.get("median_ms"), ort8.get("median_ms")),
        "tvm_untuned_ms": tvm_u.get("median_ms"),
        "tvm_untuned_vs_ort": _ratio(tvm_u.get("median_ms"), ort32.get("median_ms")),
        "tvm_tuned_ms": tvm_t.get("median_ms"),
        "tvm_tuned_vs_ort": _ratio(tvm_t.get("median_ms"), ort32.get("median_ms")),
        "tvm_compile_s": tvm_u.get("compile_s"),
        "tvm_cached_load_s": tvm_u.get("cached_load_s"),
        "ort_load_s": ort32.get("load_s"),
        "peak_rss_mb_ort": ort32.get("peak_rss_mb"),
        "peak_rss_mb_tvm": tvm_u.get("peak_rss_mb"),
        "tvm_vs_ort_max_abs_diff": _max_diff(tvm_u, ort32),
        "tuning": r.get("tuning"),
        "errors": {k: v["error"] for k, v in r.items() if "error" in v},
    }


def _fmt(v: Any, suffix: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}{suffix}" if abs(v) < 1e-2 else f"{v:,.2f}{suffix}"
    return f"{v}{suffix}"


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    m = report["machine"]
    lines = [
        "# Engine benchmark: ONNX Runtime vs TVM",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['memory_gb']} GiB, {m['os']}"
        f" (1-min load average at start: {m['load_avg_1m']})",
        f"- versions: python {m['python']}, onnxruntime {m['onnxruntime']}, tvm {m['tvm']}, onnx {m['onnx']}",
        f"- settings: {report['settings']['threads']} threads, median of up to {report['settings']['runs']} runs"
        f" after {report['settings']['warmup']} warm-up, batch 1, synthetic inputs",
        "",
        "Latency in ms (median). Ratios > 1 mean slower than ONNX Runtime fp32. "
        "`int8 speed-up` = ORT fp32 / ORT int8. TVM untuned = default Relax pipeline, no schedules.",
        "",
        "| model | ORT fp32 | ORT int8 | int8 speed-up | TVM untuned | untuned/ORT | TVM tuned | tuned/ORT "
        "| TVM compile s | TVM cached load s | ORT load s | peak RSS ORT / TVM MB | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["summary"]:
        lines.append(
            f"| {s['model']} | {_fmt(s['ort_fp32_ms'])} | {_fmt(s['ort_int8_ms'])} | {_fmt(s['int8_speedup'], '×')} "
            f"| {_fmt(s['tvm_untuned_ms'])} | {_fmt(s['tvm_untuned_vs_ort'], '×')} | {_fmt(s['tvm_tuned_ms'])} "
            f"| {_fmt(s['tvm_tuned_vs_ort'], '×')} | {_fmt(s['tvm_compile_s'])} | {_fmt(s['tvm_cached_load_s'])} "
            f"| {_fmt(s['ort_load_s'])} | {_fmt(s['peak_rss_mb_ort'])} / {_fmt(s['peak_rss_mb_tvm'])} "
            f"| {_fmt(s['tvm_vs_ort_max_abs_diff'])} |"
        )
    tuned = [s for s in report["summary"] if s.get("tuning")]
    if tuned:
        lines += [
            "",
            "Tuning (MetaSchedule): "
            + "; ".join(
                f"{s['model']}: {s['tuning'].get('trials')} trials, {s['tuning'].get('records', '?')} valid records, "
                f"{s['tuning'].get('tune_s')} s"
                for s in tuned
            ),
        ]
    errors = [(s["model"], k, e) for s in report["summary"] for k, e in s["errors"].items()]
    if errors:
        lines += ["", "Errors:", *[f"- {mdl} {k}: {e}" for mdl, k, e in errors]]
    ro = report.get("runner_overhead")
    lines += ["", "## Runner `/run` vs raw ORT", ""]
    if ro:
        lines += [
            "| model | raw ORT ms | runner client ms | runner host_exec ms | overhead ms | runner/raw |",
            "|---|---|---|---|---|---|",
        ]
        for r in ro:
            lines.append(
                f"| {r['model']} | {_fmt(r.get('raw_ort_median_ms'))} | {_fmt(r['client_median_ms'])} "
                f"| {_fmt(r['host_exec_median_ms'])} | {_fmt(r['overhead_ms'])} | {_fmt(r.get('runner_vs_raw'), '×')} |"
            )
    else:
        lines.append(
            "Not measured here: `make bench-mesh` measures it against the running mesh for every zoo model "
            "(`bench/mesh.md`); pass `--runner-url http://127.0.0.1:8001` with a runner up to time it here."
        )
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- main


def bench_model(
    name: str,
    common: dict[str, Any],
    progress: Progress,
    bar: TaskID,
    *,
    steps: int,
    no_int8: bool,
    no_tvm: bool,
    tune_trials: int,
    models_dir: Path | None,
) -> dict[str, Any]:
    """Every configuration of one model, each in a fresh child process; advances ``bar`` by ``steps`` in all."""
    from services.cli.tune import resolve_model
    from services.core.schemas import Precision

    r: dict[str, Any] = {}
    progress.update(bar, description=f"{name}: preparing model")
    try:
        fp32 = resolve_model(name, Precision.fp32, models_dir)
        # A plain .onnx path has no generated int8 variant.
        quantise = not no_int8 and not name.endswith(".onnx")
        int8 = resolve_model(name, Precision.int8, models_dir) if quantise else None
    except Exception as e:
        r["prepare"] = {"error": f"{type(e).__name__}: {e}"[:500]}
        progress.advance(bar, steps)
        return r
    job = {**common, "model": name}
    progress.update(bar, description=f"{name}: onnxruntime fp32")
    r["ort_fp32"] = _in_child(measure, {**job, "engine": "onnxruntime", "variant": "fp32", "path": str(fp32)})
    progress.advance(bar)
    if not no_int8:
        if int8 is not None:
            progress.update(bar, description=f"{name}: onnxruntime int8")
            r["ort_int8"] = _in_child(measure, {**job, "engine": "onnxruntime", "variant": "int8", "path": str(int8)})
        progress.advance(bar)
    if no_tvm:
        return r
    progress.update(bar, description=f"{name}: tvm untuned (compiles on first use)")
    r["tvm_untuned"] = _in_child(measure, {**job, "engine": "tvm", "variant": "untuned", "path": str(fp32)})
    progress.advance(bar)
    if tune_trials > 0:
        progress.update(bar, description=f"{name}: MetaSchedule tuning, {tune_trials} trials")
        r["tuning"] = {"trials": tune_trials, **_in_child(tune_job, {**job, "path": str(fp32), "trials": tune_trials})}
        progress.advance(bar)
    progress.update(bar, description=f"{name}: tvm tuned")
    tuned = _in_child(measure, {**job, "engine": "tvm", "variant": "tuned", "path": str(fp32)})
    if "no tuning database" not in tuned.get("error", ""):  # absent DB: leave the column empty
        r["tvm_tuned"] = tuned
    progress.advance(bar)
    s = summarise(name, r)
    console.print(
        f"{name}: ORT {_fmt(s['ort_fp32_ms'])} ms, TVM untuned {_fmt(s['tvm_untuned_ms'])} ms "
        f"({_fmt(s['tvm_untuned_vs_ort'], '×')}), tuned {_fmt(s['tvm_tuned_vs_ort'], '×')}"
    )
    return r


def runner_overheads(url: str, names: list[str], results: dict[str, dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """:func:`bench_runner_overhead` for every model, against its raw ORT fp32 median; a failure is printed."""
    runner = []
    for name in names:
        raw = results[name].get("ort_fp32", {}).get("median_ms")
        try:
            runner.append(bench_runner_overhead(url, name, n, raw))
        except Exception as e:
            console.print(f"[yellow]runner overhead for {name} failed: {e}[/yellow]")
    return runner


def main(
    models: Annotated[str, typer.Option(help="comma-separated zoo names or .onnx paths")] = ",".join(DEFAULT_MODELS),
    runs: Annotated[int, typer.Option(min=3, help="timed runs per configuration (median)")] = 30,
    warmup: Annotated[int, typer.Option(min=0)] = 3,
    threads: Annotated[int, typer.Option(min=1, help="intra-op threads for both engines")] = 2,
    budget_s: Annotated[float, typer.Option(help="stop timing a configuration after this many seconds")] = 20.0,
    tune_trials: Annotated[
        int,
        typer.Option(help="tune each model with this many MetaSchedule trials first (0: only use existing databases)"),
    ] = 0,
    no_tvm: Annotated[bool, typer.Option(help="skip TVM")] = False,
    no_int8: Annotated[bool, typer.Option(help="skip the int8 ORT variant")] = False,
    models_dir: Annotated[Path | None, typer.Option(help="zoo cache (default settings.model_cache)")] = None,
    tvm_cache: Annotated[Path | None, typer.Option(help="TVM artefact cache (default $AUTOSCALE_TVM_CACHE)")] = None,
    tuning_dir: Annotated[Path | None, typer.Option(help="tuning databases (default $AUTOSCALE_TVM_TUNING)")] = None,
    runner_url: Annotated[str | None, typer.Option(help="also time POST {url}/run of a running runner")] = None,
    runner_n: Annotated[int, typer.Option(help="requests for the runner overhead measurement")] = 50,
    out_dir: Annotated[Path, typer.Option(help="where engines.json / engines.md go")] = ROOT / "bench",
) -> None:
    """Benchmark ONNX Runtime and TVM on zoo models; writes engines.json and engines.md."""
    names = [m.strip() for m in models.split(",") if m.strip()]
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    common = {
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
        "budget_s": budget_s,
        "tvm_cache": str(tvm_cache) if tvm_cache else None,
        "tuning_dir": str(tuning_dir) if tuning_dir else None,
    }
    results: dict[str, dict[str, Any]] = {}
    steps_per_model = 1 + (not no_int8) + (0 if no_tvm else 2 + (tune_trials > 0))
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("engines", total=steps_per_model * len(names))
        for name in names:
            results[name] = bench_model(
                name,
                common,
                progress,
                bar,
                steps=steps_per_model,
                no_int8=no_int8,
                no_tvm=no_tvm,
                tune_trials=tune_trials,
                models_dir=models_dir,
            )
    runner = runner_overheads(runner_url, names, results, runner_n) if runner_url else None
    summary = [summarise(n, results[n]) for n in names]
    for r in results.values():  # raw output vectors were for the parity check only
        for v in r.values():
            v.pop("outputs", None)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "settings": {
            "threads": threads,
            "runs": runs,
            "warmup": warmup,
            "budget_s": budget_s,
            "tune_trials": tune_trials,
        },
        "summary": summary,
        "results": results,
        "runner_overhead": runner,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "engines.json").write_text(json.dumps(report, indent=2))
    write_markdown(out_dir / "engines.md", report)
    console.print(f"wrote {out_dir / 'engines.json'} and {out_dir / 'engines.md'}")


if __name__ == "__main__":
    typer.run(main)
