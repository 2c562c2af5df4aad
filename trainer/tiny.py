"""The tiny model factory: a byte-level BPE tokenizer built deterministically from a fixed corpus,
with a chat template that marks assistant turns for assistant-only loss and renders tool calls,
and a tiny Llama built from a config. Everything here runs offline in seconds.

`python -m trainer.tiny` rebuilds the shipped tokenizer in trainer/assets/tiny-tokenizer/.
"""
from __future__ import annotations

from pathlib import Path

TOKENIZER_DIR = Path(__file__).parent / "assets" / "tiny-tokenizer"
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>",
                  "<|tool_call|>", "<|/tool_call|>", "<|tools|>"]
VOCAB_SIZE = 512

# No whitespace between turns: the prompt rendered with add_generation_prompt is then an exact
# prefix of the conversation rendered with the assistant's answer, so what the policy scores at
# decoding time is exactly what SFT trained on.
CHAT_TEMPLATE = (
    "{%- if tools %}<|tools|>{{ tools | tojson }}<|end|>{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}<|assistant|>{% generation %}"
    "{{ message['content'] if message['content'] is string else '' }}"
    "{%- if message.get('tool_calls') %}{%- for tc in message['tool_calls'] %}"
    "{%- set f = tc['function'] if tc.get('function') else tc %}"
    "<|tool_call|>{\"name\": {{ f['name'] | tojson }}, \"arguments\": {{ f['arguments'] | tojson if f['arguments'] is mapping else f['arguments'] }}}<|/tool_call|>"
    "{%- endfor %}{%- endif %}"
    "<|end|>{% endgeneration %}"
    "{%- else %}<|{{ message['role'] }}|>{{ message['content'] if message['content'] is string else '' }}<|end|>"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{%- endif %}"
)


def _corpus() -> list[str]:
    """Fixed training text for the BPE merges: chat/tool syntax, numbers, environment words."""
    words = ("goal open up down left right here reached the invalid move answer with one you are in a maze "
             "reach tool call name arguments result error success score task step value weight item total "
             "swap set test pass fail rule guess yes no true false lookup query table row column sum "
             "add multiply rewrite expression normal form program line disk peg from to capacity tour city "
             "def return if else for while import print self None True False").split()
    lines = [" ".join(words), " ".join(reversed(words))]
    lines += words * 4  # each word also at the start of a turn (no leading space): single-token actions
    for n in range(200):
        lines.append(f"goal: {n % 13} down {n % 7} right. open: up down left right {n} {n * 7 % 101}")
    lines.append('{"name": "lookup", "arguments": {"key": "value", "n": 3}}')
    lines.append("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?()[]{}<>=+-*/_'\"#@$%&|\\~`^")
    return lines * 3


def build_tokenizer():
    """Train the byte-level BPE deterministically and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>",
                                 additional_special_tokens=SPECIAL_TOKENS[2:])
    hf.chat_template = CHAT_TEMPLATE
    hf.padding_side = "right"
    return hf


def load_tokenizer(path: str | Path = TOKENIZER_DIR):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def build_model(tokenizer, hidden_size=128, layers=2, heads=4, intermediate_size=256, init_seed=0,
                initializer_range=0.02):
    """A tiny Llama with weights drawn from `init_seed`: same arguments, same bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=8192, tie_word_embeddings=True, initializer_range=initializer_range,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    torch.manual_seed(init_seed)
    return LlamaForCausalLM(config)


def materialize_tiny(dest: str | Path, hidden_size=128, layers=2, heads=4, intermediate_size=256,
                     init_seed=0, init_std=0.1) -> Path:
    """Write the tiny base model + tokenizer to `dest` once (a model folder any loader can open)."""
    dest = Path(dest)
    if (dest / "config.json").exists():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    tokenizer = load_tokenizer()
    model = build_model(tokenizer, hidden_size, layers, heads, intermediate_size, init_seed, init_std)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(dest)
    return dest


if __name__ == "__main__":
    build_tokenizer().save_pretrained(TOKENIZER_DIR)
    print(f"wrote {TOKENIZER_DIR}")
