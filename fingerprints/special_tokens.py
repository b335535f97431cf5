"""Special tokens that say nothing about lineage because every family uses them.

Its own module because both the fingerprint record (model.py, which names a tokenizer's rare
special tokens) and the tokenizer parsers use it, and tokenizer.py builds on model.py.
"""

from __future__ import annotations

import re

# Special tokens every family uses; sharing them says nothing. Numbered families of reserved
# tokens (Llama-3's 250 reserved tokens, BERT's [unusedN], T5's <extra_id_N>) count as common too.
COMMON_SPECIAL_TOKENS = frozenset(
    {
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>", "<unk>", "<pad>", "<mask>",
        "<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
        "<|end_header_id|>", "<|im_start|>", "<|im_end|>", "<bos>", "<eos>", "<start_of_turn>",
        "<end_of_turn>", "<|padding|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>",
        "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|eom_id|>",
        "<|python_tag|>", "<|finetune_right_pad_id|>", "[INST]", "[/INST]",
    }
)
COMMON_SPECIAL_PATTERNS = re.compile(
    r"^(<\|reserved_special_token_\d+\|>|\[unused\d+\]|<extra_id_\d+>|<0x[0-9A-Fa-f]{2}>|<unused\d+>|"
    r"<\|extra_\d+\|>|<\|reserved_\d+\|>|<\|control_\d+\|>|<pad_\d+>)$"
)


def is_common_special_token(token: str) -> bool:
    return token in COMMON_SPECIAL_TOKENS or bool(COMMON_SPECIAL_PATTERNS.match(token))
