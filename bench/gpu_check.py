"""Check a GPU machine end to end in one command (issue 11), in well under 8 minutes.

1. The fork server: it imports the training libraries without initialising CUDA, and a child
   forked from it can use the GPU.
2. The service's LoRA and QLoRA jobs through `tunesmith serve` (the embedded default: SQLite,
   a local worker) on the tiny model, with `HF_HUB_OFFLINE=1` for the whole check, so a job
   that needs a network fails: status, seconds from claim to first step, warm or cold start,
   answers right before and after (greedy, exact) of the 16 bundled instructions.
3. The per-tuning table of bench/gpu_tunings.py (tokens/s, MFU, peak memory; the service's
   config against trl's defaults) on a 1.1B Llama of TinyLlama's shape.

It writes gpu_check.json and gpu_check.md into the folder `--out` names, with the targets of
issue 11 checked against the figures, and the H200 figures of FACTS.md as the baseline.

    python -m bench.gpu_check --out bench/results/gpu_check      # on a CUDA machine
    python -m bench.gpu_check --tiny --out /tmp/gpu_check        # anywhere: tiny model, CPU
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import gpu_tunings

REPO = Path(__file__).resolve().parents[1]
# Measured on one H200 before this check existed (FACTS.md, "GPU"): the figures to beat.
BASELINE = {"lora_tokens_per_second": 34_920, "lora_peak_gib": 21.7, "qlora_peak_gib": 26.4,
            "claim_to_first_step_s": 11.0}
SERVE_SPEC: dict[str, Any] = {
    "model": "tiny-llama",
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 30, "batch_size": 8, "learning_rate": 5e-3}}},
}
SERVE_TUNINGS = {"lora": {"type": "lora", "r": 16, "alpha": 32},
                 "qlora": {"type": "qlora", "r": 16, "alpha": 32}}


def environment() -> dict[str, Any]:
    import importlib.metadata as metadata

    import torch

    versions = {}
    for name in ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes",
                 "liger-kernel", "kernels"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    return {"python": sys.version.split()[0], "versions": versions, "cuda": cuda,
            "device_name": torch.cuda.get_device_name() if cuda else "cpu",
            "torch_cuda": torch.version.cuda,
            "env": {k: os.environ.get(k) for k in ("USE_HUB_KERNELS", "HF_HUB_OFFLINE",
                                                   "TUNESMITH_HUB_KERNELS")}}


def _fork_server_state(queue: Any) -> None:
    """Runs in a child of the fork server: what it inherited, and whether CUDA works here."""
    import torch

    state: dict[str, Any] = {"cuda_initialized_in_server": torch.cuda.is_initialized(),
                             "preloaded_trl": "trl" in sys.modules,
                             "USE_HUB_KERNELS": os.environ.get("USE_HUB_KERNELS")}
    if torch.cuda.is_available():
        try:
            state["child_cuda_sum"] = float(torch.ones(4, device="cuda").sum().item())
        except Exception as exc:  # what a fork after CUDA initialisation looks like
            state["child_cuda_error"] = repr(exc)[:300]
    queue.put(state)


def fork_server_check() -> dict[str, Any]:
    from worker.process.launch import _children_allowed, forkserver

    started = time.monotonic()
    context = forkserver()
    queue = context.Queue()
    with _children_allowed():
        child = context.Process(target=_fork_server_state, args=(queue,))
        child.start()
    try:
        state = queue.get(timeout=180)
    except Exception as exc:  # the server refused to serve (warm_imports raised): say so
        state = {"error": f"no answer from a forked child: {exc!r}; see the log above"}
    child.join(30)
    state["seconds"] = round(time.monotonic() - started, 1)
    return state


def _poll_job(project: Any, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll every 50 ms: when the job was claimed (running) and when its first step showed."""
    claimed = first_step = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = project.job(job_id)
        now = time.monotonic()
        if claimed is None and job["status"] != "queued":
            claimed = now
        if first_step is None and (job.get("progress") or {}).get("step", 0) >= 1:
            first_step = now
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return {"job": job, "claimed": claimed, "first_step": first_step, "done": now}
        time.sleep(0.05)
    return {"job": project.job(job_id), "claimed": claimed, "first_step": first_step,
            "done": None}


