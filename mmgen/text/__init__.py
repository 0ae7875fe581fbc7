"""Text utilities: tokenizers (byte-level UTF-8 and open_clip's CLIP BPE)."""
from .tokenizers import (ByteTokenizer, ClipBPETokenizer, Tokenizer, get_tokenizer,
                         list_tokenizers, load_tokenizer)

__all__ = ["Tokenizer", "ByteTokenizer", "ClipBPETokenizer", "get_tokenizer", "load_tokenizer",
           "list_tokenizers"]
