"""GRPO round: online, multi-turn reinforcement learning of a LoRA adapter in a built-in environment.

Follows Shao et al. 2024, "DeepSeekMath" (arXiv:2402.03300), group relative policy optimisation:
each prompt is played `train.grpo.generations` times by the current policy, a rollout's advantage
is its reward minus its group's mean (scaled by the group's std), and a KL term of strength
`train.beta` holds the policy near the reference. Drives TRL's `GRPOTrainer` with a `rollout_func`:

- The dataset is `data_pipeline.builders.build_rl`: one prompt per logged task, naming its suite
  and task id. Only tasks of built-in suites can be replayed (their seed is in the task id).
- A rollout is a whole episode: the policy being trained acts in the task's environment, with the
  same constrained decoding (`eval.policy.HFPolicy`) and lock-step runner (`eval.rollout`) as data
  collection and evaluation, so training, collection and the held-out suite see one action format.
  (TRL's `environment_factory` exposes an environment as tool calls instead, which the maze, a
  text-action environment, does not speak.)
- The completion is everything after the prompt: the policy's turns (trained, env_mask = 1) and
  the environment's observations and turn headers between them (env_mask = 0, never trained).
- Reward = the environment's outcome score of the episode (maze: SPL, 0 on failure).

Honours: train.learning_rate (with the round's decay), lr_scheduler, warmup_ratio, epochs,
max_steps, batch_size, grad_accum, max_length, max_grad_norm, grad_norm_limit, save_steps, beta,
grpo.generations, deepspeed, lora.*, and train.reference through `reference_adapter` (see
trainer/reference.py). Resumes from the newest intra-round checkpoint in `work_dir`.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from data_pipeline.config import Section

if TYPE_CHECKING:
    from eval.models import LoadOptions

DATASET = "rl"  # `flywheel dataset build --kind` of this method's dataset: prompts to replay
REFERENCE = True  # KL to a reference policy: train.reference and train.beta apply
_TASK = re.compile(r"/d(\d+)/s(\d+)$")  # built-in task ids: "<suite>/d<difficulty>/s<seed>"


class Config(Section):
    """GRPO: keys of group relative policy optimisation alone"""

    generations: int = Field(4, ge=2, description="Completions per prompt")


def build_dataset(trajs, recipe, heldout):
    """The round's trajectories -> one `prompt` per logged task, naming its suite and task id
    (data_pipeline.builders.build_rl)."""
    from data_pipeline.builders import build_rl

    return build_rl(trajs, heldout=heldout)


def train(base_path: Path, parent_adapter: Path | None, dataset, cfg, seed: int, work_dir: Path,
          learning_rate: float, deepspeed_config: str | None = None,
          reference_adapter: Path | None = None, load: LoadOptions | None = None) -> dict:
    """Train one round on the tasks of `dataset`; returns metrics and the trained PEFT model."""
    from trl import GRPOConfig, GRPOTrainer

    from trainer.common import build_trainer_args, load_policy_for_training, run_trainer
    from trainer.reference import drop_reference, set_reference

    # 1. setup: the replayable tasks, the policy, the trainer config, the reference policy
    dataset, tasks = replayable_tasks(dataset)
    model, tokenizer, peft_config = load_policy_for_training(base_path, parent_adapter, cfg, load)
    args = GRPOConfig(
        **build_trainer_args(cfg, seed, work_dir, learning_rate, deepspeed_config, load),
        beta=cfg.beta,
        num_generations=cfg.grpo.generations,
        max_completion_length=cfg.max_length,
        temperature=1.0,  # the rollout samples at temperature 1; log-probs are computed the same way
    )
    trainer = GRPOTrainer(model=model, reward_funcs=environment_score, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config,
                          rollout_func=episode_rollout(tasks, tokenizer, cfg.max_length, seed))
    if cfg.beta != 0:
        set_reference(trainer.model, reference_adapter)
    # 2. train (resuming from work_dir/checkpoint-* when a killed run left one)
    result = run_trainer(trainer, work_dir, cfg.grad_norm_limit)
    # 3. hand back the trained adapter only
    drop_reference(result["model"])
    result["tasks"] = len(dataset)
    return result


def prompt_key(prompt: list[dict]) -> str:
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in prompt], sort_keys=True)


def replayable_tasks(dataset):
    """(dataset of unique replayable prompts, {prompt key: (suite, difficulty, seed)}).

    The rollout function sees prompts only, so each prompt must name one task: of several tasks
    whose first observation reads the same, the first is kept (they are the same decision for
    the policy)."""
    from eval.suites import SUITES

    tasks: dict[str, tuple[str, int, int]] = {}
    keep = []
    for i, row in enumerate(dataset):
        m = _TASK.search(row["task_id"] or "")
        if row["suite"] not in SUITES or m is None:
            continue
        key = prompt_key(row["prompt"])
        if key not in tasks:
            tasks[key] = (row["suite"], int(m.group(1)), int(m.group(2)))
            keep.append(i)
    if not keep:
        raise ValueError(f"GRPO needs tasks of a built-in suite ({', '.join(sorted(SUITES))}) to replay; "
                         f"none among the {len(dataset)} prompts of this round")
    return dataset.select(keep), tasks


def environment_score(completions, env_score, **kwargs) -> list[float]:
    """The reward: each rollout's outcome score, handed over by the rollout function."""
    return [float(s) for s in env_score]


