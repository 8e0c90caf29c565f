"""RLHF whole, in one job: SFT on `training_file`, a reward model on
`method.rlhf.preference_file`, then PPO on `method.rlhf.prompt_file` from the SFT policy
against that reward model.

Each stage runs the single-stage workflow of its objective (supervised, reward, ppo) on a
copy of the job's context whose spec is that stage's (`JobContext.stage` set), so a stage is
exactly what the same job of that type would do: its events and metrics carry the stage
name, its checkpoints sit in `checkpoints/<stage>/` (a crash resumes the stage from there),
and its artifacts in `artifacts/<stage>/` (sft/adapter, reward/reward_model, ppo/adapter;
`model` instead of `adapter` for full tuning). A stage that finished writes a marker
(`stages/<stage>.json` in the job folder) after its artifacts: a job requeued after a crash
skips the finished stages and carries on with the first unfinished one.
"""

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tunesmith.spec.objectives import (
    RewardMethod,
    RLHFConfig,
    RLHFMethod,
    SupervisedMethod,
)
from worker.objectives import reward, supervised
from worker.objectives.ppo import train_policy
from worker.objectives.reward import REWARD_MODEL_ARTIFACT
from worker.registry import register_objective
from worker.training.context import JobContext

STAGES = RLHFMethod.stages
DESCRIPTIONS = {
    "sft": "supervised fine-tuning on training_file",
    "reward": "reward model on method.rlhf.preference_file",
    "ppo": "PPO on method.rlhf.prompt_file against the stage-2 reward model",
}


@register_objective(RLHFMethod)
def run(ctx: JobContext, method: RLHFMethod) -> None:
    config = method.rlhf
    sft_method = SupervisedMethod(supervised=config.sft)
    sft = stage_context(ctx, "sft", method=sft_method)
    if not run_stage(ctx, sft, lambda: supervised.run(sft, sft_method)):
        return
    reward_method = RewardMethod(reward=config.reward)
    preferences = stage_context(ctx, "reward", method=reward_method,
                                training_file=config.preference_file, validation_file=None)
    if not run_stage(ctx, preferences, lambda: reward.run(preferences, reward_method)):
        return
    ppo = stage_context(ctx, "ppo")
    run_stage(ctx, ppo, lambda: ppo_stage(ppo, config, sft_result=stage_result(sft),
                                          reward_model=preferences.artifacts_dir / "reward"
                                          / REWARD_MODEL_ARTIFACT))


def ppo_stage(ctx: JobContext, config: RLHFConfig, *, sft_result: Path,
              reward_model: Path) -> None:
    train_policy(ctx, ctx.rows(config.prompt_file), config.ppo, reward_model=str(reward_model),
                 start_from=sft_result, prompt_field="method.rlhf.prompt_file")


def stage_context(ctx: JobContext, stage: str, **spec_changes: object) -> JobContext:
    """The job's context as a job of one stage: same id, folders, device, seed and stop flag."""
    return replace(ctx, stage=stage, spec=ctx.spec.model_copy(update=spec_changes))


def stage_result(ctx: JobContext) -> Path:
    """The SFT stage's policy: its adapter folder, or its model folder for full tuning."""
    folder = ctx.artifacts_dir / ctx.stage
    adapter = folder / "adapter"
    return adapter if (adapter / "adapter_config.json").is_file() else folder / "model"


def _marker(ctx: JobContext) -> Path:
    return ctx.job_dir / "stages" / f"{ctx.stage}.json"


def run_stage(job: JobContext, ctx: JobContext, train: Callable[[], object]) -> bool:
    """Run one stage (`ctx`) unless a previous attempt finished it. False if the job was
    stopped. The stage's start and end are the job's events (`job`), not the stage's."""
    number = STAGES.index(ctx.stage) + 1
    data = {"stage": ctx.stage, "stage_number": number, "stages": len(STAGES)}
    if _marker(ctx).is_file():
        job.event(f"Stage {number} of {len(STAGES)}: {ctx.stage} finished on an earlier "
                  "attempt; its artifacts are kept", data={**data, "skipped": True})
        return True
    job.event(f"Stage {number} of {len(STAGES)}: {ctx.stage} ({DESCRIPTIONS[ctx.stage]})",
              data=data)
    train()
    if ctx.stop.is_set():
        return False
    artifacts = sorted(str(p.relative_to(ctx.artifacts_dir))
                       for p in (ctx.artifacts_dir / ctx.stage).rglob("*") if p.is_file())
    _marker(ctx).parent.mkdir(parents=True, exist_ok=True)
    _marker(ctx).write_text(json.dumps({"stage": ctx.stage, "artifacts": artifacts}))
    job.event(f"Stage {number} of {len(STAGES)}: {ctx.stage} done",
              data={**data, "done": True, "artifacts": len(artifacts)})
    return True
