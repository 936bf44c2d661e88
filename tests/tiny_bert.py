"""A tiny randomly initialised BERT saved as a local model directory: the encoder of every test (no download)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
LETTERS = tuple(chr(c) for c in range(ord("a"), ord("z") + 1))


def write_tiny_bert(
    directory: Path, *, tokens: Sequence[str], word_pieces: Sequence[str], max_position_embeddings: int
) -> Path:
    """A 2-layer, 32-wide BERT with the vocabulary ``tokens`` plus ``##piece`` continuations, seeded (torch seed 0).

    Returns:
        ``directory``, loadable with ``transformers.AutoModel`` / ``AutoTokenizer``.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *tokens, *(f"##{piece}" for piece in word_pieces)]))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory
