"""When Liger's kernels turn on: CUDA, a trl SFT trainer, liger-kernel installed, and an
architecture Liger patches; every other case says why not (issue 11). The job-level event on
CPU is checked in test_hub_kernels.py; a GPU run shows it on in `python -m bench.gpu_check`."""

from worker.training.liger import choose, liger_for

LLAMA_ONLY = frozenset({"llama"})


def test_on_only_where_every_condition_holds() -> None:
    on = choose("cuda", "SFTConfig", "llama", LLAMA_ONLY)
    assert on.on and on.trainer_kwargs()["use_liger_kernel"] is True
    # trl refuses the fused linear cross-entropy, and our metrics read the logits.
    assert on.trainer_kwargs()["liger_kernel_config"]["fused_linear_cross_entropy"] is False
    cases = {
        ("cpu", "SFTConfig", "llama", LLAMA_ONLY): "need CUDA",
        ("cuda", "DPOConfig", "llama", LLAMA_ONLY): "not used with DPOConfig",
        ("cuda", "SFTConfig", "llama", None): "not installed",
        ("cuda", "SFTConfig", "gpt2", LLAMA_ONLY): "architecture 'gpt2'",
    }
    for args, reason in cases.items():
        off = choose(*args)
        assert not off.on and off.trainer_kwargs() == {} and reason in off.reason, (args, off)


def test_cpu_jobs_never_read_the_model_to_decide() -> None:
    # A name that resolves to nothing: on CPU the answer comes before any lookup.
    assert not liger_for("cpu", "SFTConfig", "no-such-model").on
