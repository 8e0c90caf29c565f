"""The optimizer a quantised job gets: paged AdamW on CUDA, 32- or 8-bit state by the memory
estimate; AdamW on CPU, where there is no unified memory to page to."""

from dataclasses import replace

from tunesmith.memory_estimate import GIB, ModelShape, TrainingSetup
from tunesmith.memory_plan import choose
from tunesmith.spec.job import JobSpec
from worker.training.context import JobContext
from worker.training.quantization import choose_optimizer

SHAPE = ModelShape(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008,
                   vocab=32000)


def _ctx(device: str, **fields: object) -> JobContext:
    spec = JobSpec.model_validate({"model": "m", "training_file": "file-x", **fields})
    return JobContext(job_id="ftjob-optim", spec=spec, device=device, seed=0)


def _plan(free_gib: float) -> object:
    setup = TrainingSetup(tuning="lora", quantization="bnb_nf4", precision="bf16",
                          micro_batch=1, seq_len=512, checkpointing=True, lora_rank=64,
                          paged_optimizer=True)
    return choose(SHAPE, setup, batch=1, free_bytes=int(free_gib * GIB), checkpointing=True,
                  supports_checkpointing=True, lean=True)


def test_paged_state_is_outside_the_device_peak() -> None:
    setup = TrainingSetup(tuning="qlora", precision="bf16", micro_batch=1, seq_len=512,
                          checkpointing=True, lora_rank=64)
    from tunesmith.memory_estimate import estimate

    resident, paged = estimate(SHAPE, setup), estimate(SHAPE, replace(setup,
                                                                      paged_optimizer=True))
    assert paged.paged == resident.optimizer > 0
    assert resident.peak_allocated - paged.peak_allocated == resident.optimizer


def test_quantised_jobs_on_cuda_get_paged_adamw_by_the_estimate() -> None:
    quantised = {"quantization": {"method": "bnb_nf4"}}
    assert choose_optimizer(_ctx("cuda", **quantised), _plan(80))[0] == "paged_adamw_32bit"
    plan = _plan(80)
    tight = replace(plan, free_bytes=plan.estimate.device_total)  # fits only if paged
    optim, why = choose_optimizer(_ctx("cuda", **quantised), tight)
    assert optim == "paged_adamw_8bit" and "page" in why
    assert choose_optimizer(_ctx("cuda", tuning={"type": "qlora"}), None)[0] \
        == "paged_adamw_32bit"


def test_cpu_and_unquantised_jobs_keep_adamw() -> None:
    optim, why = choose_optimizer(_ctx("cpu", quantization={"method": "bnb_int8"}), None)
    assert optim is None and "CPU" in why
    assert choose_optimizer(_ctx("cuda"), _plan(80)) == (None, "")
