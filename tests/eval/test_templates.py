"""The assistant mask (eval.models.assistant_mask) on the tiny model's tokenizer: the mask from
growing prefixes equals the template's own generation marks, harness-written turns carry no loss,
and SFT rows carry that mask to TRL's labels."""
from __future__ import annotations

import re

import pytest

from eval.models import TemplateError, assistant_mask
from trainer.tiny import load_tokenizer

CONV = [
    {"role": "system", "content": "You are in a maze."},
    {"role": "user", "content": "goal: 1 down. open: down left"},
    {"role": "assistant", "content": "down"},
    {"role": "user", "content": "goal: 1 right. open: right"},
    {"role": "assistant", "content": "right"},
]


def unmarked(tok):
    tok.chat_template = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", tok.chat_template)
    return tok


def test_prefix_mask_equals_the_generation_marks():
    marked_ids, marked_mask = assistant_mask(load_tokenizer(), CONV)
    ids, mask = assistant_mask(unmarked(load_tokenizer()), CONV)
    assert (ids, mask) == (marked_ids, marked_mask)
    tok = load_tokenizer()
    spans = tok.decode([i for i, b in zip(ids, mask) if b])
    assert spans == "down<|end|>right<|end|>"


@pytest.mark.parametrize("marked", [True, False])
def test_context_turns_carry_no_loss(marked):
    tok = load_tokenizer() if marked else unmarked(load_tokenizer())
    conv = [dict(m) for m in CONV]
    conv[2]["context"] = True  # written into the sample by the harness, not generated
    ids, mask = assistant_mask(tok, conv)
    assert tok.decode([i for i, b in zip(ids, mask) if b]) == "right<|end|>"
    assert ids == assistant_mask(tok, CONV)[0]  # the same tokens, only the mask differs


def test_unstable_template_is_a_clear_error():
    tok = load_tokenizer()
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ messages|length }}{{ m['content'] }}<|end|>"
                         "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    with pytest.raises(TemplateError, match="not prefix-stable.*model.chat_template"):
        assistant_mask(tok, CONV)


def test_sft_rows_mask_context_turns_in_labels():
    from datasets import Dataset

    from data_pipeline.builders import SFT_MESSAGE  # noqa: F401  (the column carries `context`)
    from trainer.methods.sft import tokenize_conversations

    conv = [dict(m, context=(i == 2)) for i, m in enumerate(CONV)]
    rows = tokenize_conversations(Dataset.from_list([{"messages": conv}]), load_tokenizer())
    tok = load_tokenizer()
    row = rows[0]
    assert tok.decode([i for i, b in zip(row["input_ids"], row["assistant_masks"]) if b]) == "right<|end|>"


def test_sft_builder_marks_harness_written_turns():
    from data_pipeline.builders import build_sft
    from eval.rollout import RandomPolicy, run_episodes
    from eval.suites import get_suite

    t = run_episodes(get_suite("maze"), 1, [0], RandomPolicy(), rng_seed=0, progress=False)[0]
    first_action = next(i for i, m in enumerate(t.messages) if m.role == "assistant")
    t.metadata["context_messages"] = [first_action]
    row = build_sft([t], success_only=False).to_list()[0]
    assert [m["context"] for m in row["messages"]] == [i == first_action for i in range(len(t.messages))]


def test_template_error_is_one_line_from_the_cli(tmp_path, tiny_model_dir, capsys):
    """A round whose template cannot be trained on stops with one line, not a traceback."""
    from trainer.cli import main as flywheel

    base = tiny_model_dir
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}<|{{ m['role'] }}|>{{ messages|length }}{{ m['content'] }}<|end|>"
                        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"experiment: t\nrun_dir: {tmp_path / 'run'}\nmodel: {{name_or_path: {base}, chat_template: t.jinja}}\n"
                      "collect: {suites: [{name: maze, difficulty: 1, episodes: 8}], policy: {batch_size: 8}}\n"
                      "data: {success_only: false}\n"
                      "eval: {suites: [{name: maze, difficulty: 1, episodes: 4}], policy: {batch_size: 4}}\n"
                      "train: {rounds: 1, max_steps: 1, batch_size: 2}\ntracking: {wandb: {mode: disabled}}\n")
    assert flywheel(["run", str(recipe), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not prefix-stable" in err and "model.chat_template" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