def answers_right(model_dir: Path, adapter: Path | None) -> int:
    """Bundled instructions whose answer the model reproduces exactly, greedy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from testbed.learning import bundled_instructions, prompt_answer_ids

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    right = 0
    with torch.no_grad():
        for row in bundled_instructions():
            prompt, answer = prompt_answer_ids(tokenizer, row)
            out = model.generate(input_ids=torch.tensor([prompt]), do_sample=False,
                                 max_new_tokens=len(answer),
                                 pad_token_id=tokenizer.pad_token_id)
            right += out[0, len(prompt):].tolist() == answer
    return right


def serve_check(root: Path) -> list[dict[str, Any]]:
    """LoRA and QLoRA jobs through `tunesmith serve`, with no network."""
    from testbed.jobs import Project
    from testbed.learning import bundled_instructions
    from testbed.servers import run_cli, start_api

    env = {k: v for k, v in os.environ.items()
           if k not in ("TUNESMITH_DATABASE_URL", "TUNESMITH_BROKER_URL", "USE_HUB_KERNELS")}
    env.update({"TUNESMITH_HOME": str(root / "home"), "TUNESMITH_ALLOW_HUB_DOWNLOADS": "false",
                "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    run_cli(["tiny-model"], env)
    model_dir = root / "home" / "models" / "tiny-llama"
    api, url = start_api(env, root / "serve.log", worker=True)
    results = []
    try:
        project = Project(url, env, "gpu-check")
        upload = project.upload(bundled_instructions(), "instructions.jsonl")
        before = answers_right(model_dir, None)
        for name, tuning in SERVE_TUNINGS.items():
            posted = time.monotonic()
            job = project.create_job({**SERVE_SPEC, "tuning": tuning,
                                      "training_file": upload["id"]})
            seen = _poll_job(project, job["id"], timeout=600)
            done = seen["job"]
            events = project.events(job["id"])
            started = next((e.get("data") or {} for e in events
                            if e["message"].startswith("Training process started")), {})
            kernels = next((e["message"] for e in events
                            if e["message"].startswith("Kernels: ")), None)
            result: dict[str, Any] = {
                "tuning": name, "status": done["status"], "error": done.get("error"),
                "warm_start": started.get("warm_start"),
                "cuda_initialized_at_start": started.get("cuda_initialized_at_start"),
                "USE_HUB_KERNELS": started.get("USE_HUB_KERNELS"), "kernels": kernels,
                "claim_to_first_step_s": _between(seen["claimed"], seen["first_step"]),
                "post_to_done_s": _between(posted, seen["done"]),
                "trained_tokens": done.get("trained_tokens"), "answers_before": before,
                "answers_total": len(bundled_instructions()),
            }
            if done["status"] == "succeeded":
                folder = project.download_artifacts(job["id"], root / f"artifacts-{name}")
                result["answers_after"] = answers_right(model_dir, folder / "adapter")
            else:
                result["last_events"] = [e["message"] for e in events[-10:]]
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        _stop_group(api)
    return results


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 2)


def _stop_group(api: Any) -> None:
    """Stop serve and its local worker (they share its process group)."""
    pgid = api.pid
    api.stop()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 11's targets, each with the figure it was judged on."""
    jobs = {j["tuning"]: j for j in report["serve_jobs"]}
    cells = {(c["tuning"], c["config"]): c for c in report["tunings"].get("cells", [])}
    lora, qlora = cells.get(("lora", "service"), {}), cells.get(("qlora", "service"), {})
    fork = report["fork_server"]
    out = [
        {"check": "fork server: CUDA not initialised, forked child can train",
         "ok": fork.get("cuda_initialized_in_server") is False and "error" not in fork
         and "child_cuda_error" not in fork,
         "figure": fork},
        {"check": "every service job succeeded with no network",
         "ok": bool(jobs) and all(j["status"] == "succeeded" for j in jobs.values()),
         "figure": {n: j["status"] for n, j in jobs.items()}},
        {"check": "16/16 answers after each job",
         "ok": all(j.get("answers_after") == j["answers_total"] for j in jobs.values()),
         "figure": {n: f"{j.get('answers_after')}/{j['answers_total']} "
                    f"(before {j['answers_before']})" for n, j in jobs.items()}},
        {"check": "first step <= 3 s after the claim",
         "ok": all((j["claim_to_first_step_s"] or 1e9) <= 3.0 for j in jobs.values()),
         "figure": {n: j["claim_to_first_step_s"] for n, j in jobs.items()}},
    ]
    if not report["tiny"]:
        tokens = lora.get("tokens_per_second")
        out.append({"check": "LoRA tokens/s >= 1.3x the 34.9k measured before",
                    "ok": tokens is not None and tokens >= 1.3 * BASELINE[
                        "lora_tokens_per_second"],
                    "figure": tokens})
        out.append({"check": "QLoRA peak memory below LoRA's",
                    "ok": None not in (qlora.get("peak_memory_gib"),
                                       lora.get("peak_memory_gib"))
                    and qlora["peak_memory_gib"] < lora["peak_memory_gib"],
                    "figure": {"qlora": qlora.get("peak_memory_gib"),
                               "lora": lora.get("peak_memory_gib")}})
    out.append({"check": "whole check under 8 minutes", "ok": report["seconds"] < 480,
                "figure": report["seconds"]})
    return out


