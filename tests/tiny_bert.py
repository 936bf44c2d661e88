"""Tiny randomly initialised encoders saved as local model directories: the encoders of every test (no download).

BERT is the default family; RoBERTa (byte-level BPE, positions that start after the padding id) and DistilBERT
(no token types, ``q_lin``/``v_lin`` projections, ``transformer.layer``) check that nothing assumes BERT.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
LETTERS = tuple(chr(c) for c in range(ord("a"), ord("z") + 1))


def _word_piece_tokenizer(directory: Path, tokens: Sequence[str], word_pieces: Sequence[str], tokenizer_class: type):  # noqa: ANN202
    directory.mkdir(parents=True, exist_ok=True)
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *tokens, *(f"##{piece}" for piece in word_pieces)]))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = tokenizer_class(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def write_tiny_bert(
    directory: Path, *, tokens: Sequence[str], word_pieces: Sequence[str], max_position_embeddings: int
) -> Path:
    """A 2-layer, 32-wide BERT with the vocabulary ``tokens`` plus ``##piece`` continuations, seeded (torch seed 0).

    Returns:
        ``directory``, loadable with ``transformers.AutoModel`` / ``AutoTokenizer``.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tokenizer = _word_piece_tokenizer(directory, tokens, word_pieces, BertTokenizerFast)
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


def write_tiny_distilbert(
    directory: Path, *, tokens: Sequence[str], word_pieces: Sequence[str], max_position_embeddings: int
) -> Path:
    """A 2-layer, 32-wide DistilBERT with the same word-piece vocabulary as :func:`write_tiny_bert` (seed 0)."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    tokenizer = _word_piece_tokenizer(directory, tokens, word_pieces, DistilBertTokenizerFast)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=max_position_embeddings,
    )
    torch.manual_seed(0)
    DistilBertModel(config).save_pretrained(directory)
    return directory


def write_tiny_roberta(directory: Path, *, texts: Sequence[str], max_position_embeddings: int) -> Path:
    """A 2-layer, 32-wide RoBERTa whose byte-level BPE tokenizer is trained on ``texts`` (seed 0).

    Like every RoBERTa, its positions start after the padding id, so it embeds ``max_position_embeddings - 2``
    tokens at most; byte-level BPE has no unknown token.
    """
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(texts),
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe.save_model(str(directory))
    tokenizer = RobertaTokenizerFast(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"))
    tokenizer.save_pretrained(directory)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(directory)
    return directory
