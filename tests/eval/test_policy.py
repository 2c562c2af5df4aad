"""HFPolicy: cached incremental scoring equals a plain forward pass; tool-call suites log real tool
calls that the SFT builder trains on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_pipeline.builders import build_sft
from eval.policy import HFPolicy, load_checkpoint
from eval.rollout import Conversation, RandomPolicy, _action_message, _as_tool_call, run_episodes
from eval.suites import get_suite


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return load_checkpoint(tiny_model_dir)  # init_std 0.1, the default


def _reference_logprob(model, tokenizer, conv, action: str) -> float:
    """log p(action turn | chat) from one uncached forward pass over the whole text."""
    pol = HFPolicy(model, tokenizer)
    prompt = pol._prompt_ids(conv)
    full = prompt + pol._continuation_ids(conv, prompt, action)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    return float(sum(lp[t - 1, full[t]] for t in range(len(prompt), len(full))))


@pytest.mark.parametrize("suite_name", ["maze", "lookup"])
def test_cached_batched_scores_equal_a_plain_forward_pass(model_and_tokenizer, suite_name):
    model, tok = model_and_tokenizer
    suite = get_suite(suite_name)
    envs = [suite.make_env(suite.default_difficulty) for _ in range(3)]
    convs = []
    for env, seed in zip(envs, suite.heldout_seeds(3)):
        conv = Conversation([{"role": "system", "content": env.system_prompt}], tools=env.tools)
        conv.append({"role": "user", "content": env.reset(seed)})
        convs.append(conv)
    policy, rng = HFPolicy(model, tok), np.random.default_rng(0)
    for step in range(2):  # the second step reuses each episode's cache
        valid = [env.valid_actions() for env in envs]
        scores = policy.action_logprobs(convs, valid)
        for conv, acts, got in zip(convs, valid, scores):
            want = [_reference_logprob(model, tok, conv, a) for a in acts[:2]]
            np.testing.assert_allclose(got[:2], want, atol=2e-4)
        for env, conv, acts in zip(envs, convs, valid):
            action = _as_tool_call(acts[int(rng.integers(len(acts)))], env.tools)
            res = env.step(action)
            conv.append(_action_message(action, step))
            conv.append({"role": "tool", "content": res.observation, "tool_call_id": f"call_{step}",
                         "name": action["name"]} if isinstance(action, dict) else {"role": "user", "content": res.observation})


def _step_all(envs, convs, rng, step):
    for env, conv in zip(envs, convs):
        acts = env.valid_actions()
        action = _as_tool_call(acts[int(rng.integers(len(acts)))], env.tools)
        res = env.step(action)
        conv.append(_action_message(action, step))
        conv.append({"role": "user", "content": res.observation})
        if res.done:
            env.reset(int(rng.integers(10**6)))  # keep the chat going: only its length matters here


def _maze_chats(n: int):
    suite = get_suite("maze")
    envs = [suite.make_env(3) for _ in range(n)]
    convs = [Conversation([{"role": "system", "content": env.system_prompt},
                           {"role": "user", "content": env.reset(seed)}]) for env, seed in zip(envs, suite.heldout_seeds(n))]
    return envs, convs


def test_long_chats_keep_prompts_and_scores_of_a_full_rendering(model_and_tokenizer):
    """Many steps: the chats' common opening is encoded once, the KV cache outgrows its first
    buffer, new turns are rendered on their own (and some come from the remembered texts), yet every
    prompt is the full rendering's ids and the scores those of a plain forward pass."""
    model, tok = model_and_tokenizer
    envs, convs = _maze_chats(4)
    policy, rng = HFPolicy(model, tok), np.random.default_rng(1)
    for step in range(14):
        valid = [env.valid_actions() for env in envs]
        scores = policy.action_logprobs(convs, valid)
        assert [r.ids for r in policy._rendered.values()] == [policy._prompt_ids(c) for c in convs]
        if step in (0, 13):
            for conv, acts, got in zip(convs, valid, scores):
                np.testing.assert_allclose(got[:2], [_reference_logprob(model, tok, conv, a) for a in acts[:2]], atol=2e-4)
        _step_all(envs, convs, rng, step)
    assert policy._groups[0].shared_prefix >= 20  # the system prompt was encoded once for the 4 rows
    assert policy.tail_rendering and policy._tails  # the fast path held, and was used
    assert policy._groups[0].cache.layers[0]._kbuf.shape[-2] > 64  # it grew in place past its first size


def test_a_template_that_numbers_its_turns_turns_tail_rendering_off(model_and_tokenizer):
    import copy

    model, tok = model_and_tokenizer
    tok = copy.deepcopy(tok)
    tok.chat_template = ("{%- for m in messages %}<|{{ m['role'] }}|>{{ loop.index }}. {{ m['content'] }}<|end|>"
                         "{%- endfor %}{%- if add_generation_prompt %}<|assistant|>{%- endif %}")
    envs, convs = _maze_chats(3)
    policy, rng = HFPolicy(model, tok), np.random.default_rng(2)
    for step in range(4):
        policy.action_logprobs(convs, [env.valid_actions() for env in envs])
        assert [r.text for r in policy._rendered.values()] == [
            tok.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in convs]
        _step_all(envs, convs, rng, step)
    assert not policy.tail_rendering


def test_tool_call_actions_are_scored_as_rendered_tool_calls(model_and_tokenizer):
    model, tok = model_and_tokenizer
    env = get_suite("lookup").make_env(1)
    conv = Conversation([{"role": "user", "content": env.reset(1)}], tools=env.tools)
    policy = HFPolicy(model, tok)
    prompt = policy._prompt_ids(conv)
    assert "<|tools|>" in tok.decode(prompt)
    text = tok.decode(policy._continuation_ids(conv, prompt, env.valid_actions()[0]))
    assert text.startswith("<|tool_call|>{\"name\": \"lookup\"") and text.endswith("<|/tool_call|><|end|>")


def test_lookup_episodes_log_tool_calls_that_sft_trains_on(model_and_tokenizer):
    model, tok = model_and_tokenizer
    suite = get_suite("lookup")
    for policy in (RandomPolicy(), HFPolicy(model, tok)):
        trajs = run_episodes(suite, 1, suite.train_seeds(6), policy, rng_seed=1, progress=False)
        for t in trajs:
            for m, nxt in zip(t.messages, t.messages[1:]):
                if m.role == "assistant":
                    assert len(m.tool_calls) == 1 and m.content == ""
                    assert nxt.role == "tool" and nxt.tool_call_id == m.tool_calls[0].id
    ds = build_sft(trajs, success_only=False)
    row = ds[0]
    assert row["tools"] and any(m["tool_calls"] for m in row["messages"] if m["role"] == "assistant")
    rendered = tok.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
    assert "<|tool_call|>" in rendered and "<|tool|>" in rendered


def test_cache_groups_stay_within_forward_batch_and_batching_keeps_scores(model_and_tokenizer):
    model, tok = model_and_tokenizer
    policy = HFPolicy(model, tok, forward_batch=3)
    suite = get_suite("maze")
    a = run_episodes(suite, 1, suite.heldout_seeds(7), policy, batch_size=7, rng_seed=5, progress=False)
    assert all(len(g.conversations) <= 3 for g in policy._groups)
    b = run_episodes(suite, 1, suite.heldout_seeds(7), HFPolicy(model, tok), batch_size=2, rng_seed=5, progress=False)
    assert [t.score for t in a] == [t.score for t in b]
