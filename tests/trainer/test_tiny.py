"""The tiny model factory: a deterministic tokenizer with a chat template fit for assistant-only
loss and tool calls, and a tiny Llama whose weights depend only on its seed."""
import json

import torch

from trainer import tiny


def test_shipped_tokenizer_is_what_the_builder_makes(tmp_path):
    tiny.build_tokenizer().save_pretrained(tmp_path)
    shipped = json.loads((tiny.TOKENIZER_DIR / "tokenizer.json").read_text())
    rebuilt = json.loads((tmp_path / "tokenizer.json").read_text())
    assert rebuilt["model"]["merges"] == shipped["model"]["merges"]
    assert rebuilt["model"]["vocab"] == shipped["model"]["vocab"]


def test_chat_template_marks_only_assistant_turns_and_is_prefix_stable():
    tok = tiny.load_tokenizer()
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "goal: 2 down. open: down left"},
            {"role": "assistant", "content": "down"}, {"role": "user", "content": "goal: 1 down. open: down"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "lookup", "arguments": {"name": "ann"}}}]}]
    out = tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m])
    assert marked == 'down<|end|><|tool_call|>{"name": "lookup", "arguments": {"name": "ann"}}<|/tool_call|><|end|>'
    prompt = tok.apply_chat_template(conv[:2], tokenize=False, add_generation_prompt=True)
    assert tok.apply_chat_template(conv[:3], tokenize=False).startswith(prompt)
    # the maze's actions are single tokens at the start of an assistant turn
    assert all(len(tok.tokenize(a)) == 1 for a in ("up", "down", "left", "right"))


def test_tiny_model_depends_only_on_its_seed(tmp_path):
    tok = tiny.load_tokenizer()
    a, b = tiny.build_model(tok, init_seed=3), tiny.build_model(tok, init_seed=3)
    c = tiny.build_model(tok, init_seed=4)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    path = tiny.materialize_tiny(tmp_path / "base", init_seed=3)
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()
    assert tiny.materialize_tiny(path) == path  # built once, then reused as is