def estimated_peak_gib(shape: dict[str, Any], cell: dict[str, Any]) -> float | None:
    """The dry run's estimate (tunesmith/memory_estimate.py) for a measured cell: issue 16
    asks it to agree with what the card really held."""
    from tunesmith.memory_estimate import GIB, ModelShape, TrainingSetup, estimate

    if not shape or "error" in cell or cell.get("gradient_checkpointing") is None:
        return None
    model = ModelShape.from_config({
        "hidden_size": shape["hidden"], "num_hidden_layers": shape["layers"],
        "num_attention_heads": shape["heads"], "num_key_value_heads": shape["kv_heads"],
        "intermediate_size": shape["intermediate"], "vocab_size": shape["vocab"],
        "tie_word_embeddings": False})
    setup = TrainingSetup(tuning=cell["tuning"], precision="bf16" if cell.get("bf16") else "fp32",
                          micro_batch=shape["batch"], seq_len=shape["seq_len"],
                          checkpointing=bool(cell["gradient_checkpointing"]), lora_rank=16)
    return estimate(model, setup).peak_allocated / GIB


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"# GPU check ({'tiny, ' if report['tiny'] else ''}{env['device_name']})", "",
             f"{report['finished']}; {report['seconds']:.0f} s in all. Python {env['python']}, "
             + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v) + ".", "",
             "## Targets (issue 11)", "", "| check | ok | figure |", "|---|---|---|"]
    lines += [f"| {c['check']} | {'yes' if c['ok'] else '**no**'} | "
              f"{json.dumps(c['figure'])} |" for c in report["checks"]]
    lines += ["", "## Service jobs through `tunesmith serve` (tiny model, HF_HUB_OFFLINE=1)", "",
              "| tuning | status | start | claim to first step s | post to done s | answers "
              "before -> after | kernels |", "|---|---|---|---|---|---|---|"]
    for j in report["serve_jobs"]:
        lines.append(f"| {j['tuning']} | {j['status']} | "
                     f"{'warm' if j['warm_start'] else 'cold'} | "
                     f"{_fmt(j['claim_to_first_step_s'])} | {_fmt(j['post_to_done_s'])} | "
                     f"{j['answers_before']} -> {_fmt(j.get('answers_after'))} of "
                     f"{j['answers_total']} | {j['kernels']} |")
    shape = report["tunings"].get("shape", {})
    lines += ["", f"## Per tuning: service config vs trl's defaults (Llama "
              f"{_fmt(report['tunings'].get('parameters'))} parameters, seq "
              f"{shape.get('seq_len')}, batch {shape.get('batch')})", "",
              "| tuning | config | tokens/s | MFU | peak GiB | estimate GiB | peak / estimate "
              "| bf16 | act. ckpt | Liger | error |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in report["tunings"].get("cells", []):
        guess, peak = estimated_peak_gib(shape, c), c.get("peak_memory_gib")
        ratio = peak / guess if guess and peak else None
        lines.append(f"| {c['tuning']} | {c['config']} | {_fmt(c.get('tokens_per_second'), 0)}"
                     f" | {_fmt(c.get('mfu'), 3)} | {_fmt(peak)} | {_fmt(guess)} | "
                     f"{_fmt(ratio)} | "
                     f"{_fmt(c.get('bf16'))} | {_fmt(c.get('gradient_checkpointing'))} | "
                     f"{_fmt(c.get('liger_kernels'))} | {c.get('error', '')} |")
    lines += ["", "Baseline (FACTS.md, one H200 before issue 11): LoRA 34,920 tokens/s at "
              "21.7 GiB, QLoRA 30,005 at 26.4 GiB; claim to first step about 11 s (cold).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu_check")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model for the table, on CPU where there is no GPU")
    parser.add_argument("--tunings", default=",".join(gpu_tunings.TUNINGS))
    parser.add_argument("--quick", action="store_true", help="4 timed steps a cell, not 10")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    started = time.monotonic()
    os.environ["HF_HUB_OFFLINE"] = "1"  # every step must work with no network
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.tiny:
        parser.error("no CUDA device here: run with --tiny to check the steps on CPU")
    root = Path(tempfile.mkdtemp(prefix="tunesmith-gpu-check-"))
    os.chmod(root, 0o755)
    try:
        report: dict[str, Any] = {"tiny": args.tiny, "environment": environment()}
        report["fork_server"] = fork_server_check()
        print(json.dumps({"fork_server": report["fork_server"]}), flush=True)
        report["serve_jobs"] = serve_check(root)
        shape = gpu_tunings.TINY if args.tiny else gpu_tunings.ONE_B
        if args.quick and not args.tiny:
            shape = gpu_tunings.Shape(**{**shape.__dict__, "steps": 4})
        report["tunings"] = gpu_tunings.run_all(shape, device, root / "tunings.json",
                                                tuple(args.tunings.split(",")))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report["checks"] = checks(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    return 0 if all(c["ok"] for c in report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
