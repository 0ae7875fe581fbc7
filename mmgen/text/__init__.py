"""Text utilities: tokenizers (byte-level UTF-8 and open_clip's CLIP BPE), the caption
tokenizer every model uses and vocabularies pruned to a caption corpus."""
from .tokenizers import (ByteTokenizer, ClipBPETokenizer, Tokenizer, get_tokenizer,
                         list_tokenizers, load_tokenizer)

from .captions import CaptionTokenizer, caption_corpus, resolve_vocabulary, tokenizer_from_captions  # noqa: E402

__all__ = ["CaptionTokenizer", "caption_corpus", "resolve_vocabulary", "tokenizer_from_captions", "Tokenizer", "ByteTokenizer", "ClipBPETokenizer", "get_tokenizer", "load_tokenizer",
           "list_tokenizers"]
