"""Text: tokenizers shared by every task that reads or writes text (classification, translation…)."""

from dlforge.text.tokenizer import (
    PAD_ID,
    TOKENIZER_FILE,
    UNK_ID,
    TokenizerConfig,
    TokenizerError,
    char_limit,
    decode,
    encode,
    padded_ids,
    tokenizer_from_bytes,
    tokenizer_to_bytes,
    train_tokenizer,
    unknown_parameters,
    unknown_share,
    unknown_warnings,
)

__all__ = ["PAD_ID", "TOKENIZER_FILE", "UNK_ID", "TokenizerConfig", "TokenizerError", "char_limit", "decode", "encode",
           "padded_ids", "tokenizer_from_bytes", "tokenizer_to_bytes", "train_tokenizer", "unknown_parameters",
           "unknown_share", "unknown_warnings"]