def episode_rollout(tasks: dict[str, tuple[str, int, int]], tokenizer, max_length: int, seed: int):
    """TRL `rollout_func`: plays one episode per prompt with the trainer's current model."""
    from eval.policy import HFPolicy

    def rollout(prompts: list[list[dict]], trainer) -> dict:
        from trl.models import unwrap_model_for_generation

        # The sampler repeats each prompt num_generations times: the k-th copy gets its own
        # random stream, so a group is k different episodes of one task, same on every rerun.
        jobs: dict[tuple[str, int, int], list[tuple[int, int]]] = defaultdict(list)  # (suite, d, k) -> (row, seed)
        copies: dict[str, int] = defaultdict(int)
        for row, prompt in enumerate(prompts):
            key = prompt_key(prompt)
            suite, difficulty, task_seed = tasks[key]
            jobs[(suite, difficulty, copies[key])].append((row, task_seed))
            copies[key] += 1
        trajs = [None] * len(prompts)
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            was_training = model.training
            model.eval()  # no dropout, and the KV cache the constrained scorer needs
            try:
                policy = HFPolicy(model, tokenizer, temperature=1.0, constrained=True, name="grpo")
                for (suite, difficulty, k), rows in sorted(jobs.items()):
                    _play(trajs, rows, suite, difficulty, policy, rng_seed=[seed, trainer.state.global_step, k])
            finally:
                model.train(was_training)
        return episode_tokens(trajs, tokenizer, max_length)

    return rollout


def _play(trajs, rows, suite_name, difficulty, policy, rng_seed) -> None:
    from eval.rollout import run_episodes
    from eval.suites import get_suite

    played = run_episodes(get_suite(suite_name), difficulty, [s for _, s in rows], policy,
                          batch_size=len(rows), rng_seed=_mix(rng_seed), progress=False)
    for (row, _), t in zip(rows, played):
        trajs[row] = t


def _mix(parts: list[int]) -> int:
    import hashlib

    return int(hashlib.sha256("-".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def _tools_of(t) -> list | None:
    tools = t.metadata.get("tools")
    return tools if isinstance(tools, list) and tools else None


def episode_tokens(trajs, tokenizer, max_length: int) -> dict:
    """Token ids of each episode split at the end of its prompt, the mask of the policy's own
    tokens (eval.models.assistant_mask), and the outcome score as an extra field."""
    from data_pipeline.builders import chat_message
    from eval.models import TemplateError, assistant_mask

    out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "env_mask": [], "env_score": []}
    for t in trajs:
        msgs = [chat_message(m) for m in t.messages]
        first = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        prompt = list(tokenizer.apply_chat_template(msgs[:first], tools=_tools_of(t), add_generation_prompt=True,
                                                    tokenize=True, return_dict=True)["input_ids"])
        ids, mask = assistant_mask(tokenizer, msgs, _tools_of(t))
        if ids[:len(prompt)] != prompt:
            raise TemplateError("GRPO rollouts need a prefix-stable chat template (the prompt must render as a "
                                "prefix of the whole episode); set model.chat_template to one")
        room = max(1, max_length - len(prompt))  # train.max_length bounds prompt + episode
        out["prompt_ids"].append(prompt)
        out["completion_ids"].append(ids[len(prompt):][:room])
        out["env_mask"].append(mask[len(prompt):][:room])
        out["env_score"].append(t.outcome.score)
    # No importance-sampling correction is needed: the rollout ran the model being trained.
    out["logprobs"] = None
    return out
