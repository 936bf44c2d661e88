"""Shared by churn_evaluate and churn_backtest: the text models' options (not a command: the name starts with _)."""

from __future__ import annotations

from argparse import BooleanOptionalAction
from collections.abc import Mapping

from django.core.management.base import CommandError, CommandParser


def add_text_model_arguments(parser: CommandParser) -> None:
    """The text models' options, the same in both commands."""
    parser.add_argument(
        "--encoder-mode",
        choices=["auto", "frozen", "top-k", "lora", "full"],
        default="auto",
        help="text models: frozen encoder or a fine-tuning mode (auto: frozen without a GPU, lora with one)",
    )
    parser.add_argument("--encoder", default=None, help="encoder directory or cached hub id (default: CHURN_ENCODER)")
    parser.add_argument(
        "--encoder-quantize",
        choices=["none", "int8"],
        default=None,
        help="frozen encoder's linear layers in int8 on the CPU (default: CHURN_ENCODER_QUANTIZE, else none)",
    )
    parser.add_argument("--inner-folds", type=int, default=5, help="out-of-fold stacking folds of the hybrid")
    parser.add_argument("--embedding-dims", type=int, default=0, help="PCA dims of frozen vectors in the hybrid")
    add_nested_stacking_argument(parser)


def add_nested_stacking_argument(parser: CommandParser) -> None:
    """``--nested-stacking`` / ``--no-nested-stacking`` (default None: on with 3 or more inner folds)."""
    parser.add_argument(
        "--nested-stacking",
        action=BooleanOptionalAction,
        default=None,
        help="cross-fit the hybrid's second level too, so no out-of-fold score depends on its own row's label "
        "(inner-folds x (inner-folds - 1) / 2 more text fits; default: on with 3 or more inner folds)",
    )


TEXT_MODEL_NAMES = frozenset({"tfidf", "transformer", "hybrid", "hybrid_no_messages", "hybrid_no_text"})
# The models that read the encoder (tfidf reads characters, hybrid_no_text only the features).
ENCODER_MODEL_NAMES = frozenset({"transformer", "hybrid", "hybrid_no_messages"})


def register_text_models_from_options(options: Mapping[str, object], models: list[str]) -> str | None:
    """Register the text models with the command's encoder options; returns a note for the report (None when no
    requested model reads the encoder). A missing encoder is a CommandError before anything runs."""
    from django.conf import settings

    from ml.text_evaluation import TextEvaluationOptions, register_text_models, resolve_encoder_mode

    if int(options["inner_folds"]) < 2:  # type: ignore[arg-type]
        raise CommandError("--inner-folds must be at least 2")
    if int(options["embedding_dims"]) < 0:  # type: ignore[arg-type]
        raise CommandError("--embedding-dims must not be negative")
    if options.get("nested_stacking") is True and int(options["inner_folds"]) < 3:  # type: ignore[arg-type]
        raise CommandError("--nested-stacking needs --inner-folds of at least 3")
    from ml.encoder import EncoderNotFoundError, resolve_encoder_path

    encoder = str(options["encoder"] or settings.CHURN_ENCODER or "") or None
    uses_encoder = bool(ENCODER_MODEL_NAMES.intersection(models))
    if uses_encoder:
        try:  # before any model runs, not after the others have taken their minutes
            resolve_encoder_path(encoder)
        except EncoderNotFoundError as exc:
            needing = ", ".join(sorted(ENCODER_MODEL_NAMES & set(models)))
            raise CommandError(f"{exc} (the models {needing} need it)") from exc
    mode = resolve_encoder_mode(str(options["encoder_mode"]))
    quantize = options.get("encoder_quantize")
    if quantize is None:  # the setting applies where it can: to the frozen encoder
        quantize = settings.CHURN_ENCODER_QUANTIZE if mode == "frozen" else "none"
    elif quantize != "none" and mode != "frozen":
        raise CommandError(
            f"--encoder-quantize {quantize} needs the frozen encoder (--encoder-mode frozen), not {mode}"
        )
    result = register_text_models(
        TextEvaluationOptions(
            encoder_mode=str(options["encoder_mode"]),
            encoder=encoder,
            cache_dir=str(settings.CHURN_CACHE_DIR),
            inner_folds=int(options["inner_folds"]),  # type: ignore[arg-type]
            embedding_dims=int(options["embedding_dims"]),  # type: ignore[arg-type]
            nested_stacking=options.get("nested_stacking"),  # type: ignore[arg-type]
            quantize=str(quantize),
        )
    )
    return result["note"] if uses_encoder else None


def encoder_tokenizer_from_options(options: Mapping[str, object], models: list[str]) -> object | None:
    """The tokenizer of the encoder the requested models read (None when none reads one): the evaluation checks
    each text against the token budget with it, as a trained churn model does."""
    from django.conf import settings

    from ml.encoder import load_tokenizer

    if not ENCODER_MODEL_NAMES.intersection(models):
        return None
    return load_tokenizer(str(options["encoder"] or settings.CHURN_ENCODER or "") or None)
